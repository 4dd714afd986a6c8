"""The comparison study's sizes, fixed before it ran (the study, the demo's rate pick, a CI-sized smoke run), and
the presets of studies on a real corpus."""

from __future__ import annotations

from typing import Any

from benchmarks.common.methods import ABLATIONS, LR_GRID, METHODS, TARGETS
from fvae_asr.demo import size as demo_size
from fvae_asr.demo.paths import ASSET_BACKBONE

# The study's size, fixed before it ran (see the README): small enough for 96 runs in a few hours on 2 cores.
STUDY = {
    "train_speakers": 32,
    "sentences_per_speaker": 8,
    "test_speakers": 16,
    "epochs": 4,
    "batch_size": 8,
    "lr_grid": LR_GRID,
    "seeds": [0, 1, 2],
    "shifts": ["target", "noisy_room"],
    "methods": list(METHODS),
    "targets": list(TARGETS),
}


SIZES = {
    "study": STUDY,
    # The demo's corpus, budget and rate grid, to pick the demo's rates by dev PER (its 8 test speakers: 4 dev,
    # 4 test), with LoRA beside it (fvae_asr/demo/size.py says how).
    "demo": {
        **STUDY,
        "train_speakers": demo_size.TRAIN_SPEAKERS,
        "test_speakers": 8,
        "epochs": demo_size.EPOCHS,
        "sentences_per_speaker": demo_size.SENTENCES_PER_SPEAKER,
        "lr_grid": demo_size.RATE_GRID,
        "seeds": [0],
        "shifts": ["target"],
        "methods": ["frozen", "lora", "fvae_lora"],
        "targets": ["all_linear"],
    },
    "quick": {
        **STUDY,
        "train_speakers": 3,
        "sentences_per_speaker": 2,
        "test_speakers": 2,
        "epochs": 1,
        "lr_grid": [0.003, 0.05],
        "seeds": [0],
        "shifts": ["target"],
    },
}


DEMO_RECIPE = "hparams/demo.yaml"  # the synthetic studies' recipe file (their settings predate a "recipe" key)


# Studies on a real corpus, through the recipe's own hparams/train.yaml (its epochs and batch size unless given).
# paper_timit: the paper's TIMIT setting. Rates: each method picks its own by dev PER, as in the synthetic study,
# from a grid around where such runs train well: full fine-tuning of wav2vec2-large near 1e-4 (SpeechBrain's and
# fairseq's fine-tuning rates), adapters an order of magnitude higher (the recipe's 5e-4 up to the authors' 5e-3);
# one grid for both would spend runs on rates that cannot win (docs/paper-timit.md).
# real_speech: the study on real recordings (docs/real-speech.md, its protocol): the shipped backbone on a CMU ARCTIC
# voice through the demo's recipe, one CPU thread per run; every method and both ablations tuned on one grid.
# librispeech: the same comparison at scale, for a GPU, with paper_timit's encoder, recipe and grids.
ALL_METHODS = ["frozen", "lora", "fvae_lora", "full", *ABLATIONS]
PRESETS: dict[str, dict[str, Any]] = {
    "real_speech": {
        "recipe": DEMO_RECIPE,
        "encoder_source": str(ASSET_BACKBONE),
        "corpus": "arctic",
        "methods": ALL_METHODS,
        "targets": list(TARGETS),
        "seeds": [0, 1, 2],
        "lr_grid": [0.001, 0.003, 0.01, 0.03],
        "lr_grids": {},
        "epochs": 10,
        "batch_size": 8,
        "tune_ablations": True,
    },
    "librispeech": {
        "recipe": "hparams/train.yaml",
        "encoder_source": "facebook/wav2vec2-large-lv60",
        "corpus": "librispeech",
        "methods": ALL_METHODS,
        "targets": list(TARGETS),
        "seeds": [0, 1, 2],
        "lr_grid": [0.0005, 0.002, 0.005],
        "lr_grids": {"full": [2.5e-5, 0.0001, 0.0004]},
        "tune_ablations": True,
    },
    "paper_timit": {
        "recipe": "hparams/train.yaml",
        "encoder_source": "facebook/wav2vec2-large-lv60",
        "methods": ["full", "lora", "fvae_lora"],
        "targets": ["qk"],
        "seeds": [0, 1, 2],
        "lr_grid": [0.0005, 0.002, 0.005],
        "lr_grids": {"full": [2.5e-5, 0.0001, 0.0004]},
    },
}


PRESET_QUICK = {"epochs": 1, "seeds": [0, 1], "lr_grid": [0.002, 0.005], "lr_grids": {"full": [0.0001]}}  # smoke
