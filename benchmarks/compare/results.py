"""The study's figures: per method, targets and shift, the picked rate and the seeds' test PER; FVAE-LoRA minus
LoRA, seed by seed; and each control beside the method it varies."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.common.methods import CONTROLS, SHARED, targets_of
from benchmarks.common.records import (
    mean_std,
)
from benchmarks.compare.study import Study
from benchmarks.compare.training import dev_score


def results_entries(study: Study) -> list[dict[str, Any]]:
    """One entry per (method, targets, shift); frozen and full appear under both target settings."""
    entries = []
    for shift in study.size["shifts"]:
        for targets in study.size["targets"]:
            for method in study.size["methods"]:
                own = SHARED if targets_of(method) == [SHARED] else targets
                tuned = study.rate_from(method)
                grid = study.grid(shift, tuned, own)
                finished = [study.records[t] for t in study.final_tasks(shift, method, own) if t in study.records]
                runs = [r for r in finished if not r.get("diverged")]
                timed = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"] is not None]
                entries.append(
                    {
                        "method": method,
                        "targets": targets,
                        "shift": shift,
                        "lr_grid": [t.lr for t in grid],
                        "dev_per_by_lr": {  # None: the run diverged
                            f"{t.lr:g}": None if math.isinf(score := dev_score(study.records[t])) else score
                            for t in grid
                            if t in study.records
                        }
                        if method in study.tuned()
                        else {},
                        "lr": study.picked_lr(shift, tuned, own),
                        "lr_from": tuned,
                        "seeds": [r["seed"] for r in runs],
                        "diverged_seeds": [r["seed"] for r in finished if r.get("diverged")],
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
        if method is None:
            continue
        trained = {
            name: [p for p in e["dev_per_by_lr"].values() if p is not None]
            for name, e in (("recipe", method), ("control", entry))
        }
        if not all(trained.values()):  # a grid not run yet, or every rate of it diverged
            continue
        dev = {name: min(pers) for name, pers in trained.items()}  # the best over the rates that trained
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
