"""Build the demo's tiny "pretrained" wav2vec2 (about 1 M parameters): CTC training from scratch on the
synthetic source domain, through the TIMIT recipe itself, saved as a Hugging Face ``Wav2Vec2ForCTC`` directory
(with its phone CTC head and ``vocab.json``, so that adaptation can start from the source-domain head).

    python -m fvae_asr.demo.backbone --out fvae_asr/assets/tiny_wav2vec2
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.models.export import export_hf_ctc, load_recognizer
from fvae_asr.synthetic import generate_corpus

logger = logging.getLogger(__name__)

# 20 ms frames as in wav2vec2 (strides multiply to 320) from a 4-layer CNN whose wide first stride keeps it
# cheap on CPU (5x faster than a 5-layer stride-5 start), and a 4-layer transformer: 0.93 M parameters.
TINY_BACKBONE_CONFIG = {
    "model_type": "wav2vec2",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "conv_dim": [32, 64, 64, 64],
    "conv_stride": [10, 4, 4, 2],
    "conv_kernel": [20, 8, 8, 4],
    "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 8,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "layerdrop": 0.0,
    "mask_time_length": 4,
}


# The run that made the shipped backbone (its log: pretrain_log.txt beside it); the defaults reproduce it.
EPOCHS = 25
TRAIN_SPEAKERS = 32
SENTENCES_PER_SPEAKER = 10


def build_backbone(
    out_dir: str | Path,
    work_dir: str | Path,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    train_speakers: int = TRAIN_SPEAKERS,
    sentences_per_speaker: int = SENTENCES_PER_SPEAKER,
) -> Path:
    """Generate the source-domain corpus, train wav2vec2 + CTC from scratch on it, save it as ``Wav2Vec2ForCTC``."""
    work_dir = Path(work_dir)
    corpus = generate_corpus(
        work_dir / "source_corpus",
        seed=seed,
        n_train_speakers=train_speakers,
        n_test_speakers=8,
        sentences_per_speaker=sentences_per_speaker,
        domain="source",
    )
    result = run(
        recipe_file("hparams/train.yaml"),
        {"noprogressbar": True},
        {
            "seed": seed,
            "data_folder": str(corpus),
            "output_folder": str(work_dir / "pretrain"),
            "method": "full",
            "encoder_config": TINY_BACKBONE_CONFIG,
            "freeze_feature_encoder": False,
            "mask_time_prob": 0.05,
            "head_dropout": 0.0,
            "number_of_epochs": epochs,
            "batch_size": 8,
            "lr": 0.002,
            "train_sorting": "random",
            "train_dataloader_opts": {"batch_size": 8, "shuffle": True, "num_workers": 0},
            "valid_dataloader_opts": {"batch_size": 8, "num_workers": 0},
        },
    )
    model, description = load_recognizer(result["export"])
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    export_hf_ctc(model, description["labels"], out_dir, description["blank_index"])
    logger.info("source-domain test PER %.2f; backbone saved to %s", result["test"]["per"], out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSET_BACKBONE, help="Hugging Face directory to write")
    parser.add_argument("--work-dir", type=Path, default=Path("results/backbone"), help="corpus and training runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--train-speakers", type=int, default=TRAIN_SPEAKERS)
    parser.add_argument("--sentences-per-speaker", type=int, default=SENTENCES_PER_SPEAKER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    build_backbone(
        args.out,
        args.work_dir,
        seed=args.seed,
        epochs=args.epochs,
        train_speakers=args.train_speakers,
        sentences_per_speaker=args.sentences_per_speaker,
    )


if __name__ == "__main__":
    main()
