"""Voice test: espeak-ng speaks synthetic-scene commands, pocketsphinx transcribes them with the scene grammar,
evf_sam_ros.commands interprets the transcript. Deterministic: the same audio gives the same transcript."""
import pytest

from evf_sam_ros import speech
from evf_sam_ros.commands import interpret

pytestmark = [
    pytest.mark.slow,
    pytest.mark.voice,
    pytest.mark.skipif(not speech.espeak_available(), reason='espeak-ng is not installed (apt-get install espeak-ng)'),
    pytest.mark.skipif(not speech.pocketsphinx_available(),
                       reason='pocketsphinx is not installed (pip install -r requirements/test.txt)'),
]

# (spoken command, expected action, expected targets)
SPOKEN = [
    ('pick up the red cube', 'set', ('the red cube',)),
    ('stop', 'clear', ()),
    ('the green ball and the blue cylinder', 'set', ('the green ball', 'the blue cylinder')),
    ('can you find the yellow ring please', 'set', ('the yellow ring',)),
    ('never mind', 'clear', ()),
    ('where is the big purple pyramid', 'set', ('the big purple pyramid',)),
    ('also the white box', 'add', ('the white box',)),
    ('cancel', 'clear', ()),
    ('the ball on the left', 'set', ('the ball on the left',)),
    ('show me the cube next to the red ball', 'set', ('the cube next to the red ball',)),
    ('grab the small orange can', 'set', ('the small orange can',)),
    ('nothing', 'clear', ()),
    ('point to the leftmost sphere', 'set', ('the leftmost sphere',)),
    ('go to the blue block', 'set', ('the blue block',)),
    ('forget it', 'clear', ()),
]
# Measured with espeak-ng 1.51 (en-us, 160 wpm) and pocketsphinx 5.1.1: these come out wrong from the STT
# (the interpreter is right on what it hears). A change here is a change of the engines or the grammar.
KNOWN_STT_MISSES = {
    'where is the big purple pyramid': 'where is the one',
    'show me the cube next to the red ball': 'show me the cube near the red ball',
    'grab the small orange can': 'grab the small ring',
}


@pytest.fixture(scope='module')
def transcripts(tmp_path_factory):
    grammar = speech.scene_grammar()
    out = {}
    for text, *_ in SPOKEN:
        wav = tmp_path_factory.mktemp('voice') / 'command.wav'
        speech.speak(text, wav)
        out[text] = (speech.transcribe(wav, grammar), speech.transcribe(wav, grammar), wav)
    return out


def test_grammar_words_are_all_pronounceable():
    assert speech.missing_from_dictionary(speech.grammar_words(speech.scene_grammar())) == []


def test_audio_is_16khz_mono_and_deterministic(tmp_path):
    import wave
    a = speech.speak('pick up the red cube', tmp_path / 'a.wav')
    speech.speak('pick up the red cube', tmp_path / 'b.wav')
    with wave.open(a) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        assert 0.8 < f.getnframes() / 16000 < 4
    assert (tmp_path / 'a.wav').read_bytes() == (tmp_path / 'b.wav').read_bytes()


def test_transcripts_are_deterministic(transcripts):
    for text, (first, second, _) in transcripts.items():
        assert first == second, f'{text!r}: {first!r} then {second!r}'


@pytest.mark.parametrize('text,action,targets', SPOKEN, ids=[s[0] for s in SPOKEN])
def test_spoken_command_gives_the_expected_targets(transcripts, text, action, targets):
    heard = transcripts[text][0]
    command = interpret(heard)
    print(f'{text!r} -> heard {heard!r} -> {command.action} {command.targets}')
    if text in KNOWN_STT_MISSES:
        assert heard == KNOWN_STT_MISSES[text], f'the known STT miss changed: {text!r} now heard as {heard!r}'
        assert command.action != 'clear' or action == 'clear'
        return
    assert heard == text, f'speech-to-text: said {text!r}, heard {heard!r}'
    assert (command.action, command.targets) == (action, targets), command


def test_most_spoken_commands_come_out_right(transcripts):
    right = [text for text, action, targets in SPOKEN
             if (interpret(transcripts[text][0]).action, interpret(transcripts[text][0]).targets) == (action, targets)]
    assert len(right) >= 12, f'{len(right)}/{len(SPOKEN)} spoken commands interpreted right'


def test_grammar_beats_free_decoding(transcripts):
    """The issue's measurement: free decoding of espeak speech is mostly wrong, the grammar mostly right."""
    sample = [text for text, *_ in SPOKEN[:6]]
    free_right = sum(speech.transcribe(transcripts[text][2]) == text for text in sample)
    grammar_right = sum(transcripts[text][0] == text for text in sample)
    assert grammar_right > free_right and free_right <= len(sample) // 2, (grammar_right, free_right)
