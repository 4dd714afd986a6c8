"""One run of the study: a method through the TIMIT recipe (in this process or under torchrun), its dev PER per
epoch, parameter counts and record; the settings a record must match, read from the recipe as it stands."""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

from benchmarks.common.methods import METHODS, SHARED, TARGETS
from benchmarks.common.records import (
    read_record,
    write_record,
)
from benchmarks.compare.sizes import DEMO_RECIPE
from fvae_asr.adapters.optimizer import OPTIMIZER_RULE
from fvae_asr.files import read_json
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.training.hparams import hparams_source
from fvae_asr.speech.training.resume import NonFiniteTrainingError

NOT_RUN_AT_INFERENCE = ("encoder_z2.", "decoder.", "decoder_std")  # FVAE parts that only train


EPOCH_LINE = re.compile(r"^epoch: (\d+),.*valid PER: ([-+0-9.eE]+|nan|inf)", re.MULTILINE)


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


def dev_score(record: dict[str, Any]) -> float:
    """What picks a rate: the run's best dev PER; a diverged run (its loss went non-finite) can never be picked."""
    return math.inf if record.get("diverged") else min(record["dev_per"])


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
    and full), the gradient clipping and the optimiser rule, read from the recipe and the package as they stand, so
    that a changed default runs again. Only these objects are built from the recipe (not its encoder, which may be
    a hub id). Fields that only change how the adapter computes (``computation_only``) are left out: they change no
    result."""
    tree = resolved_recipe(recipe, run_overrides(method, targets))
    stream = io.StringIO()
    ruamel.yaml.YAML().dump({key: tree[key] for key in ("method", "adapter_configs", "max_grad_norm")}, stream)
    hparams = load_hyperpyyaml(stream.getvalue())
    config = hparams["adapter_configs"].get(hparams["method"])
    training = {"max_grad_norm": hparams["max_grad_norm"], "optimizer_rule": OPTIMIZER_RULE}
    if config is None:
        return {"adapter_config": None, **training}
    values = {key: value for key, value in config.to_dict().items() if key not in config.computation_only}
    return {"adapter_config": values, **training}


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
    # This worker came from the fork server, so its DataLoader workers would too, and they cannot pickle the
    # recipe's audio pipeline: fork them, as train.py's are on Linux (train.yaml loads audio in 2 workers; demo.yaml
    # in none).
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
    try:
        if paths["torchrun"]:
            result = torchrun_recipe(recipe, paths["run_opts"], overrides, paths["torchrun"], folder)
        else:
            result = run(recipe, paths["run_opts"], overrides)
    except NonFiniteTrainingError as err:  # a rate too high for the method: a result of the grid, not a failure
        record = {
            **asdict(task),
            "diverged": str(err),
            "commit": paths["commit"],
            "settings": task_settings(task, settings),
        }
        write_record(out, task, record)
        return record
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
        "train_stats": result["train_stats"],  # the loss terms before training and by epoch (FVAE terms too)
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
