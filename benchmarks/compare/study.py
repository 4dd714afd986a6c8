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
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import multiprocessing
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.common.records import (
    backbone_digest,
    mean_std,
    read_record,
    source_commit,
    study_command,
    write_record,
)
from benchmarks.common.runner import picked_rate, run_due
from fvae_asr.demo import size as demo_size
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.files import read_json
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.annotations import ANNOTATION_KEYS, read_annotation
from fvae_asr.speech.data.timit import SPLITS, prepare_timit
from fvae_asr.speech.models.encoder import is_hub_id
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.training.hparams import hparams_source
from fvae_asr.speech.training.run_folder import PRECISIONS
from fvae_asr.synthetic import generate_corpus

logger = logging.getLogger("fvae_asr.compare")

TARGETS: dict[str, list[str]] = {
    "qk": ["q_proj", "k_proj"],
    "all_linear": ["projection", "q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"],
}
SHARED = "shared"  # the targets key of frozen and full fine-tuning, which have no adapters
# method -> recipe overrides; nested keys override the arguments of the adapter config objects.
METHODS: dict[str, dict[str, Any]] = {
    "frozen": {"adapter": "frozen"},
    "lora": {"adapter": "lora"},
    "fvae_lora": {"adapter": "fvae_lora"},
    "full": {"adapter": "full"},
    "delta0": {"adapter": "fvae_lora", "adapter_configs": {"fvae_lora": {"delta": 0.0, "beta_z2": 1.0}}},
    "same_prior": {"adapter": "fvae_lora", "adapter_configs": {"fvae_lora": {"prior_mean_z2": 0.0}}},
    # Controls: the authors' LoRA-baseline clipping (norm 1 on the plain task loss), and this package's 0.1 defaults.
    "lora_task_clip": {"adapter": "lora", "max_grad_norm": 1.0},
    "fvae_lora_old": {
        "adapter": "fvae_lora",
        "max_grad_norm": 5.0,
        "fvae_lora_alpha": 16,
        "adapter_configs": {"fvae_lora": {"decoder_layers": 1, "decoder_dropout": 0.0, "logvar_clamp": 10.0}},
    },
}
# Each with its own grid; the ablations use fvae_lora's rate.
TUNED = ("frozen", "lora", "fvae_lora", "full", "lora_task_clip", "fvae_lora_old")
ABLATIONS = ("delta0", "same_prior")
CONTROLS = {"lora_task_clip": "lora", "fvae_lora_old": "fvae_lora"}  # control -> the method it varies
NOT_RUN_AT_INFERENCE = ("encoder_z2.", "decoder.", "decoder_log_scale")  # FVAE parts that only train
EPOCH_LINE = re.compile(r"^epoch: (\d+),.*valid PER: ([-+0-9.eE]+|nan|inf)", re.MULTILINE)

# The study's size, fixed before it ran (see the README): small enough for 96 runs in a few hours on 2 cores.
STUDY = {
    "train_speakers": 32,
    "sentences_per_speaker": 8,
    "test_speakers": 16,
    "epochs": 4,
    "batch_size": 8,
    "lr_grid": [0.0005, 0.001, 0.003, 0.01, 0.05],
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
PRESETS: dict[str, dict[str, Any]] = {
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


@dataclass(frozen=True)
class Task:
    """One training run: a method with its target setting, on one shift, at one learning rate and seed."""

    shift: str
    method: str
    targets: str
    lr: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.shift}/{self.targets}/{self.method}/lr{self.lr:g}/seed{self.seed}"


def targets_of(method: str, targets: Sequence[str] = tuple(TARGETS)) -> list[str]:
    """The target settings (of ``targets``) a method runs under (frozen and full have no adapters)."""
    return [SHARED] if METHODS[method]["adapter"] in ("frozen", "full") else list(targets)


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
    real.add_argument("--preset", choices=list(PRESETS), help="paper_timit: the paper's TIMIT setting")
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
    if set(size["methods"]) & set(ABLATIONS) and "fvae_lora" not in size["methods"]:
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
        args.corpus = real_corpus(args)
    except (OSError, ValueError) as err:  # a missing or malformed corpus (AnnotationError is a ValueError)
        parser.error(str(err))
    tree = resolved_recipe(preset["recipe"], {})
    size = {
        "corpus": args.corpus["name"],
        "recipe": preset["recipe"],
        "encoder_source": args.encoder_source,
        "precision": args.precision,
        "processes": args.nproc_per_node,
        "device": args.device,
        "epochs": tree["number_of_epochs"],
        "batch_size": tree["batch_size"],
        "lr_grid": preset["lr_grid"],
        "lr_grids": preset["lr_grids"],
        "seeds": preset["seeds"],
        "shifts": [args.corpus["name"]],
        "methods": preset["methods"],
        "targets": preset["targets"],
    }
    return {**size, **PRESET_QUICK} if args.quick else size


def real_corpus(args: argparse.Namespace) -> dict[str, Any]:
    """The corpus of the command line: TIMIT at ``--data_folder`` (its manifests prepared under ``--work``, which
    checks its layout and labels) or the three annotations (read and checked). Returns its name, the recipe
    overrides that name it, and its identity for the records: utterances per split and a digest of what the
    recipe trains on (each utterance's id, duration and phones), wherever the files live."""
    annotations = {split: getattr(args, key) for split, key in ANNOTATION_KEYS.items()}
    if any(annotations.values()):
        missing = [f"--{ANNOTATION_KEYS[split]}" for split, path in annotations.items() if path is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not given: a corpus given by annotations needs all three")
        root = str(args.data_folder.resolve()) if args.data_folder else None
        entries = {split: read_annotation(path, root).entries for split, path in annotations.items()}
        overrides = {ANNOTATION_KEYS[split]: str(path.resolve()) for split, path in annotations.items()}
        name, overrides = "annotations", {**overrides, **({"data_folder": root} if root else {})}
    elif args.data_folder is not None:
        manifests = prepare_timit(args.data_folder, args.work / "corpus" / "timit_manifests")
        entries = {split: read_json(path, "TIMIT manifest") for split, path in zip(SPLITS, manifests)}
        name, overrides = "timit", {"data_folder": str(args.data_folder.resolve())}
    else:
        raise ValueError(
            "--preset needs a corpus: --data_folder of TIMIT, or --train_annotation, "
            "--valid_annotation and --test_annotation"
        )
    content = {
        split: sorted((utt, entry["duration"], entry["phn"]) for utt, entry in split_entries.items())
        for split, split_entries in entries.items()
    }
    digest = hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]
    identity = {"name": name, "utterances": {split: len(e) for split, e in entries.items()}, "sha256": digest}
    return {"name": name, "overrides": overrides, "identity": identity}


def prepare_corpora(args: argparse.Namespace) -> dict[str, str]:
    """One generated TIMIT-layout corpus per shift under ``WORK/corpus/<shift>`` (generated once)."""
    size = args.size
    return {
        shift: str(
            generate_corpus(
                args.work / "corpus" / shift,
                seed=args.corpus_seed,
                n_train_speakers=size["train_speakers"],
                n_test_speakers=size["test_speakers"],
                sentences_per_speaker=size["sentences_per_speaker"],
                domain=shift,
            ).resolve()
        )
        for shift in size["shifts"]
    }


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


def parameter_counts(export: str) -> tuple[int, int]:
    """All parameters of the exported recogniser, and those that run at inference (FVAE's z2 encoder and
    decoder only train)."""
    model, _ = load_recognizer(export)
    named = list(model.named_parameters())
    used = sum(p.numel() for name, p in named if not any(part in name for part in NOT_RUN_AT_INFERENCE))
    return sum(p.numel() for _, p in named), used


def resolved_recipe(recipe: str, overrides: dict[str, Any]) -> Any:
    """A recipe file (``recipe_file`` name) with ``overrides``, its references resolved, as a yaml tree: tags kept,
    no object built (nothing is loaded or downloaded)."""
    corpus = {"data_folder": "unread"}  # a !PLACEHOLDER; none of the settings read from this tree depend on it
    path, merged = hparams_source(recipe_file(recipe), {**corpus, **overrides})
    with open(path, encoding="utf-8") as fin:
        return ruamel.yaml.YAML().load(resolve_references(fin, merged))


@cache
def recipe_settings(method: str, targets: str, recipe: str = DEMO_RECIPE) -> dict[str, Any]:
    """What a run of ``method`` trains with beyond the study's size: the resolved adapter config (None for frozen
    and full) and the gradient clipping, read from the recipe as it stands, so that a changed default runs again.
    Only these objects are built from the recipe (not its encoder, which may be a hub id). Fields that only change
    how the adapter computes (``computation_only``) are left out: they change no result."""
    tree = resolved_recipe(recipe, run_overrides(method, targets))
    stream = io.StringIO()
    ruamel.yaml.YAML().dump({key: tree[key] for key in ("adapter", "adapter_configs", "max_grad_norm")}, stream)
    hparams = load_hyperpyyaml(stream.getvalue())
    config = hparams["adapter_configs"].get(hparams["adapter"])
    if config is None:
        return {"adapter_config": None, "max_grad_norm": hparams["max_grad_norm"]}
    values = {key: value for key, value in config.to_dict().items() if key not in config.computation_only}
    return {"adapter_config": values, "max_grad_norm": hparams["max_grad_norm"]}


def run_overrides(method: str, targets: str) -> dict[str, Any]:
    """The recipe overrides that make ``method`` on ``targets``."""
    overrides = dict(METHODS[method])
    if targets != SHARED:
        overrides["target_modules"] = TARGETS[targets]
    return overrides


def task_settings(task: Task, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's record must match: the study's, then the method's own."""
    return {**settings, **recipe_settings(task.method, task.targets, settings.get("recipe", DEMO_RECIPE))}


def read_task_record(out: Path, task: Task, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run's record if it was made with the study's ``settings`` and the method's own."""
    return read_record(out, task, task_settings(task, settings))


def run_task(task: Task, settings: dict[str, Any], paths: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train and test one run in its own folder (resuming there), one thread (or under torchrun, as ``paths``
    says); write and return its record.

    ``seconds_per_epoch`` is the time of ``fit`` (training plus the dev pass) over the epochs trained in this
    call, so a resumed run still gets a fair figure; None when no epoch was left to train.
    """
    torch.set_num_threads(1)
    # This worker was spawned, so its DataLoader workers would be too, and they cannot pickle the recipe's audio
    # pipeline: fork them, as train.py's are on Linux (train.yaml loads audio in 2 workers; demo.yaml in none).
    multiprocessing.set_start_method("fork", force=True)
    logging.basicConfig(level=logging.WARNING)
    folder = Path(paths["work"]) / "runs" / task.key
    train_log = folder / "train_log.txt"
    before = epochs_logged(train_log)
    overrides: dict[str, Any] = {
        **run_overrides(task.method, task.targets),
        "seed": task.seed,
        "lr": task.lr,
        "output_folder": str(folder),
        **paths["data"][task.shift],
        "encoder_source": paths["backbone"],
        "number_of_epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
    }
    recipe = recipe_file(settings.get("recipe", DEMO_RECIPE))
    if paths["torchrun"]:
        result = torchrun_recipe(recipe, paths["run_opts"], overrides, paths["torchrun"], folder)
    else:
        result = run(recipe, paths["run_opts"], overrides)
    trained_now = epochs_logged(train_log) - before
    test = result["test"]
    total, used_at_inference = parameter_counts(result["export"])
    record = {
        **asdict(task),
        "test_per": test["per"],
        **{key: test[key] for key in ("insertions", "deletions", "substitutions", "reference_phones")},
        "dev_per": dev_per_by_epoch(train_log, settings["epochs"]),
        "trainable_params_train": result["trainable_parameters"],
        "total_params": total,
        "params_inference": used_at_inference,
        "seconds_per_epoch": result["train_seconds"] / trained_now if trained_now else None,
        "commit": paths["commit"],
        "settings": task_settings(task, settings),
    }
    write_record(out, task, record)
    return record


def torchrun_recipe(
    recipe: Path, run_opts: dict[str, Any], overrides: dict[str, Any], nproc: int, folder: Path
) -> dict[str, Any]:
    """One recipe run on ``nproc`` processes (DDP): ``recipe_process.py`` under torchrun, its output in
    ``folder/torchrun.log``; returns what the recipe returned. A failed run raises, naming its log."""
    folder.mkdir(parents=True, exist_ok=True)
    result_file = folder / "recipe_result.json"
    result_file.unlink(missing_ok=True)  # a result left by an earlier call is not this one's
    flags = [f"--{key}" if value is True else f"--{key}={value}" for key, value in run_opts.items()]  # argparse's
    flags += [f"--{key}={json.dumps(value)}" for key, value in overrides.items()]  # JSON is YAML, as train.py reads it
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(Path(__file__).with_name("recipe_process.py")),
        str(result_file),
        str(recipe),
        *flags,
    ]
    log = folder / "torchrun.log"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        returncode = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if returncode != 0 or not result_file.is_file():
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"the recipe under torchrun failed (exit {returncode}); its log is {log}:\n{tail}")
    return read_json(result_file, "recipe result")


class Study:
    """Which runs exist and which are due: the grid first, then the seeds at each picked rate (priority by shift,
    so that an interrupted study leaves whole shifts finished)."""

    def __init__(self, size: dict[str, Any]) -> None:
        self.size = size
        self.records: dict[Task, dict[str, Any]] = {}

    def grid(self, shift: str, method: str, targets: str) -> list[Task]:
        """The first seed's runs over the method's rates (its own grid in ``lr_grids``, else ``lr_grid``)."""
        seed = self.size["seeds"][0]
        rates = self.size.get("lr_grids", {}).get(method, self.size["lr_grid"])
        return [Task(shift, method, targets, lr, seed) for lr in rates]

    def picked_lr(self, shift: str, method: str, targets: str) -> float | None:
        """The grid's rate with the lowest best-epoch dev PER, once the whole grid has run (ties: lower rate)."""
        return picked_rate(self.grid(shift, method, targets), self.records, lambda record: min(record["dev_per"]))

    def due(self) -> list[Task]:
        """Every run whose inputs are known, in priority order (finished ones included)."""
        tasks: list[Task] = []
        for shift in self.size["shifts"]:
            for method in (m for m in TUNED if m in self.size["methods"]):
                for targets in targets_of(method, self.size["targets"]):
                    tasks += self.grid(shift, method, targets)
                    lr = self.picked_lr(shift, method, targets)
                    if lr is None:
                        continue
                    tasks += [Task(shift, method, targets, lr, seed) for seed in self.size["seeds"][1:]]
                    if method == "fvae_lora":
                        tasks += [
                            Task(shift, ablation, targets, lr, seed)
                            for ablation in ABLATIONS
                            if ablation in self.size["methods"]
                            for seed in self.size["seeds"]
                        ]
        return tasks

    def final_tasks(self, shift: str, method: str, targets: str) -> list[Task]:
        """The seed runs reported for a setting (at the picked rate; FVAE-LoRA's for the ablations)."""
        tuned = "fvae_lora" if method in ABLATIONS else method
        lr = self.picked_lr(shift, tuned, targets)
        return [] if lr is None else [Task(shift, method, targets, lr, seed) for seed in self.size["seeds"]]


def run_study(args: argparse.Namespace, settings: dict[str, Any], paths: dict[str, Any]) -> Study:
    """Run what is due, ``--jobs`` at a time, until every run of the study has a record."""
    study = Study(args.size)
    run_due(
        study,
        jobs=args.jobs,
        finished=partial(read_task_record, args.out, settings=settings),
        run=partial(run_task, settings=settings, paths=paths, out=args.out),
        describe=lambda record: f"test PER {record['test_per']:.2f}",
        logger=logger,
    )
    return study


def results_entries(study: Study) -> list[dict[str, Any]]:
    """One entry per (method, targets, shift); frozen and full appear under both target settings."""
    entries = []
    for shift in study.size["shifts"]:
        for targets in study.size["targets"]:
            for method in study.size["methods"]:
                own = SHARED if targets_of(method) == [SHARED] else targets
                tuned = "fvae_lora" if method in ABLATIONS else method
                grid = study.grid(shift, tuned, own)
                runs = [study.records[t] for t in study.final_tasks(shift, method, own) if t in study.records]
                timed = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"] is not None]
                entries.append(
                    {
                        "method": method,
                        "targets": targets,
                        "shift": shift,
                        "lr_grid": [t.lr for t in grid],
                        "dev_per_by_lr": {
                            f"{t.lr:g}": min(study.records[t]["dev_per"]) for t in grid if t in study.records
                        }
                        if method in TUNED
                        else {},
                        "lr": study.picked_lr(shift, tuned, own),
                        "lr_from": tuned,
                        "seeds": [r["seed"] for r in runs],
                        "test_per": [r["test_per"] for r in runs],
                        "dev_per_curves": [r["dev_per"] for r in runs],
                        "trainable_params_train": runs[0]["trainable_params_train"] if runs else None,
                        "params_inference": runs[0]["params_inference"] if runs else None,
                        "total_params": runs[0]["total_params"] if runs else None,
                        "seconds_per_epoch": statistics.fmean(timed) if timed else None,
                        "target_independent": own == SHARED,
                    }
                )
    return entries


def paired_differences(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FVAE-LoRA minus LoRA test PER, seed by seed, per (targets, shift): mean and range."""
    index = {(e["method"], e["targets"], e["shift"]): e for e in entries}
    pairs = []
    for (method, targets, shift), fvae in index.items():
        lora = index.get(("lora", targets, shift))
        if method != "fvae_lora" or lora is None:
            continue
        by_seed = dict(zip(lora["seeds"], lora["test_per"]))
        diffs = [per - by_seed[seed] for seed, per in zip(fvae["seeds"], fvae["test_per"]) if seed in by_seed]
        pairs.append(
            {
                "targets": targets,
                "shift": shift,
                "seeds": len(diffs),
                "mean": statistics.fmean(diffs) if diffs else None,
                "min": min(diffs, default=None),
                "max": max(diffs, default=None),
            }
        )
    return pairs


def control_effects(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each control beside the method it varies, per (targets, shift): best dev PER over each one's own grid (the
    first seed) and mean test PER; ``recipe_helped`` says whether the recipe's setting won on dev."""
    index = {(e["method"], e["targets"], e["shift"]): e for e in entries}
    effects = []
    for (control, targets, shift), entry in index.items():
        method = index.get((CONTROLS.get(control), targets, shift))
        if method is None or not entry["dev_per_by_lr"] or not method["dev_per_by_lr"]:
            continue
        dev = {name: min(e["dev_per_by_lr"].values()) for name, e in (("recipe", method), ("control", entry))}
        effects.append(
            {
                "method": method["method"],
                "control": control,
                "targets": targets,
                "shift": shift,
                "dev_per_recipe": dev["recipe"],
                "dev_per_control": dev["control"],
                "test_per_recipe": mean_std(method["test_per"])[0],
                "test_per_control": mean_std(entry["test_per"])[0],
                "recipe_helped": dev["recipe"] < dev["control"],
            }
        )
    return effects


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_tables(
    entries: list[dict[str, Any]], pairs: list[dict[str, Any]], size: dict[str, Any], effects: list[dict[str, Any]]
) -> str:
    """A table per (shift, targets), the paired FVAE-LoRA - LoRA differences, then what the controls show."""
    synthetic = "train_speakers" in size
    trained = (
        f"({size['train_speakers']} x {size['sentences_per_speaker']} training utterances)"
        if synthetic
        else f"on {size['corpus']} with {size['encoder_source']} (batch {size['batch_size']} per process, "
        f"processes: {size['processes']}, {size['precision']})"
    )
    lines = [
        f"Test PER (%) after {size['epochs']} epochs {trained}; mean ± sample std over seeds at each method's "
        "picked learning rate (best dev PER over the grid with the first seed; the ablations use FVAE-LoRA's).",
        "",
    ]
    for shift in size["shifts"]:
        for targets in size["targets"]:
            lines += [
                f"**{shift}, adapters on {targets}** (frozen and full do not depend on the targets)",
                "",
                "| method | lr | dev PER by lr | seeds | test PER mean ± std | trainable params (train) | "
                "params at inference | s / epoch |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for e in entries:
                if (e["shift"], e["targets"]) != (shift, targets):
                    continue
                mean, std = mean_std(e["test_per"])
                grid = ", ".join(f"{lr}: {per:.1f}" for lr, per in e["dev_per_by_lr"].items()) or f"({e['lr_from']}'s)"
                lines.append(
                    f"| {e['method']} | {_fmt(e['lr'], 'g')} | {grid} | {len(e['seeds'])} | "
                    f"{_fmt(mean)} ± {_fmt(std)} | {_fmt(e['trainable_params_train'], ',')} | "
                    f"{_fmt(e['params_inference'], ',')} | {_fmt(e['seconds_per_epoch'], '.1f')} |"
                )
            lines.append("")
    if pairs:
        lines += [
            "**Paired difference, FVAE-LoRA minus LoRA test PER, same seed** (negative: FVAE-LoRA better)",
            "",
            "| shift | targets | seeds | mean | range |",
            "|---|---|---|---|---|",
        ]
    for p in pairs:
        lines.append(
            f"| {p['shift']} | {p['targets']} | {p['seeds']} | {_fmt(p['mean'], '+.2f')} | "
            f"[{_fmt(p['min'], '+.2f')}, {_fmt(p['max'], '+.2f')}] |"
        )
    if effects:
        lines += [
            "",
            "**What the recipe does**: each method under the common recipe (clip 1e-3; FVAE-LoRA with the "
            "authors' defaults) beside its control, each at its own best rate; best dev PER over the grid "
            "(first seed), mean test PER",
            "",
            "| shift | targets | method | control | dev PER, recipe | dev PER, control | recipe better on dev | "
            "test PER, recipe | test PER, control |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for e in effects:
        lines.append(
            f"| {e['shift']} | {e['targets']} | {e['method']} | {e['control']} | {e['dev_per_recipe']:.2f} | "
            f"{e['dev_per_control']:.2f} | {'yes' if e['recipe_helped'] else 'no'} | "
            f"{_fmt(e['test_per_recipe'])} | {_fmt(e['test_per_control'])} |"
        )
    timing = "one thread per run" if synthetic else f"on {size['device']}, processes per run: {size['processes']}"
    lines += [
        "",
        f"s / epoch: wall time of training plus the dev pass per epoch, {timing}, mean over the "
        "seeds timed; params at inference exclude FVAE's z2 encoder and decoder, which only train.",
    ]
    return "\n".join(lines) + "\n"


def _settings_grid(size: dict[str, Any]) -> list[tuple[str, str]]:
    return [(shift, targets) for shift in size["shifts"] for targets in size["targets"]]


def plot_dev_per(entries: list[dict[str, Any]], size: dict[str, Any], path: Path) -> None:
    """Dev PER per epoch at the picked rates, one panel per (shift, targets): mean over seeds, +/- std band."""
    panels = _settings_grid(size)
    figure = Figure(figsize=(6 * len(size["targets"]), 4 * len(size["shifts"])), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (shift, targets) in enumerate(panels):
        axes = figure.add_subplot(len(size["shifts"]), len(size["targets"]), index + 1)
        for e in entries:
            if (e["shift"], e["targets"]) != (shift, targets) or not e["dev_per_curves"]:
                continue
            curves = list(zip(*e["dev_per_curves"]))
            mean = [statistics.fmean(c) for c in curves]
            std = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in curves]
            epochs = range(1, len(mean) + 1)
            (line,) = axes.plot(epochs, mean, marker="o", label=f"{e['method']} (lr {e['lr']:g})")
            axes.fill_between(
                epochs,
                [m - s for m, s in zip(mean, std)],
                [m + s for m, s in zip(mean, std)],
                color=line.get_color(),
                alpha=0.15,
            )
        axes.set(xlabel="epoch", ylabel="dev PER (%)", title=f"{shift}, adapters on {targets}")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def plot_test_per(entries: list[dict[str, Any]], size: dict[str, Any], path: Path) -> None:
    """Test PER per method with +/- std error bars, grouped by (shift, targets)."""
    panels = _settings_grid(size)
    figure = Figure(figsize=(3 + 2.5 * len(panels), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    methods = size["methods"]
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        means, stds = [], []
        for shift, targets in panels:
            entry = next(e for e in entries if (e["method"], e["shift"], e["targets"]) == (method, shift, targets))
            mean, std = mean_std(entry["test_per"])
            means.append(math.nan if mean is None else mean)
            stds.append(0.0 if std is None else std)
        positions = [p + (m - (len(methods) - 1) / 2) * width for p in range(len(panels))]
        axes.bar(positions, means, width, yerr=stds, capsize=3, label=method)
    axes.set_xticks(range(len(panels)), [f"{shift}\n{targets}" for shift, targets in panels])
    axes.set(ylabel="test PER (%)", title="Test PER at each method's picked learning rate (mean ± std over seeds)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncols=3)
    figure.savefig(path, dpi=110)


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
    table = f"`{command}` at commit {paths['commit']}.\n\n" + markdown_tables(entries, pairs, args.size, effects)
    (args.out / "results.md").write_text(table, encoding="utf-8")
    plot_dev_per(entries, args.size, args.out / "dev_per.png")
    plot_test_per(entries, args.size, args.out / "test_per.png")
    print(table)
    return results
