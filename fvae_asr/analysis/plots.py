"""Figures of a latent analysis (matplotlib's Agg canvas, no pyplot state): probe accuracy per layer against
chance, 2-D projections of the latents coloured by label, and a metric (the PER, a classifier's accuracy) when z1 is
ablated layer by layer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from fvae_asr.analysis.probes import UNLABELED, ProbeTask
from fvae_asr.files import write_atomically

LATENT_STYLES = {"z1": ("tab:blue", "o"), "z2": ("tab:orange", "s"), "Ax": ("tab:green", "^")}
METRIC_NAMES = {
    "per": "PER (%)",
    "accuracy": "average group accuracy (%)",
    "worst_group_accuracy": "worst-group accuracy (%)",
}
COLORED_CLASSES = 8  # the most frequent classes get a colour each in projections, the others are grey


def short_names(names: Sequence[str]) -> list[str]:
    """Layer names without the dotted prefix they all share (``encoder.model.``)."""
    parts = [name.split(".") for name in names]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return [".".join(p[shared:]) for p in parts]


def _save(figure: Figure, path: Path) -> None:
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def plot_probe_accuracy(report: dict, path: Path) -> None:
    """One panel per probe: held-out accuracy of each latent across the adapted layers, chance dashed."""
    layers, probes = report["layers"], list(report["probes"])
    figure = Figure(figsize=(max(6.0, 0.32 * len(layers) + 2), 2.8 * len(probes)), layout="constrained")
    FigureCanvasAgg(figure)
    x = list(range(len(layers)))
    for row, probe in enumerate(probes):
        axes = figure.add_subplot(len(probes), 1, row + 1)
        for latent in report["latents"]:
            color, marker = LATENT_STYLES.get(latent, ("black", "o"))
            axes.plot(x, [layer["probe"][probe][latent] for layer in layers], marker=marker, color=color, label=latent)
        axes.axhline(report["probes"][probe]["chance"], color="grey", linestyle="--", label="chance")
        axes.set_ylim(0, 1.02)
        axes.set_ylabel("accuracy")
        axes.set_title(
            f"{probe} probe (held out: {report['probes'][probe]['held_out']}; "
            f"{report['probes'][probe]['classes']} classes)",
            fontsize=10,
        )
        axes.set_xticks(
            x,
            short_names([layer["layer"] for layer in layers]) if row == len(probes) - 1 else [],
            rotation=90,
            fontsize=7,
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="upper right", ncols=len(report["latents"]) + 1)
    _save(figure, path)


def projection_layers(names: Sequence[str], count: int = 3) -> list[str]:
    """The layers shown in projections: the first, the middle and the last adapted one (fewer if fewer)."""
    picks = sorted({round(i * (len(names) - 1) / max(count - 1, 1)) for i in range(min(count, len(names)))})
    return [names[i] for i in picks]


def pca_2d(features: Tensor) -> Tensor:
    """The first two principal components of (frames, dim) features (zeros where there is no variance)."""
    centered = features - features.mean(0)
    if centered.abs().max() == 0:
        return torch.zeros(len(features), 2)
    _, _, basis = torch.pca_lowrank(centered, q=min(2, features.shape[1]), center=False, niter=4)
    projected = centered @ basis
    return torch.nn.functional.pad(projected, (0, 2 - projected.shape[1]))


def plot_projections(
    features: dict[str, dict[str, Tensor]],
    task: ProbeTask,
    path: Path,
    max_points: int = 2000,
    seed: int = 0,
    unit: str = "frames",
) -> None:
    """Rows: layers; columns: latents; each a 2-D PCA of the (labelled) frames (or other ``unit``s, such as
    utterances) coloured by ``task``'s label."""
    labeled = (task.labels != UNLABELED).nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    chosen = labeled[torch.randperm(len(labeled), generator=generator)[:max_points]]
    labels = task.labels[chosen]
    frequent = [label for label, _ in Counter(labels.tolist()).most_common(COLORED_CLASSES)]
    layers = list(features)
    latents = list(features[layers[0]])
    figure = Figure(figsize=(4 * len(latents) + 1.5, 3.6 * len(layers)), layout="constrained")
    FigureCanvasAgg(figure)
    names = short_names(layers)
    for row, layer in enumerate(layers):
        for col, latent in enumerate(latents):
            axes = figure.add_subplot(len(layers), len(latents), row * len(latents) + col + 1)
            points = pca_2d(features[layer][latent][chosen].double())
            others = ~torch.isin(labels, torch.tensor(frequent))
            axes.scatter(points[others, 0], points[others, 1], s=3, color="lightgrey", label="other")
            for rank, label in enumerate(frequent):
                mine = labels == label
                axes.scatter(points[mine, 0], points[mine, 1], s=3, color=f"C{rank}", label=task.classes[label])
            axes.set_title(f"{latent} of {names[row]}", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
    handles, legend_labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="outside right center", markerscale=4, fontsize=8, title=task.name)
    figure.suptitle(f"PCA of the latent means, coloured by {task.name} ({len(chosen)} {unit})", fontsize=10)
    _save(figure, path)


def plot_ablation(report: dict, metric: str, path: Path) -> None:
    """A metric of ``report["ablations"]`` with z1 at its prior mean in each layer alone (bars), as trained and in
    all layers (lines)."""
    layers, per = report["layers"], report["ablations"][metric]
    name = METRIC_NAMES.get(metric, metric)
    figure = Figure(figsize=(max(6.0, 0.32 * len(layers) + 2), 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = list(range(len(layers)))
    bars = [layer[f"{metric}_z1_prior"] for layer in layers]
    axes.bar(x, bars, color="tab:blue", label="z1 = 0 in this layer only")
    axes.axhline(per["trained"], color="black", label=f"as trained ({per['trained']:.1f})")
    axes.axhline(
        per["z1_prior_all_layers"],
        color="tab:red",
        linestyle="--",
        label=f"z1 = 0 in every layer ({per['z1_prior_all_layers']:.1f})",
    )
    axes.set_xticks(x, short_names([layer["layer"] for layer in layers]), rotation=90, fontsize=7)
    top = max(*bars, per["trained"], per["z1_prior_all_layers"])
    axes.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    axes.set_ylabel(name)
    axes.set_title(f"{name.split(' (')[0]} with z1 replaced by its prior mean", fontsize=10)
    axes.legend(fontsize=8, loc="upper right", ncols=3)
    axes.grid(alpha=0.3, axis="y")
    _save(figure, path)
