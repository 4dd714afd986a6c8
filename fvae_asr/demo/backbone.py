"""Build the demo's tiny "pretrained" wav2vec2 (about 1 M parameters): CTC training from scratch on the
synthetic source domain, through the TIMIT recipe itself, saved as a Hugging Face ``Wav2Vec2ForCTC`` directory
(with its phone CTC head and ``vocab.json``, so that adaptation can start from the source-domain head).

    python -m fvae_asr.demo.backbone --out fvae_asr/assets/tiny_wav2vec2

``--size small --domains source target noisy_room accented`` builds the candidate of the real-speech study's
backbone check (docs/real-speech.md): a 3.1 M-parameter model on the speech of every synthetic domain (their voices,
accents, speeds and rooms), one corpus per domain merged into the recipe's annotations.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.files import read_json, write_atomically, write_json
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.annotations import ANNOTATION_KEYS, INVENTORY_KEY
from fvae_asr.speech.data.timit import PHONES_39, SPLITS, prepare_timit
from fvae_asr.speech.models.export import export_hf_ctc, load_recognizer
from fvae_asr.synthetic import DOMAINS, generate_corpus

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

# The candidate stronger backbone: the same frames, a wider and deeper transformer (3.1 M parameters).
SMALL_BACKBONE_CONFIG = {
    **TINY_BACKBONE_CONFIG,
    "hidden_size": 192,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 768,
    "conv_dim": [64, 128, 128, 128],
}
BACKBONE_CONFIGS = {"tiny": TINY_BACKBONE_CONFIG, "small": SMALL_BACKBONE_CONFIG}


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
    test_speakers: int = 8,
    domains: Sequence[str] = ("source",),
    encoder_config: Mapping[str, Any] = TINY_BACKBONE_CONFIG,
) -> Path:
    """Generate a corpus per domain, train wav2vec2 + CTC from scratch on them, save it as ``Wav2Vec2ForCTC``.

    Args:
        out_dir: the Hugging Face directory to write (replaced).
        work_dir: the corpora and the training run; a run stopped there resumes.
        seed: the first corpus's seed (the next domains take the next seeds) and the training's.
        epochs, train_speakers, sentences_per_speaker, test_speakers: the training length and each corpus's size
            (its test speakers: half dev, half core test).
        domains: synthetic domains (``fvae_asr.synthetic.DOMAINS``); the defaults reproduce the shipped backbone.
        encoder_config: the wav2vec2 config trained from scratch (``BACKBONE_CONFIGS``).
    """
    work_dir = Path(work_dir)
    unknown = sorted(set(domains) - set(DOMAINS))
    if not domains or unknown:
        raise ValueError(f"domains: unknown {', '.join(unknown) or 'none given'}; choose from {sorted(DOMAINS)}")
    corpora = {
        domain: generate_corpus(
            work_dir / f"{domain}_corpus",
            seed=seed + index,
            n_train_speakers=train_speakers,
            n_test_speakers=test_speakers,
            sentences_per_speaker=sentences_per_speaker,
            domain=domain,
        )
        for index, domain in enumerate(domains)
    }
    if len(corpora) == 1:
        data = {"data_folder": str(corpora[domains[0]])}
    else:
        data = merged_annotations(corpora, work_dir / "annotations")
    result = run(
        recipe_file("hparams/train.yaml"),
        {"noprogressbar": True},
        {
            "seed": seed,
            **data,
            "output_folder": str(work_dir / "pretrain"),
            "method": "full",
            "encoder_config": dict(encoder_config),
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
    logger.info("test PER on its domains %.2f; backbone saved to %s", result["test"]["per"], out_dir)
    return out_dir


def merged_annotations(corpora: Mapping[str, Path], folder: Path) -> dict[str, str]:
    """The recipe's annotation overrides for several TIMIT-layout corpora at once: each split's manifests
    merged, every utterance id prefixed with its corpus's name (their speakers share ids), and TIMIT's 39 phones
    as the inventory, as for one corpus (the shipped backbone's head)."""
    folder.mkdir(parents=True, exist_ok=True)
    inventory = folder / "phones.txt"
    phones = "".join(f"{phone}\n" for phone in PHONES_39)
    write_atomically(inventory, lambda tmp: tmp.write_text(phones, encoding="utf-8"))  # a resumed run re-reads it
    overrides = {"data_folder": str(folder), INVENTORY_KEY: str(inventory)}
    manifests = {name: prepare_timit(corpus, folder / name) for name, corpus in corpora.items()}
    for index, split in enumerate(SPLITS):
        merged = {
            f"{name}_{utterance}": entry
            for name, paths in manifests.items()
            for utterance, entry in read_json(paths[index], f"{name} {split} manifest").items()
        }
        write_json(folder / f"{split}.json", merged)
        overrides[ANNOTATION_KEYS[split]] = str(folder / f"{split}.json")
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSET_BACKBONE, help="Hugging Face directory to write")
    parser.add_argument("--work-dir", type=Path, default=Path("results/backbone"), help="corpus and training runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--train-speakers", type=int, default=TRAIN_SPEAKERS)
    parser.add_argument("--sentences-per-speaker", type=int, default=SENTENCES_PER_SPEAKER)
    parser.add_argument(
        "--domains", nargs="+", choices=sorted(DOMAINS), default=["source"], help="synthetic domains, a corpus each"
    )
    parser.add_argument("--size", choices=sorted(BACKBONE_CONFIGS), default="tiny", help="the wav2vec2 to train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    build_backbone(
        args.out,
        args.work_dir,
        seed=args.seed,
        epochs=args.epochs,
        train_speakers=args.train_speakers,
        sentences_per_speaker=args.sentences_per_speaker,
        domains=args.domains,
        encoder_config=BACKBONE_CONFIGS[args.size],
    )


if __name__ == "__main__":
    main()
