"""Acoustic domains: which eSpeak voices speak, and the channel their speech goes through.

``source`` is clean American English (eSpeak's ``en-us`` with its ``m*``/``f*`` variants). ``target``, the
demo's shift, has other (named) voice variants speaking faster, played 25% faster (a speed change by
resampling, which also raises pitch and formants): the tiny backbone's PER more than doubles there, and a few
hundred utterances are enough to adapt to it. ``noisy_room`` adds a reverberant room and pink noise (RT60
0.4 s, 15 dB SNR) to a 10% speed-up: the backbone loses most of its accuracy and a few hundred utterances
recover little of it, even with full fine-tuning. ``accented`` gives the target voices other English accents
(a frame-level log-mel phone classifier trained on source scored 95% on source and 35% on accented speech in
a noisy room; trained on it, 71%).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import fftconvolve, resample_poly

from fvae_asr.audio import SAMPLE_RATE

_PEAK = 0.95  # audio louder than this after the channel is scaled down to it


@dataclass(frozen=True)
class DomainConfig:
    """Speakers and channel of one acoustic domain.

    A speaker's voice is ``<language>+<variant>`` (e.g. ``en-us+f3``) with the variant drawn from the pool
    of its gender; speaking rate (words/minute), pitch and pitch range (eSpeak's 0-100) are drawn
    uniformly from the given ranges. ``speed`` > 1 plays the audio faster and higher, ``rt60_s`` sets
    a synthetic room's reverberation time, ``snr_db`` adds Gaussian noise whose spectrum falls as
    ``1/f**noise_slope`` (0 white, 1 pink). ``None`` turns reverberation or noise off.
    """

    name: str
    languages: tuple[str, ...]
    male_variants: tuple[str, ...]
    female_variants: tuple[str, ...]
    rate_wpm: tuple[int, int] = (150, 195)
    pitch: tuple[int, int] = (35, 65)
    pitch_range: tuple[int, int] = (35, 75)
    speed: float = 1.0
    rt60_s: float | None = None
    snr_db: float | None = None
    noise_slope: float = 0.0

    def __post_init__(self) -> None:
        if not (self.languages and self.male_variants and self.female_variants):
            raise ValueError(f"domain {self.name!r}: languages and both variant pools must be non-empty")
        if not 0.5 <= self.speed <= 2.0:
            raise ValueError(f"domain {self.name!r}: speed must be in [0.5, 2], got {self.speed}")
        if self.rt60_s is not None and not 0.0 < self.rt60_s <= 3.0:
            raise ValueError(f"domain {self.name!r}: rt60_s must be in (0, 3] seconds, got {self.rt60_s}")

    @property
    def length_ratio(self) -> Fraction:
        """Output length / input length of the speed change (a small fraction, so resampling is exact)."""
        return Fraction(1 / self.speed).limit_denominator(50)


SOURCE = DomainConfig(
    name="source",
    languages=("en-us",),
    male_variants=("m1", "m2", "m3", "m4", "m5", "m6", "m7"),
    female_variants=("f1", "f2", "f3", "f4", "f5"),
)

TARGET = DomainConfig(
    name="target",
    languages=("en-us",),
    male_variants=("Andy", "antonio", "michel", "travis", "victor"),
    female_variants=("Annie", "Andrea", "anika", "belinda", "steph"),
    rate_wpm=(165, 215),
    speed=1.25,
)

# A harder shift: the target voices, 10% faster, in a reverberant room with pink noise.
NOISY_ROOM = dataclasses.replace(TARGET, name="noisy_room", speed=1.1, rt60_s=0.4, snr_db=15.0, noise_slope=1.0)

# The target voices and channel with other English accents, whose phone realisations differ too.
ACCENTED = dataclasses.replace(
    TARGET, name="accented", languages=("en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
)

DOMAINS: dict[str, DomainConfig] = {domain.name: domain for domain in (SOURCE, TARGET, NOISY_ROOM, ACCENTED)}


def get_domain(domain: str | DomainConfig) -> DomainConfig:
    """A domain by name (a key of ``DOMAINS``), or the given config unchanged."""
    if isinstance(domain, DomainConfig):
        return domain
    try:
        return DOMAINS[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; choose one of {sorted(DOMAINS)}") from None


def _room_response(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Impulse response of a synthetic room: a direct path plus exponentially decaying Gaussian noise
    (60 dB down after ``rt60_s``), scaled so the reverberant tail carries as much energy as the direct path."""
    t = np.arange(1, int(rt60_s * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s)
    return np.concatenate(([1.0], tail / np.sqrt(np.sum(tail**2))))


def _colored_noise(n_samples: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power Gaussian noise whose power spectrum falls as ``1/f**slope`` (shaped in the frequency
    domain at a fast FFT length, then cut to ``n_samples``)."""
    size = next_fast_len(n_samples, real=True)
    frequencies = np.fft.rfftfreq(size)
    frequencies[0] = frequencies[1]
    noise = irfft(rfft(rng.standard_normal(size)) / frequencies ** (slope / 2), size)[:n_samples]
    return noise / np.sqrt(np.mean(noise**2))


def apply_channel(audio: np.ndarray, domain: DomainConfig, rng: np.random.Generator) -> np.ndarray:
    """Pass 16 kHz ``audio`` through the domain's channel: speed change, reverberation, then noise.

    The output has ``ceil(len(audio) * domain.length_ratio)`` samples; a sample index ``i`` of the input
    corresponds to ``i * domain.length_ratio`` in the output. Audio is scaled down if it would clip.
    """
    ratio = domain.length_ratio
    out = np.asarray(audio, dtype=np.float64)
    if ratio != 1:
        out = resample_poly(out, ratio.numerator, ratio.denominator)
    if domain.rt60_s is not None:
        out = fftconvolve(out, _room_response(domain.rt60_s, rng))[: len(out)]
    if domain.snr_db is not None:
        noise_power = np.mean(out**2) / 10 ** (domain.snr_db / 10)
        out = out + _colored_noise(len(out), domain.noise_slope, rng) * np.sqrt(noise_power)
    peak = np.max(np.abs(out), initial=0.0)
    if peak > _PEAK:
        out = out * (_PEAK / peak)
    return out.astype(np.float32)
