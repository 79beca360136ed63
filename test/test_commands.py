"""The spoken-command interpreter (evf_sam_ros.commands): the corpus in test/data/spoken_commands.yaml, one
test per transcript, plus the edge cases the corpus cannot express (delimiter, confidence, invisible chars)."""
import pathlib

import pytest
import yaml

from evf_sam_ros.commands import ACTIONS, INTENTS, Command, interpret

CORPUS_PATH = pathlib.Path(__file__).parent / 'data' / 'spoken_commands.yaml'
CORPUS = yaml.safe_load(CORPUS_PATH.read_text())


def test_corpus_is_large_and_well_formed():
    assert len(CORPUS) >= 150
    for entry in CORPUS:
        assert set(entry) == {'say', 'action', 'targets', 'intent'}, entry
        assert entry['action'] in ACTIONS and entry['intent'] in INTENTS, entry
        assert (entry['action'] in ('set', 'add')) == bool(entry['targets']), entry


@pytest.mark.parametrize('entry', CORPUS, ids=[f'{i:03d}:{e["say"][:40]}' for i, e in enumerate(CORPUS)])
def test_corpus_entry(entry):
    command = interpret(entry['say'])
    got = (command.action, list(command.targets), command.intent)
    want = (entry['action'], entry['targets'], entry['intent'])
    assert got == want, (f'transcript {entry["say"]!r}\n  expected action/targets/intent {want}\n'
                         f'  interpreted as {got}\n  reason: {command.reason}')
    assert command.raw == entry['say']
    assert command.reason


@pytest.mark.parametrize('word', ['stop', 'cancel', 'never mind', 'nevermind', 'nothing', 'forget it', 'clear',
                                  'reset', "that's all", 'stop it', 'Stop.', 'cancel that please', 'NOTHING!'])
@pytest.mark.parametrize('frame', ['{}', 'um {}', '{} please', 'can you {}', '{}, thanks', '  {}  '])
def test_clear_words_never_become_targets(word, frame):
    command = interpret(frame.format(word))
    assert command.action == 'clear' and command.targets == (), command


def test_delimiter_wins_over_and_splitting():
    assert interpret('the red cube and the blue ball; the ring').targets == \
        ('the red cube and the blue ball', 'the ring')
    assert interpret('pick up the red cube | grab the ball', delimiter='|').targets == ('the red cube', 'the ball')
    # Without the delimiter in the text, the usual rules apply; an empty delimiter disables it.
    assert interpret('the red cube; the ball', delimiter='').targets == ('the red cube the ball',)


def test_semantic_prefix_passes_untouched():
    command = interpret('[semantic] Stop Sign')
    assert command == Command('set', ('[semantic] Stop Sign',), '', '[semantic] Stop Sign', command.reason)
    assert interpret('[semantic] person; [semantic] car').targets == ('[semantic] person', '[semantic] car')


def test_confidence_below_minimum_is_ignored():
    assert interpret('the red cube', confidence=0.3, min_confidence=0.5).action == 'ignore'
    assert 'confidence' in interpret('stop', confidence=0.1, min_confidence=0.5).reason
    assert interpret('the red cube', confidence=0.6, min_confidence=0.5).targets == ('the red cube',)
    assert interpret('the red cube', confidence=None, min_confidence=0.9).action == 'set'


@pytest.mark.parametrize('text', ['\u200b', '\u200b\u200c\u200d\ufeff', '\x00\x07', '\t\n\r', '\u2060 \u00a0'])
def test_invisible_or_control_characters_only_are_ignored(text):
    command = interpret(text)
    assert command.action == 'ignore' and command.raw == text and command.reason


def test_invisible_characters_inside_words_are_dropped():
    assert interpret('the re\u200bd cu\u00adbe').targets == ('the red cube',)
    assert interpret('\ufeffPick up the red cube\u2019s lid').targets == ("the red cube's lid",)


def test_non_string_input_is_ignored():
    assert interpret(None).action == 'ignore'  # type: ignore[arg-type]


def test_reasons_say_what_was_understood():
    assert interpret('grab the red cube and the blue ball').reason == \
        "set 2 targets: 'the red cube', 'the blue ball' (intent pick)"
    assert 'not supported' in interpret('forget the red cube').reason
    assert 'without an object' in interpret('pick up').reason


def test_command_is_frozen():
    command = interpret('the cube')
    with pytest.raises(AttributeError):
        command.action = 'clear'  # type: ignore[misc]
