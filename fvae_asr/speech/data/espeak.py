"""eSpeak NG through ctypes: 16 kHz float32 audio plus phoneme and word events with sample times.

eSpeak keeps synthesis state between calls (glottal phase, pitch flutter), so the same request gives
slightly different audio depending on what was spoken before. To make every call a pure function of its
arguments, the library lives in a helper process that initialises it once and forks a fresh copy of that
clean state for each request. This file is also that helper's entry point (run by path, so the helper
imports neither the package nor torch); it must therefore use absolute imports only.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import struct
import subprocess
import sys
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np


# eSpeak NG API constants (speak_lib.h / espeak_ng.h, version 1.52).
_ENS_OK = 0
_OUTPUT_SYNCHRONOUS = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded, initialised or asked to speak."""


@dataclass(frozen=True)
class PhonemeEvent:
    """A phoneme start: ``sample`` at 16 kHz, eSpeak ``mnemonic`` (stress marks kept), 1-based ``text_position``."""

    sample: int
    mnemonic: str
    text_position: int


@dataclass(frozen=True)
class WordEvent:
    """A word start: ``sample`` at 16 kHz, 1-based ``text_position`` and ``length`` in characters."""

    sample: int
    text_position: int
    length: int


@dataclass(frozen=True)
class Synthesis:
    """Audio (float32, mono, 16 kHz, in [-1, 1]) with the phoneme and word events that produced it."""

    audio: np.ndarray
    phonemes: tuple[PhonemeEvent, ...]
    words: tuple[WordEvent, ...]
    sample_rate: int


class _Event(ctypes.Structure):
    """``espeak_EVENT``; the ``id`` union is read as its 8-byte string member (phoneme mnemonics)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """The library itself, used inside the helper process: native-rate int16 audio and raw events."""

    def __init__(self, library_path: str, data_path: str) -> None:
        if not os.path.isfile(os.path.join(data_path, "phontab")):
            raise EspeakError(f"eSpeak NG data folder {data_path!r} has no 'phontab' (library {library_path!r})")
        try:
            self._lib = ctypes.CDLL(library_path)
        except OSError as err:
            raise EspeakError(f"cannot load the eSpeak NG library {library_path!r}: {err}") from err
        self._library_path = library_path
        self._lib.espeak_ng_InitializePath(data_path.encode())
        self._check(self._lib.espeak_ng_Initialize(None), f"initialise with data {data_path!r}")
        self._check(self._lib.espeak_ng_InitializeOutput(_OUTPUT_SYNCHRONOUS, 0, None), "set synchronous output")
        self._check(self._lib.espeak_ng_SetPhonemeEvents(1, 0), "enable phoneme events")
        self.sample_rate = int(self._lib.espeak_ng_GetSampleRate())
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: the library holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _check(self, status: int, action: str) -> None:
        """Raise an :class:`EspeakError` naming the library when a call returns a failure status."""
        if status != _ENS_OK:
            message = ctypes.create_string_buffer(512)
            self._lib.espeak_ng_GetStatusCodeMessage(status, message, len(message))
            raise EspeakError(
                f"eSpeak NG ({self._library_path}) failed to {action}: {message.value.decode(errors='replace')}"
            )

    def _collect(self, wav: ctypes._Pointer, n_samples: int, events: ctypes._Pointer) -> int:
        """eSpeak's synthesis callback: keep the audio chunk, and the word and phoneme events."""
        if wav and n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type in (_EVENT_WORD, _EVENT_PHONEME):
                self._events.append((event.type, event.audio_position, event.text_position, event.length, event.id))
            i += 1
        return 0  # continue synthesis

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, seed: int) -> tuple:
        """Speak ``text``; return (int16 bytes at the native rate, [(type, ms, text_position, length, id)])."""
        self._check(self._lib.espeak_ng_SetVoiceByName(voice.encode()), f"select voice {voice!r}")
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            self._check(self._lib.espeak_ng_SetParameter(parameter, value, 0), f"set parameter {parameter}")
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        data = text.encode()
        self._chunks, self._events = [], []
        self._check(self._lib.espeak_ng_Synthesize(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None), "synthesise")
        return b"".join(self._chunks), self._events


# --- helper process protocol: length-prefixed pickles -------------------------------------------------


def _send(stream: BinaryIO, message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def _receive(stream: BinaryIO) -> object | None:
    """The next message, or None at end of stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def _call_in_fork(engine: _Engine, request: dict) -> tuple[str, object]:
    """Run one request in a forked child, so the engine's state is the same clean one for every request."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            reply: tuple[str, object] = ("ok", engine.synthesize(**request))
        except Exception as err:  # report everything to the caller; the child must never return
            reply = ("error", f"{type(err).__name__}: {err}")
        with os.fdopen(write_fd, "wb") as pipe:
            _send(pipe, reply)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        reply = _receive(pipe)
    _, status = os.waitpid(pid, 0)
    return reply if reply is not None else ("error", f"eSpeak NG worker died (wait status {status})")


def _serve(library_path: str, data_path: str) -> None:
    """Helper process main loop: initialise once, then answer requests read from stdin on stdout."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed (by eSpeak or Python) goes to stderr, never into the protocol
    try:
        engine = _Engine(library_path, data_path)
    except EspeakError as err:
        _send(replies, ("error", str(err)))
        return
    _send(replies, ("ready", engine.sample_rate))
    while (request := _receive(sys.stdin.buffer)) is not None:
        _send(replies, _call_in_fork(engine, request))


# --- caller side ---------------------------------------------------------------------------------------


def default_paths() -> tuple[str, str]:
    """(library path, data path) of the eSpeak NG shipped in the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise EspeakError("eSpeak NG needs the 'espeakng-loader' package: pip install espeakng-loader") from err
    return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())


def _stop(process: subprocess.Popen) -> None:
    """End the helper process: closing its stdin ends its loop."""
    if process.stdin:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout:
        process.stdout.close()


class Espeak:
    """eSpeak NG synthesiser; every :meth:`synthesize` call depends only on its arguments.

    One helper process per instance initialises the library once. Use as a context manager (or call
    :meth:`close`). Not thread-safe: one request at a time.
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            default_library, default_data = default_paths()
            library_path, data_path = library_path or default_library, data_path or default_data
        if not os.path.isfile(library_path):
            raise EspeakError(f"eSpeak NG library not found: {library_path}")
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), library_path, data_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process)
        status, value = self._receive(f"eSpeak NG helper process (library {library_path}) exited on start-up")
        if status != "ready":
            self.close()
            raise EspeakError(str(value))
        self.native_rate: int = value
        self.library_path = library_path

    def _receive(self, on_eof: str) -> tuple[str, object]:
        reply = _receive(self._process.stdout)
        if reply is None:
            raise EspeakError(on_eof)
        return reply

    def synthesize(
        self, text: str, voice: str = "en-us", *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> Synthesis:
        """Speak ``text`` with ``voice`` (e.g. ``"en-us+f3"``), ``rate`` in words/minute, ``pitch`` and
        ``pitch_range`` in 0-100; ``seed`` drives eSpeak's noise sources. Returns 16 kHz audio and events."""
        if not self._finalizer.alive:
            raise EspeakError("this Espeak synthesiser is closed")
        request = dict(text=text, voice=voice, rate=rate, pitch=pitch, pitch_range=pitch_range, seed=seed)
        try:
            _send(self._process.stdin, request)
        except BrokenPipeError as err:
            raise EspeakError(f"eSpeak NG helper process ({self.library_path}) is gone") from err
        status, value = self._receive(f"eSpeak NG helper process ({self.library_path}) died")
        if status != "ok":
            raise EspeakError(f"eSpeak NG could not speak {text!r} with voice {voice!r}: {value}")
        pcm, events = value
        return self._to_16k(pcm, events)

    def _to_16k(self, pcm: bytes, events: list) -> Synthesis:
        """Resample the native-rate audio to 16 kHz and express event times in 16 kHz samples."""
        # Imported here, not at module level: the helper process runs this file, and its per-request
        # forks are markedly cheaper without numpy, scipy and the package (torch) loaded.
        import numpy as np
        from scipy.signal import resample_poly

        from fvae_asr.audio import SAMPLE_RATE

        native = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        ratio = np.gcd(SAMPLE_RATE, self.native_rate)
        audio = resample_poly(native, SAMPLE_RATE // ratio, self.native_rate // ratio).astype(np.float32)
        n_samples = len(audio)
        phonemes, words = [], []
        for kind, milliseconds, text_position, length, name in events:
            sample = min(milliseconds * SAMPLE_RATE // 1000, n_samples)
            if kind == _EVENT_PHONEME:
                phonemes.append(PhonemeEvent(sample, name.decode("utf-8", errors="replace"), text_position))
            else:
                words.append(WordEvent(sample, text_position, length))
        return Synthesis(np.clip(audio, -1.0, 1.0), tuple(phonemes), tuple(words), SAMPLE_RATE)

    def close(self) -> None:
        """Stop the helper process (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Espeak:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve(*sys.argv[1:3])
