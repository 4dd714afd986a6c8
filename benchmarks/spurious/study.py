"""The study's schedule: each tuned method's learning-rate grid with the first seed, then its other seeds at the
picked rate and the ablations at FVAE-LoRA's, run ``--jobs`` at a time; and the study's sizes."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import Any

from benchmarks.common.methods import ABLATIONS, CONTROLS, FACTOR_CONTROLS, LR_GRID, METHODS
from benchmarks.common.methods import TUNED as COMPARED_TUNED
from benchmarks.common.runner import picked_rate, run_due
from benchmarks.spurious.training import Task, read_record, run_task

logger = logging.getLogger("fvae_asr.spurious")

# The ablations, and the controls that put the package's 0.1 defaults back (all at once: fvae_lora_old; one at a
# time: FACTOR_CONTROLS), run at FVAE-LoRA's picked rate, so that each differs from it in its settings alone.
AT_FVAE_RATE = (*ABLATIONS, "fvae_lora_old", *FACTOR_CONTROLS)
STUDY_METHODS = [method for method in METHODS if method not in CONTROLS] + ["fvae_lora_old", *FACTOR_CONTROLS]
TUNED = tuple(method for method in COMPARED_TUNED if method in STUDY_METHODS and method not in AT_FVAE_RATE)

# The study's size, fixed before it ran. Per word: 240 training and 60 validation utterances (90 % with the
# word's own noise); test: 30 utterances per (word, noise) group.
STUDY_SIZE = {
    "train_per_class": 240,
    "val_per_class": 60,
    "test_per_group": 30,
    "rate": 0.9,
    "epochs": 6,
    "batch_size": 16,
    "lr_grid": LR_GRID,
    "seeds": [0, 1, 2],
    "methods": STUDY_METHODS,
}
SIZES = {
    "study": STUDY_SIZE,
    "quick": {
        **STUDY_SIZE,
        "train_per_class": 6,
        "val_per_class": 6,
        "test_per_group": 1,
        "rate": 0.5,
        "epochs": 1,
        "batch_size": 8,
        "lr_grid": [0.01],
        "seeds": [0],
    },
}


class Study:
    """Which runs are due: each tuned method's grid with the first seed, then its other seeds at the picked rate
    and the ablations and controls at FVAE-LoRA's."""

    def __init__(self, size: dict[str, Any]) -> None:
        self.size = size
        self.records: dict[Task, dict[str, Any]] = {}

    def grid(self, method: str) -> list[Task]:
        return [Task(method, lr, self.size["seeds"][0]) for lr in self.size["lr_grid"]]

    def picked_lr(self, method: str) -> float | None:
        """The grid's rate with the best validation accuracy, once the grid has run (ties: the lower rate)."""
        tuned = "fvae_lora" if method in AT_FVAE_RATE else method
        return picked_rate(self.grid(tuned), self.records, lambda record: -record["val_acc"])

    def due(self) -> list[Task]:
        """Every run whose inputs are known, in priority order (finished ones included)."""
        tasks: list[Task] = []
        methods = self.size["methods"]
        for method in (m for m in TUNED if m in methods):
            tasks += self.grid(method)
            lr = self.picked_lr(method)
            if lr is not None:
                tasks += [Task(method, lr, seed) for seed in self.size["seeds"][1:]]
        lr = self.picked_lr("fvae_lora") if "fvae_lora" in methods else None
        if lr is not None:
            tasks += [Task(m, lr, seed) for m in AT_FVAE_RATE if m in methods for seed in self.size["seeds"]]
        return tasks

    def final_tasks(self, method: str) -> list[Task]:
        lr = self.picked_lr(method)
        return [] if lr is None else [Task(method, lr, seed) for seed in self.size["seeds"]]


def run_study(args: argparse.Namespace, settings: dict[str, Any], paths: dict[str, str]) -> Study:
    """Run what is due, ``--jobs`` at a time, until every run has a record (finished ones are read, not rerun);
    with ``--report-only``, only read the records there are."""
    study = Study(args.size)
    run_due(
        study,
        jobs=args.jobs,
        finished=partial(read_record, args.out, settings=settings, exports=args.export),
        run=partial(run_task, settings=settings, paths=paths, out=args.out),
        describe=describe_run,
        logger=logger,
        start_runs=not args.report_only,
    )
    return study


def describe_run(record: dict[str, Any]) -> str:
    return (
        f"val {record['val_acc']:.1f}, test avg {record['avg_acc']:.1f}, worst group "
        f"{record['worst_group_acc']:.1f} ({record['seconds']:.0f} s)"
    )
