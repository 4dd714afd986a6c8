"""Offline synthetic speech corpus in the TIMIT layout, spoken by eSpeak NG (no downloads, no GPU).

``generate_corpus(out_dir, domain="source")`` (or ``"target"``, ``"noisy_room"``, ``"accented"``) writes TRAIN/TEST
folders that the TIMIT preparation reads as it reads the real corpus; domains differ in voices and channel.
"""

from fvae_asr.speech.data.espeak import Espeak, EspeakError, Synthesis
from fvae_asr.speech.data.espeak_phones import ESPEAK_TO_TIMIT, phone_segments, to_timit
from fvae_asr.synthetic.corpus import (
    OutputFolderTaken,
    Speaker,
    Utterance,
    generate_corpus,
    make_speaker,
    synthesize_utterance,
)
from fvae_asr.synthetic.domains import (
    DOMAINS,
    NOISY_ROOM,
    SOURCE,
    TARGET,
    DomainConfig,
    apply_channel,
    get_domain,
)
from fvae_asr.synthetic.sentences import CALIBRATION_SENTENCES, make_sentences

__all__ = [
    "CALIBRATION_SENTENCES",
    "DOMAINS",
    "NOISY_ROOM",
    "ESPEAK_TO_TIMIT",
    "OutputFolderTaken",
    "SOURCE",
    "TARGET",
    "DomainConfig",
    "Espeak",
    "EspeakError",
    "Speaker",
    "Synthesis",
    "Utterance",
    "apply_channel",
    "generate_corpus",
    "get_domain",
    "make_sentences",
    "make_speaker",
    "phone_segments",
    "synthesize_utterance",
    "to_timit",
]
