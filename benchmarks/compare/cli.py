"""Comparison study: frozen backbone (head only), LoRA, FVAE-LoRA and full fine-tuning, plus two FVAE-LoRA
ablations from the paper, each trained through the TIMIT recipe (``recipes/timit/hparams/demo.yaml``) on the
shipped tiny wav2vec2, on synthetic acoustic shifts. Fair by construction:

- every method gets its own learning rate, picked by the best dev PER over the epochs from ``--lr-grid`` with the
  first seed, then runs every seed at that rate; the ablations run at FVAE-LoRA's picked rate (no grid);
- two target settings for the adapters: the paper's (``qk``: q_proj, k_proj) and every linear layer
  (``all_linear``); frozen and full fine-tuning do not depend on it and run once per shift;
- the same corpus, epochs, batch size and schedule (warm-up 10 %, linear decay) for all.

Methods: frozen (head only), lora, fvae_lora, full (every weight but the CNN), delta0 (VAE2LAT: delta = 0 and a
KL of q2 toward p2), same_prior (prior mean of z2 = 0: identical priors). Every one trains under the recipe's
common setting: the authors' FVAE-LoRA defaults and the gradient norm of ``task + lambda * aux`` clipped at 1e-3.
Two controls, each tuned on its own grid like the methods, show what the recipe does: lora_task_clip (LoRA
clipped at norm 1 on its task loss, as the authors' LoRA baseline: the asymmetric comparison the paper ran) and
fvae_lora_old (FVAE-LoRA with this package's 0.1 defaults: scale 1, one decoder layer without dropout, log-variance
clamp 10, clip 5).

Resumable: each finished run leaves a record ``OUT/records/<shift>/<targets>/<method>/lr<lr>/seed<k>.json``
(small, committed with the results, with the commit it ran on) and is never run again with the same settings
(the study's size, corpus and backbone, and the run's resolved adapter config and gradient clipping: a changed
default runs again); an interrupted run resumes
from the recipe's checkpoints under ``--work``. ``--jobs N`` runs N single-threaded trainings side by side.

Writes ``OUT/results.json`` (one entry per method, targets and shift), ``OUT/results.md`` (tables, also
printed), ``OUT/dev_per.png`` (dev PER per epoch at the picked rates) and ``OUT/test_per.png`` (test PER with
error bars per setting).

    python -m benchmarks.compare --out docs/compare --work results/compare --jobs 2

On a real corpus (``--data_folder`` of TIMIT, or ``--train_annotation/--valid_annotation/--test_annotation``) the
study runs a named preset through the recipe's own ``hparams/train.yaml``: ``--preset paper_timit`` is the paper's TIMIT
table (wav2vec2-large-lv60, adapters on q_proj and k_proj at rank 16, full fine-tuning, LoRA and FVAE-LoRA, 3 seeds,
each method's rate from its own dev grid; docs/paper-timit.md says what it costs and how to read it). A run is
then one recipe run in a worker (``--device cuda --precision bf16``), or, with ``--launcher torchrun
--nproc_per_node N``, a torchrun of ``recipe_process.py`` on N processes (DDP). Records are kept and resumed the
same way, keyed by the corpus's content, the encoder, the precision and the number of processes.

    python -m benchmarks.compare --preset paper_timit --data_folder /data/TIMIT --device cuda \
        --precision bf16 --out results/paper_timit/out --work results/paper_timit/work

A corpus with word transcripts is named by ``--corpus`` (a layout of ``fvae_asr.speech.data.word_corpus``; its
phone targets are made by the recipe). ``--preset real_speech`` is the study on real recordings
(docs/real-speech.md): the shipped backbone adapted to a CMU ARCTIC voice (``--corpus arctic`` by default) through
``hparams/demo.yaml``, every method and both ablations each at its own dev-picked rate, adapters on q/k and on every
linear layer, on CPU; ``--preset librispeech`` is the same comparison at scale, wav2vec2-large-lv60 on LibriSpeech
through ``hparams/train.yaml``, for a GPU:

    python -m benchmarks.compare --preset real_speech --data_folder /data/dataset-voice-cathy --jobs 2 \
        --out docs/real_speech --work results/real_speech
    python -m benchmarks.compare --preset librispeech --data_folder /data/LibriSpeech --device cuda \
        --precision bf16 --out results/librispeech/out --work results/librispeech/work
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common.methods import ABLATIONS, METHODS, TARGETS
from benchmarks.common.records import (
    REPO,
    backbone_digest,
    source_commit,
    study_command,
)
from benchmarks.compare.corpus import prepare_corpora, real_corpus
from benchmarks.compare.report import markdown_tables, plot_dev_per, plot_test_per
from benchmarks.compare.results import control_effects, paired_differences, results_entries
from benchmarks.compare.sizes import PRESET_QUICK, PRESETS, SIZES, STUDY
from benchmarks.compare.study import run_study
from benchmarks.compare.training import resolved_recipe
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.speech.data.annotations import ANNOTATION_KEYS
from fvae_asr.speech.data.word_corpus import WORD_LAYOUTS
from fvae_asr.speech.models.encoder import is_hub_id
from fvae_asr.speech.training.run_folder import PRECISIONS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the CI-sized study (or the preset at smoke size); a real corpus is
    checked here (its manifests prepared under ``--work``), before anything is written to ``--out``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/compare"),
        help="results, plots and the per-run records (default: %(default)s)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("results/compare"),
        help="corpora and training folders, large, not committed (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        choices=list(SIZES),
        help="study: the comparison (default); demo: the demo's corpus and budget for its two "
        "methods, to pick its rates; quick: a CI-sized smoke study",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same as --size quick; with --preset: the preset at smoke size "
        f"({', '.join(f'{k} {v}' for k, v in PRESET_QUICK.items())})",
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods (default: the size's)")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), help="adapter targets (default: the size's)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each (default: 1)")
    parser.add_argument(
        "--backbone", type=Path, help="Hugging Face wav2vec2 CTC directory (default: the shipped tiny backbone)"
    )
    parser.add_argument("--corpus-seed", type=int, help="seed of the generated corpora (default: 0)")
    parser.add_argument(
        "--shifts",
        nargs="+",
        choices=["target", "noisy_room", "accented"],
        help=f"synthetic shifts (default: {' '.join(STUDY['shifts'])})",
    )
    parser.add_argument(
        "--lr-grid", nargs="+", type=float, help=f"rates of every method (default: {STUDY['lr_grid']}, or the preset's)"
    )
    parser.add_argument(
        "--method-lr-grid",
        nargs="+",
        metavar="METHOD=RATE[,RATE]",
        default=[],
        help="a method's own rates, over --lr-grid (e.g. full=1e-4: a fixed rate)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help=f"training seeds (default: {STUDY['seeds']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default: {STUDY['epochs']}, or the recipe's)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"utterances per step and process (default: {STUDY['batch_size']}, or the recipe's)",
    )
    real = parser.add_argument_group("a real corpus (with --preset)")
    real.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="paper_timit: the paper's TIMIT setting; real_speech: the real-speech study (docs/real-speech.md); "
        "librispeech: the same comparison on LibriSpeech",
    )
    real.add_argument(
        "--corpus",
        choices=WORD_LAYOUTS,
        help="a corpus with word transcripts at --data_folder, in this layout (default: the preset's)",
    )
    real.add_argument("--data_folder", type=Path, help="TIMIT's root (with annotations: their $data_root)")
    for key in ANNOTATION_KEYS.values():
        real.add_argument(f"--{key}", type=Path, help="a CSV or JSON annotation (all three or none)")
    real.add_argument("--encoder_source", help="hub id or local Hugging Face directory (default: the preset's)")
    real.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    real.add_argument("--precision", choices=PRECISIONS, help="fp32 (default), bf16 or fp16")
    real.add_argument(
        "--launcher",
        choices=["inprocess", "torchrun"],
        help="inprocess (default): each run in a worker process; torchrun: each run on "
        "--nproc_per_node processes (DDP, one GPU each)",
    )
    real.add_argument("--nproc_per_node", type=int, help="processes of a torchrun run (default: 1)")
    args = parser.parse_args(argv)
    real_flags = (
        "corpus",
        "data_folder",
        *ANNOTATION_KEYS.values(),
        "encoder_source",
        "device",
        "precision",
        "launcher",
        "nproc_per_node",
    )
    given_real = [f"--{name}" for name in real_flags if getattr(args, name) is not None]
    if args.preset is None:
        if given_real:
            parser.error(f"{', '.join(given_real)}: only with --preset (a study on a real corpus)")
        size = dict(SIZES["quick" if args.quick else args.size or "study"])
        args.backbone = args.backbone or ASSET_BACKBONE
        args.corpus_seed = 0 if args.corpus_seed is None else args.corpus_seed
    else:
        synthetic = [
            flag
            for flag, value in (
                ("--size", args.size),
                ("--backbone", args.backbone),
                ("--corpus-seed", args.corpus_seed),
                ("--shifts", args.shifts),
            )
            if value is not None
        ]
        if synthetic:
            parser.error(f"{', '.join(synthetic)}: only for the synthetic study, not with --preset")
        size = preset_size(args, parser)
    for name in ("shifts", "lr_grid", "seeds", "epochs", "batch_size", "methods", "targets"):
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    if args.lr_grid is not None:
        size.pop("lr_grids", None)  # one grid for every method, unless --method-lr-grid says otherwise
    if args.method_lr_grid:
        size["lr_grids"] = {**size.get("lr_grids", {}), **method_grids(args.method_lr_grid, parser)}
    args.size = size
    if size["epochs"] < 1 or size["batch_size"] < 1 or args.jobs < 1:
        parser.error("--epochs, --batch-size and --jobs must be at least 1")
    if set(size["methods"]) & set(ABLATIONS) and "fvae_lora" not in size["methods"] and not size.get("tune_ablations"):
        parser.error("the ablations run at fvae_lora's picked rate: add fvae_lora to --methods")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in size["lr_grid"]):
        parser.error(f"--lr-grid needs positive finite rates, got {size['lr_grid']}")
    if args.preset is None and not (args.backbone / "config.json").is_file():
        parser.error(
            f"no wav2vec2 backbone at {args.backbone} (no config.json): build the shipped one with "
            "`python -m fvae_asr.demo.backbone`, or pass --backbone DIR"
        )
    return args


def method_grids(given: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, list[float]]:
    """``--method-lr-grid`` as method -> rates; a bad item is a usage error naming it."""
    grids = {}
    for item in given:
        method, _, rates = item.partition("=")
        try:
            grid = [float(rate) for rate in rates.split(",")]
        except ValueError:
            grid = []
        if method not in METHODS or not grid or any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
            parser.error(
                f"--method-lr-grid {item}: expected METHOD=RATE[,RATE...] with METHOD one of "
                f"{', '.join(METHODS)} and positive finite rates"
            )
        grids[method] = grid
    return grids


def preset_size(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A preset's study on the corpus of the command line (checked; ``args.corpus`` gets its recipe overrides
    and identity), with the recipe file's epochs and batch size, at smoke size with ``--quick``."""
    preset = PRESETS[args.preset]
    args.device = args.device or "cpu"
    args.precision = args.precision or "fp32"
    args.launcher = args.launcher or "inprocess"
    args.nproc_per_node = args.nproc_per_node or 1
    args.encoder_source = args.encoder_source or preset["encoder_source"]
    if args.launcher == "torchrun" and args.jobs != 1:
        parser.error("--launcher torchrun runs one training at a time on --nproc_per_node processes: drop --jobs")
    if args.nproc_per_node < 1 or (args.nproc_per_node > 1 and args.launcher != "torchrun"):
        parser.error("--nproc_per_node must be at least 1, and above 1 only with --launcher torchrun")
    local = Path(args.encoder_source)
    if not (local / "config.json").is_file() and not is_hub_id(args.encoder_source):
        parser.error(
            f"--encoder_source {args.encoder_source}: neither a Hugging Face model directory (with "
            "config.json) nor a hub id such as facebook/wav2vec2-large-lv60"
        )
    try:
        args.corpus = real_corpus(args, args.corpus or preset.get("corpus"))
    except (OSError, ValueError) as err:  # a missing or malformed corpus (AnnotationError is a ValueError)
        parser.error(str(err))
    tree = resolved_recipe(preset["recipe"], {})
    size = {
        "corpus": args.corpus["name"],
        "recipe": preset["recipe"],
        "encoder_source": shown_source(args.encoder_source),
        "precision": args.precision,
        "processes": args.nproc_per_node,
        "device": args.device,
        "epochs": preset.get("epochs", tree["number_of_epochs"]),
        "batch_size": preset.get("batch_size", tree["batch_size"]),
        "lr_grid": preset["lr_grid"],
        "lr_grids": preset["lr_grids"],
        "seeds": preset["seeds"],
        "shifts": [args.corpus["name"]],
        "methods": preset["methods"],
        "targets": preset["targets"],
        "tune_ablations": preset.get("tune_ablations", False),
    }
    return {**size, **PRESET_QUICK} if args.quick else size


def shown_source(source: str) -> str:
    """The encoder as results name it: a folder inside the checkout relative to it, so that committed results
    carry no machine's paths; anything else (a hub id, a folder elsewhere) as given."""
    path = Path(source).resolve()
    local = (path / "config.json").is_file() and path.is_relative_to(REPO)  # a hub id resolves under the cwd too
    return path.relative_to(REPO).as_posix() if local else source


def study_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a record depends on (no paths: the records stay valid wherever the folders live) and what a run needs
    besides: each corpus's recipe overrides, the encoder, the work folder, the commit and how runs are launched."""
    work, commit = str(args.work.resolve()), source_commit()
    if args.preset is None:  # the synthetic study: generated corpora, a local backbone, one CPU thread per run
        settings = {
            **{
                k: args.size[k]
                for k in ("train_speakers", "sentences_per_speaker", "test_speakers", "epochs", "batch_size")
            },
            "corpus_seed": args.corpus_seed,
            "backbone": backbone_digest(args.backbone),
        }
        data = {shift: {"data_folder": folder} for shift, folder in prepare_corpora(args).items()}
        return settings, {
            "data": data,
            "backbone": str(args.backbone.resolve()),
            "work": work,
            "commit": commit,
            "run_opts": {"noprogressbar": True},
            "torchrun": None,
        }
    local = Path(args.encoder_source)
    is_local = (local / "config.json").is_file()
    settings = {
        **{k: args.size[k] for k in ("recipe", "epochs", "batch_size", "precision", "processes")},
        "corpus": args.corpus["identity"],
        "backbone": backbone_digest(local) if is_local else args.encoder_source,
    }
    run_opts = {"noprogressbar": True, "device": args.device, "precision": args.precision}
    torchrun = args.nproc_per_node if args.launcher == "torchrun" else None
    if torchrun and args.device == "cpu":
        run_opts["distributed_backend"] = "gloo"  # NCCL needs GPUs
    return settings, {
        "data": {args.corpus["name"]: args.corpus["overrides"]},
        "work": work,
        "commit": commit,
        "backbone": str(local.resolve()) if is_local else args.encoder_source,
        "run_opts": run_opts,
        "torchrun": torchrun,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the study; write results.json, results.md and the plots; return the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s - %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings, paths = study_inputs(args)
    study = run_study(args, settings, paths)
    entries = results_entries(study)
    pairs = paired_differences(entries)
    effects = control_effects(entries)
    command = study_command("benchmarks.compare", argv)
    results = {
        "size": args.size,
        "settings": settings,
        "commit": paths["commit"],
        "command": command,
        "results": entries,
        "fvae_minus_lora": pairs,
        "controls": effects,
        "runs": [study.records[task] for task in study.due()],
        "seconds_this_call": round(time.perf_counter() - started, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = (
        "# Full tables\n\n"
        + markdown_tables(entries, pairs, args.size, effects)
        + f"\nMade by `{command}` at commit {paths['commit']}.\n"
    )
    (args.out / "results.md").write_text(table, encoding="utf-8")
    plot_dev_per(entries, args.size, args.out / "dev_per.png")
    plot_test_per(entries, args.size, args.out / "test_per.png")
    print(table)
    return results
