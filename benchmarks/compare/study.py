"""The study's schedule: each tuned method's learning-rate grid with the first seed, then its other seeds at the
picked rate and the ablations at FVAE-LoRA's, run ``--jobs`` at a time."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import Any

from benchmarks.common.methods import ABLATIONS, TUNED, targets_of
from benchmarks.common.runner import picked_rate, run_due
from benchmarks.compare.training import Task, dev_score, read_task_record, run_task

logger = logging.getLogger("fvae_asr.compare")


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
        return picked_rate(self.grid(shift, method, targets), self.records, dev_score)

    def tuned(self) -> tuple[str, ...]:
        """The methods that pick their own rate: the ablations too when the size says ``tune_ablations``."""
        return (*TUNED, *ABLATIONS) if self.size.get("tune_ablations") else TUNED

    def rate_from(self, method: str) -> str:
        """The method whose picked rate ``method`` runs at: its own, or FVAE-LoRA's for an untuned ablation."""
        return method if method in self.tuned() else "fvae_lora"

    def due(self) -> list[Task]:
        """Every run whose inputs are known, in priority order (finished ones included)."""
        tasks: list[Task] = []
        for shift in self.size["shifts"]:
            for method in (m for m in self.tuned() if m in self.size["methods"]):
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
                            if ablation in self.size["methods"] and ablation not in self.tuned()
                            for seed in self.size["seeds"]
                        ]
        return tasks

    def final_tasks(self, shift: str, method: str, targets: str) -> list[Task]:
        """The seed runs reported for a setting (at the picked rate; FVAE-LoRA's for untuned ablations)."""
        lr = self.picked_lr(shift, self.rate_from(method), targets)
        return [] if lr is None else [Task(shift, method, targets, lr, seed) for seed in self.size["seeds"]]


def run_study(args: argparse.Namespace, settings: dict[str, Any], paths: dict[str, Any]) -> Study:
    """Run what is due, ``--jobs`` at a time, until every run of the study has a record."""
    study = Study(args.size)
    run_due(
        study,
        jobs=args.jobs,
        finished=partial(read_task_record, args.out, settings=settings),
        run=partial(run_task, settings=settings, paths=paths, out=args.out),
        describe=lambda record: "diverged" if record.get("diverged") else f"test PER {record['test_per']:.2f}",
        logger=logger,
    )
    return study
