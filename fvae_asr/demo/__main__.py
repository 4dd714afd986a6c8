"""Offline end-to-end demo: ``fvae-asr demo --out DIR``.

Generates a synthetic target-domain corpus in the TIMIT layout, measures the tiny pretrained backbone's PER
with a head trained on the frozen backbone, adapts it with FVAE-LoRA through the TIMIT recipe, evaluates,
transcribes one file and writes ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from fvae_asr.argument_types import positive_int
from fvae_asr.demo import size
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.espeak import default_paths
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.synthetic import EspeakError, generate_corpus

logger = logging.getLogger("fvae_asr.demo")
KINDS = ("frozen", "fvae_lora")  # before: a head on the frozen backbone; after: FVAE-LoRA adaptation


def ensure_backbone(work_dir: Path) -> Path:
    """The shipped tiny backbone, or one built now (minutes) if the package was installed without it."""
    if (ASSET_BACKBONE / "config.json").is_file():
        return ASSET_BACKBONE
    from fvae_asr.demo.backbone import build_backbone

    logger.info("no shipped backbone at %s: building one on the source domain (once)", ASSET_BACKBONE)
    return build_backbone(work_dir / "tiny_wav2vec2", work_dir / "backbone")


def run_demo(out: Path, *, seed: int = 0, train_speakers: int, sentences_per_speaker: int, epochs: int) -> dict:
    """The whole demo; returns (and writes) the summary."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    backbone = ensure_backbone(out)
    corpus = generate_corpus(
        out / "corpus",
        seed=seed,
        n_train_speakers=train_speakers,
        n_test_speakers=8,
        sentences_per_speaker=sentences_per_speaker,
        domain="target",
        overwrite=True,
    )
    hparams = recipe_file("hparams/demo.yaml")
    common = {"seed": seed, "data_folder": str(corpus), "encoder_source": str(backbone), "number_of_epochs": epochs}
    for kind in KINDS:  # a re-run starts afresh instead of resuming finished (maybe differently sized) runs
        shutil.rmtree(out / kind, ignore_errors=True)
    runs = {
        kind: run(
            hparams,
            {"noprogressbar": True},
            {**common, "method": kind, "lr": size.LEARNING_RATES[kind], "output_folder": str(out / kind)},
        )
        for kind in KINDS
    }
    test_manifest = json.loads(Path(runs["fvae_lora"]["manifests"]["test"]).read_text())
    utterance_id, utterance = sorted(test_manifest.items())[0]
    (transcription,) = Transcriber(runs["fvae_lora"]["export"]).transcribe_files([utterance["wav"]])
    summary = {
        "per_before": runs["frozen"]["test"]["per"],
        "per_after": runs["fvae_lora"]["test"]["per"],
        "seconds": round(time.perf_counter() - started, 1),
        "trainable_parameters": {kind: r["trainable_parameters"] for kind, r in runs.items()},
        # FVAE-LoRA's reconstruction NLL (nats per frame, mean over adapted layers): the first batch's before any
        # update, and the last epoch's mean; a VAE that trains lowers it.
        "reconstruction_nll": {
            "before_training": runs["fvae_lora"]["train_stats"]["before_training"]["reconstruction"],
            "last_epoch": runs["fvae_lora"]["train_stats"]["by_epoch"][-1]["reconstruction"],
        },
        "settings": {
            "target_modules": runs["fvae_lora"]["target_modules"],
            "lr": {kind: r["lr"] for kind, r in runs.items()},
            "epochs": epochs,
            "train_utterances": len(json.loads(Path(runs["fvae_lora"]["manifests"]["train"]).read_text())),
            "why": size.WHY,
        },
        "transcription": {
            "utterance": utterance_id,
            "wav": utterance["wav"],
            "reference": utterance["phn"],
            "hypothesis": " ".join(transcription.phones or []),
        },
        "paths": {
            "corpus": str(corpus),
            "backbone": str(backbone),
            **{f"{kind}_output": str(out / kind) for kind in runs},
            **{f"{kind}_model": r["export"] for kind, r in runs.items()},
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fvae-asr demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything the demo writes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and of both training runs")
    parser.add_argument(
        "--train-speakers",
        type=positive_int,
        default=size.TRAIN_SPEAKERS,
        help="synthetic target-domain training speakers",
    )
    parser.add_argument(
        "--sentences-per-speaker",
        type=positive_int,
        default=size.SENTENCES_PER_SPEAKER,
        help="sentences each training speaker reads",
    )
    parser.add_argument("--epochs", type=positive_int, default=size.EPOCHS, help="training epochs of each run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        default_paths()  # eSpeak NG, before anything is written: a missing package is one line, not a traceback
    except EspeakError as err:
        print(
            f"error: the demo's corpus needs eSpeak NG: {err} (fvae-asr installs it; see docs/installation.md)",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    summary = run_demo(
        args.out,
        seed=args.seed,
        train_speakers=args.train_speakers,
        sentences_per_speaker=args.sentences_per_speaker,
        epochs=args.epochs,
    )
    print(json.dumps({k: summary[k] for k in ("per_before", "per_after", "reconstruction_nll", "seconds")}, indent=2))
    print(f"reference : {summary['transcription']['reference']}\nhypothesis: {summary['transcription']['hypothesis']}")
    print(f"summary written to {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
