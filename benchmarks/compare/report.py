"""The study's report: results.md's tables and the two plots (dev PER per epoch, test PER per method)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.common.records import (
    mean_std,
)


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
    ablations = (
        "each method and ablation at its own rate" if size.get("tune_ablations") else "the ablations use FVAE-LoRA's"
    )
    lines = [
        f"Test PER (%) after {size['epochs']} epochs {trained}; mean ± sample std over seeds at each method's "
        f"picked learning rate (best dev PER over the grid with the first seed; {ablations}).",
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
                grid = (
                    ", ".join(
                        f"{lr}: {'diverged' if per is None else f'{per:.1f}'}" for lr, per in e["dev_per_by_lr"].items()
                    )
                    or f"({e['lr_from']}'s)"
                )
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
