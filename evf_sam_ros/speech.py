"""A real speech-to-text engine standing in for a robot's (ROS-free; for tests and the voice demo).

``espeak-ng`` (Debian package) speaks a command with a fixed voice, rate and pitch, so the audio is the same on
every run; ``pocketsphinx`` (PyPI; its wheel ships an English acoustic model and dictionary) transcribes it.
Free decoding of espeak's voice with the general English language model is mostly wrong; decoding with a JSGF
grammar of the synthetic scenes' words (:func:`scene_grammar`) plus the command words is mostly right.

    speak('pick up the red cube', 'cmd.wav')            # 16 kHz mono 16-bit WAV
    transcribe('cmd.wav', grammar=scene_grammar())      # -> 'pick up the red cube'

Demo: ``python -m evf_sam_ros.speech "pick up the red cube" "stop"`` prints what is heard and understood.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

__all__ = ['SAMPLE_RATE', 'VOICE', 'RATE_WPM', 'PITCH', 'espeak_available', 'pocketsphinx_available', 'speak',
           'transcribe', 'scene_grammar', 'grammar_words', 'missing_from_dictionary']

SAMPLE_RATE = 16000        # what pocketsphinx's en-us acoustic model expects
VOICE = 'en-us'
RATE_WPM = 160
PITCH = 50

# Command words around the scene's descriptions (cf. evf_sam_ros.commands, which understands many more).
POLITENESS = ('please', 'can you', 'could you')
VERBS = ('pick up', 'grab', 'find', 'show me', 'where is', 'look at', 'point to', 'go to', 'bring me')
CLEAR = ('stop', 'cancel', 'never mind', 'nothing', 'forget it', 'clear', 'reset')
CLOSERS = ('please', 'thanks', 'thank you')
# Grammar words the shipped CMU dictionary lacks (ARPAbet phones, as in the dictionary).
EXTRA_PRONUNCIATIONS = {'leftmost': 'L EH F T M OW S T', 'rightmost': 'R AY T M OW S T'}


def espeak_available() -> bool:
    return shutil.which('espeak-ng') is not None


def pocketsphinx_available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def speak(text: str, wav_path: str | os.PathLike) -> str:
    """Speak ``text`` with espeak-ng into a 16 kHz mono 16-bit WAV file; returns the path."""
    if not espeak_available():
        raise RuntimeError('espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)')
    wav_path = os.fspath(wav_path)
    with tempfile.TemporaryDirectory() as tmp:
        native = os.path.join(tmp, 'native.wav')
        subprocess.run(['espeak-ng', '-v', VOICE, '-s', str(RATE_WPM), '-p', str(PITCH), '-a', '100', '-w', native,
                        '--', text], check=True, capture_output=True)
        samples, rate = _read_wav(native)
    _write_wav(wav_path, _resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
    return wav_path


def transcribe(wav_path: str | os.PathLike, grammar: str | None = None) -> str:
    """Transcript of a 16 kHz mono WAV: decoded with the JSGF ``grammar`` if given, else free (general LM)."""
    samples, rate = _read_wav(os.fspath(wav_path))
    if rate != SAMPLE_RATE:
        samples = _resample(samples, rate, SAMPLE_RATE)
    decoder, initial_cmn = _decoder(grammar)
    decoder.set_cmn(initial_cmn)   # cepstral mean adapts across utterances: restore it for determinism
    decoder.start_utt()
    decoder.process_raw(samples.astype('<i2').tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ''


@functools.lru_cache(maxsize=4)
def _decoder(grammar: str | None):
    from pocketsphinx import Decoder
    # Wide beams and no lattice best-path pass: with the defaults a grammar search often ends in a
    # truncated or empty hypothesis on espeak's voice (measured: 10/15 -> 12/15 of the test commands).
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel='FATAL', beam=1e-80, wbeam=1e-60, pbeam=1e-80,
                      bestpath=False)
    for word, phones in EXTRA_PRONUNCIATIONS.items():
        if decoder.lookup_word(word) is None:
            decoder.add_word(word, phones, True)
    if grammar is not None:
        decoder.add_jsgf_string('scene', grammar)
        decoder.activate_search('scene')
    return decoder, decoder.get_cmn()


def _alternatives(options) -> str:
    return '( ' + ' | '.join(options) + ' )'


def scene_grammar() -> str:
    """JSGF grammar of commands about the synthetic scenes: clear words, or [politeness] [verb] one or two
    descriptions (size, colour, shape, position, ordinal, relation to another object) [closer]."""
    from .synthetic.grammar import GENERIC, POSITION_PHRASES, REL_WORDS, SHAPE_WORDS, SIZE_WORDS
    from .synthetic.scene import COLOURS
    nouns = sorted({w for ws in SHAPE_WORDS.values() for w in ws} | set(GENERIC))
    sizes = sorted({w for ws in SIZE_WORDS.values() for w in ws})
    relations = sorted({w for ws in REL_WORDS.values() for w in ws})
    positions = POSITION_PHRASES
    ordinals = ('leftmost', 'rightmost', 'closest', 'nearest', 'farthest', 'furthest')
    rules = {
        'polite': _alternatives(POLITENESS),
        'verb': _alternatives(VERBS),
        'clear': _alternatives(CLEAR),
        'closer': _alternatives(CLOSERS),
        'size': _alternatives(sizes),
        'colour': _alternatives(sorted(COLOURS)),
        'noun': _alternatives(nouns),
        'ordinal': _alternatives(ordinals),
        'position': _alternatives(positions),
        'relation': _alternatives(relations),
        'simple': 'the [<ordinal>] [<size>] [<colour>] <noun>',
        'object': '<simple> [ <position> | <relation> <simple> ]',
    }
    lines = ['#JSGF V1.0;', 'grammar scene;',
             'public <command> = [<polite>] ( <clear> | [also] [<verb>] <object> [and <object>] [too] ) '
             '[<closer>];']
    lines += [f'<{name}> = {body};' for name, body in rules.items()]
    return '\n'.join(lines) + '\n'


def grammar_words(grammar: str) -> set[str]:
    """Lower-case words (terminals) of a JSGF grammar built by :func:`scene_grammar`."""
    body = '\n'.join(line.split('=', 1)[1] for line in grammar.splitlines() if '=' in line)
    words = body.replace('(', ' ').replace(')', ' ').replace('[', ' ').replace(']', ' ').replace('|', ' ')
    return {w for w in words.replace(';', ' ').split() if not w.startswith('<')}


def missing_from_dictionary(words) -> list[str]:
    """Words pocketsphinx's dictionary (plus EXTRA_PRONUNCIATIONS) cannot pronounce (a grammar using them
    fails to load)."""
    decoder = _decoder(None)[0]
    return sorted(w for w in words if decoder.lookup_word(w) is None)


# ---- WAV helpers (numpy only) ------------------------------------------------------------------------------

def _read_wav(path: str) -> tuple[np.ndarray, int]:
    with wave.open(path, 'rb') as f:
        if f.getsampwidth() != 2:
            raise ValueError(f'{path}: expected 16-bit PCM, got {8 * f.getsampwidth()}-bit')
        data = np.frombuffer(f.readframes(f.getnframes()), dtype='<i2')
        channels, rate = f.getnchannels(), f.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data.astype(np.float64), rate


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by the FFT (whole clip; deterministic)."""
    if rate == target or samples.size == 0:
        return samples
    n_out = int(round(samples.size * target / rate))
    spectrum = np.fft.rfft(samples)
    keep = n_out // 2 + 1
    spectrum = spectrum[:keep] if keep <= spectrum.size else np.pad(spectrum, (0, keep - spectrum.size))
    return np.fft.irfft(spectrum, n_out) * (n_out / samples.size)


def _write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.round(samples), -32768, 32767).astype('<i2')
    with wave.open(path, 'wb') as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def main(argv=None) -> None:
    """Speak each command, transcribe it (grammar and free) and print the interpretation."""
    import argparse
    from .commands import interpret
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('commands', nargs='+')
    args = parser.parse_args(argv)
    grammar = scene_grammar()
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.commands:
            wav = speak(text, os.path.join(tmp, 'command.wav'))
            heard, free = transcribe(wav, grammar), transcribe(wav)
            command = interpret(heard)
            print(f'said {text!r}\n  heard {heard!r} (free decoding: {free!r})\n  -> {command.action} '
                  f'{list(command.targets)} intent={command.intent!r}: {command.reason}')


if __name__ == '__main__':
    main()
