"""Comparison study on the synthetic target domain: frozen backbone (head only), LoRA, FVAE-LoRA, full
fine-tuning, and two FVAE-LoRA ablations from the paper, each trained through the TIMIT recipe
(``recipes/timit/hparams/demo.yaml``) with the same budget: same corpus, epochs and batch size.

Methods (``--methods``):

    frozen      head only, backbone frozen
    lora        LoRA on the demo's target modules (+ head)
    fvae_lora   FVAE-LoRA as in the demo (+ head)
    full        every weight but the CNN feature encoder
    delta0      FVAE-LoRA with delta = 0, beta_z2 = 1 (VAE2LAT: no repulsive term, KL of q2 toward p2)
    same_prior  FVAE-LoRA with prior_mean_z2 = 0 (identical priors for z1 and z2)

Every run has its own folder ``OUT/runs/<method>/seed<k>``: an interrupted study resumes from the recipe's
checkpoints, and a run whose ``run.json`` matches the requested settings is not run again.

Writes ``OUT/results.json`` (every run and the aggregate), ``OUT/results.md`` (the table, also printed) and
``OUT/dev_per.png`` (dev PER per epoch, mean over seeds with a +/- std band).

    python benchmarks/compare_methods.py --out results/compare --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fvae_asr.demo import size
from fvae_asr.demo.paths import ASSET_BACKBONE, recipe_file
from fvae_asr.speech.recipe import run
from fvae_asr.synthetic import generate_corpus

logger = logging.getLogger("fvae_asr.compare")

# method -> recipe overrides; nested keys override the arguments of the adapter config objects.
METHODS: dict[str, dict[str, Any]] = {
    "frozen": {"adapter": "frozen"},
    "lora": {"adapter": "lora"},
    "fvae_lora": {"adapter": "fvae_lora"},
    "full": {"adapter": "full"},
    "delta0": {"adapter": "fvae_lora", "adapter_configs": {"fvae_lora": {"delta": 0.0, "beta_z2": 1.0}}},
    "same_prior": {"adapter": "fvae_lora", "adapter_configs": {"fvae_lora": {"prior_mean_z2": 0.0}}},
}
TIME_REFERENCES = ("fvae_lora", "lora")  # the train-time ratio is taken against the first one studied
RUN_FILE = "run.json"
EPOCH_LINE = re.compile(r"^epoch: (\d+),.*valid PER: ([-+0-9.eE]+|nan|inf)", re.MULTILINE)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/compare"), help="folder for everything written")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="methods to run (default: all)")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--epochs", type=int, default=size.EPOCHS,
                        help="epochs per run, all methods (default: %(default)s, the demo's)")  # fmt: skip
    parser.add_argument("--backbone", type=Path, default=ASSET_BACKBONE,
                        help="Hugging Face wav2vec2 directory (default: the shipped tiny backbone)")  # fmt: skip
    parser.add_argument("--corpus", type=Path, help="an existing TIMIT-layout corpus (default: generate OUT/corpus)")
    parser.add_argument("--corpus-seed", type=int, default=0, help="seed of the generated corpus (default: 0)")
    parser.add_argument("--train-speakers", type=int, default=size.TRAIN_SPEAKERS,
                        help="generated TRAIN speakers (default: %(default)s)")  # fmt: skip
    parser.add_argument("--test-speakers", type=int, default=8,
                        help="generated TEST speakers, half dev and half core test (default: 8)")  # fmt: skip
    parser.add_argument("--sentences-per-speaker", type=int, default=size.SENTENCES_PER_SPEAKER,
                        help="generated SI/SX sentences per speaker (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if not (args.backbone / "config.json").is_file():
        parser.error(f"no wav2vec2 backbone at {args.backbone} (no config.json): build the shipped one with "
                     "`python -m fvae_asr.demo.backbone`, or pass --backbone DIR")  # fmt: skip
    if args.corpus is not None and not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus} is not a folder")
    return args


def prepare_corpus(args: argparse.Namespace) -> Path:
    """The given corpus, or the synthetic target-domain one generated (once) under ``OUT/corpus``."""
    if args.corpus is not None:
        return args.corpus
    return generate_corpus(args.out / "corpus", seed=args.corpus_seed, n_train_speakers=args.train_speakers,
                           n_test_speakers=args.test_speakers, sentences_per_speaker=args.sentences_per_speaker,
                           domain="target")  # fmt: skip


def dev_per_by_epoch(train_log: Path, epochs: int) -> list[float]:
    """Dev PER of epochs 1..``epochs`` from the recipe's ``train_log.txt`` (the last line of an epoch wins)."""
    found = {int(epoch): float(per) for epoch, per in EPOCH_LINE.findall(train_log.read_text(encoding="utf-8"))}
    missing = [epoch for epoch in range(1, epochs + 1) if epoch not in found]
    if missing:
        raise RuntimeError(f"{train_log} has no valid PER for epochs {missing}")
    return [found[epoch] for epoch in range(1, epochs + 1)]


def epochs_logged(train_log: Path) -> int:
    """How many distinct epochs the training log records (0 before the first one)."""
    if not train_log.is_file():
        return 0
    return len({epoch for epoch, _ in EPOCH_LINE.findall(train_log.read_text(encoding="utf-8"))})


def run_one(method: str, seed: int, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train and test one method with one seed in ``out`` (resuming there); return and save its record.

    ``seconds_per_epoch`` is the time of ``fit`` (training plus the dev pass) over the epochs trained in this
    call, so a resumed run still gets a fair figure; it is None when no epoch was left to train.
    """
    record_file = out / RUN_FILE
    if record_file.is_file():
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record["settings"] == settings:
            logger.info("%s seed %d: done already (%s)", method, seed, record_file)
            return record
    train_log = out / "train_log.txt"
    before = epochs_logged(train_log)
    overrides = {**METHODS[method], "seed": seed, "output_folder": str(out), "data_folder": settings["corpus"],
                 "wav2vec2_source": settings["backbone"], "number_of_epochs": settings["epochs"]}  # fmt: skip
    logger.info("%s seed %d: running in %s", method, seed, out)
    started = time.perf_counter()
    result = run(recipe_file("hparams/demo.yaml"), {"noprogressbar": True}, overrides)
    trained_now = epochs_logged(train_log) - before
    test = result["test"]
    record = {
        "method": method,
        "seed": seed,
        "adapter": result["adapter"],
        "test_per": test["per"],
        **{key: test[key] for key in ("insertions", "deletions", "substitutions", "reference_phones")},
        "trainable_parameters": result["trainable_parameters"],
        "total_parameters": result["total_parameters"],
        "train_seconds": result["train_seconds"],
        "epochs_trained_in_last_call": trained_now,
        "seconds_per_epoch": result["train_seconds"] / trained_now if trained_now else None,
        "wall_seconds_last_call": time.perf_counter() - started,
        "dev_per": dev_per_by_epoch(train_log, settings["epochs"]),
        "output_folder": str(out),
        "settings": settings,
    }
    record_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per method: seeds, test PER mean/std, parameters, seconds per epoch, dev PER curve mean/std; and the
    train-time ratio against the reference method (FVAE-LoRA, else LoRA, else none)."""
    reference = next((name for name in TIME_REFERENCES if name in methods), None)
    summary: dict[str, Any] = {}
    for method in methods:
        runs = [r for r in records if r["method"] == method]
        per_mean, per_std = mean_std([r["test_per"] for r in runs])
        timed = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"] is not None]
        curves = list(zip(*(r["dev_per"] for r in runs)))
        summary[method] = {
            "seeds": [r["seed"] for r in runs],
            "test_per_mean": per_mean,
            "test_per_std": per_std,
            "trainable_parameters": sorted({r["trainable_parameters"] for r in runs}),
            "total_parameters": runs[0]["total_parameters"],
            "seconds_per_epoch_mean": statistics.fmean(timed) if timed else None,
            "timed_runs": len(timed),
            "dev_per_mean": [statistics.fmean(epoch) for epoch in curves],
            "dev_per_std": [statistics.stdev(epoch) if len(epoch) > 1 else 0.0 for epoch in curves],
        }
    ref_time = summary[reference]["seconds_per_epoch_mean"] if reference else None
    for entry in summary.values():
        own = entry["seconds_per_epoch_mean"]
        entry["time_ratio"] = own / ref_time if own is not None and ref_time else None
    return {"time_reference": reference, "methods": summary}


def markdown_table(summary: dict[str, Any], epochs: int) -> str:
    """The results table: every method with its seed count, test PER mean +/- std, parameters and time."""
    reference = summary["time_reference"]
    ratio_header = f"train time / epoch vs {reference}" if reference else "train time / epoch (no reference)"
    lines = [f"Test PER (%) on the synthetic target domain after {epochs} epochs; mean ± sample std over seeds.",
             "",
             f"| method | seeds | test PER mean ± std | trainable params | s / epoch | {ratio_header} |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for method, entry in summary["methods"].items():
        std = "n/a" if entry["test_per_std"] is None else f"{entry['test_per_std']:.2f}"
        params = " / ".join(f"{n:,}" for n in entry["trainable_parameters"])
        seconds = entry["seconds_per_epoch_mean"]
        ratio = entry["time_ratio"]
        lines.append(f"| {method} | {len(entry['seeds'])} | {entry['test_per_mean']:.2f} ± {std} | {params} | "
                     f"{'n/a' if seconds is None else f'{seconds:.1f}'} | "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}'} |")  # fmt: skip
    lines += ["", "s / epoch: wall time of training plus the dev pass per epoch, mean over the runs timed "
              "(a run found finished has no new timing)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_dev_per(summary: dict[str, Any], path: Path) -> None:
    """Dev PER per epoch for each method: mean over seeds with a +/- std band (Agg backend, no display)."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, entry in summary["methods"].items():
        epochs = range(1, len(entry["dev_per_mean"]) + 1)
        low = [m - s for m, s in zip(entry["dev_per_mean"], entry["dev_per_std"])]
        high = [m + s for m, s in zip(entry["dev_per_mean"], entry["dev_per_std"])]
        (line,) = axes.plot(epochs, entry["dev_per_mean"], marker="o", label=f"{method} (n={len(entry['seeds'])})")
        axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
    axes.set(xlabel="epoch", ylabel="dev PER (%)", title="Dev PER per epoch (mean ± std over seeds)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every method x seed, write results.json, results.md and dev_per.png; return the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(args)
    settings = {"corpus": str(corpus.resolve()), "backbone": str(args.backbone.resolve()), "epochs": args.epochs}
    # Seed by seed, every method in turn: an interrupted study leaves comparable runs, and slow spells of a
    # shared machine spread over the methods.
    records = [run_one(method, seed, settings, args.out / "runs" / method / f"seed{seed}")
               for seed in args.seeds for method in args.methods]  # fmt: skip
    summary = aggregate(records, args.methods)
    results = {"settings": {**settings, "methods": args.methods, "seeds": args.seeds}, "runs": records,
               "aggregate": summary}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(summary, args.epochs)
    (args.out / "results.md").write_text(table, encoding="utf-8")
    plot_dev_per(summary, args.out / "dev_per.png")
    print(table)
    return results


if __name__ == "__main__":
    main()
