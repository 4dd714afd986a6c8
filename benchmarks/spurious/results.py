"""The study's figures: per method, the picked rate and the test accuracies of its seeds; FVAE-LoRA minus LoRA,
seed by seed."""

from __future__ import annotations

from typing import Any

from benchmarks.common.methods import ABLATIONS
from benchmarks.spurious.study import TUNED, Study


def results_entries(study: Study) -> list[dict[str, Any]]:
    """One entry per method: the picked rate, per-seed test figures and the validation scores of the grid."""
    entries = []
    for method in study.size["methods"]:
        tuned = "fvae_lora" if method in ABLATIONS else method
        runs = [study.records[t] for t in study.final_tasks(method) if t in study.records]
        gaps = [r["avg_acc"] - r["worst_group_acc"] for r in runs]
        entries.append(
            {
                "method": method,
                "lr": study.picked_lr(method),
                "lr_from": tuned,
                "lr_grid": study.size["lr_grid"],
                "val_acc_by_lr": {
                    f"{t.lr:g}": study.records[t]["val_acc"] for t in study.grid(tuned) if t in study.records
                }
                if method in TUNED
                else {},
                "seeds": [r["seed"] for r in runs],
                "avg_acc": [r["avg_acc"] for r in runs],
                "worst_group_acc": [r["worst_group_acc"] for r in runs],
                "gap": gaps,
                "val_acc": [r["val_acc"] for r in runs],
                "trainable_params": runs[0]["trainable_params"] if runs else None,
            }
        )
    return entries


def fvae_minus_lora(entries: list[dict[str, Any]]) -> dict[str, list[float]]:
    """FVAE-LoRA minus LoRA, seed by seed (the seeds both have), for average and worst-group accuracy."""
    by_method = {e["method"]: e for e in entries}
    if not {"fvae_lora", "lora"} <= by_method.keys():
        return {}
    fvae, lora = by_method["fvae_lora"], by_method["lora"]
    seeds = [seed for seed in fvae["seeds"] if seed in lora["seeds"]]
    return {
        key: [fvae[key][fvae["seeds"].index(s)] - lora[key][lora["seeds"].index(s)] for s in seeds]
        for key in ("avg_acc", "worst_group_acc")
    }
