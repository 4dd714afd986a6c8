"""Recording what adapter layers compute while a model runs: per item (utterance, image...), the latent means of
its real frames (mu1 and mu2 for FVAE-LoRA, ``A x`` for LoRA) and the FVAE reconstruction errors.

Any model with adapter layers plugs in through ``run``: a function that runs the model on one batch and returns
the batch's real-frame mask (items, frames), True where a frame is real and not padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from fvae_asr.adapters import FVAELoRALinear, LoRALinear, adapter_layers, latent_ablation
from fvae_asr.adapters.layers import AdaptedLinear

Batch = TypeVar("Batch")
FEATURES = {"fvae_lora": ("z1", "z2"), "lora": ("Ax",)}  # what is recorded per adapter kind
# The FVAE reconstruction of a layer's input from (mu1, mu2) as trained, and with one latent at its prior mean.
RECONSTRUCTIONS = {"trained": {}, "z1_prior": {"z1": True}, "z2_prior": {"z2": True}}


@dataclass
class LayerRecord:
    """One adapter layer's recordings."""

    features: dict[str, list[Tensor]]  # latent name -> one (real frames, dim) float32 tensor per item
    squared_error: dict[str, float] = field(default_factory=dict)  # reconstruction -> sum over frames and dims
    input_sum: Tensor | None = None  # per input dim, over real frames (for the input's variance)
    input_square_sum: Tensor | None = None
    frames: int = 0

    def stacked(self, latent: str) -> Tensor:
        """(all real frames, dim): every item's frames in recording order."""
        return torch.cat(self.features[latent])

    def pooled(self, latent: str) -> Tensor:
        """(items, dim): each item's mean over its real frames."""
        return torch.stack([frames.mean(0) for frames in self.features[latent]])

    def add_reconstruction(self, inputs: Tensor, squared_errors: dict[str, float]) -> None:
        """Count the real frames' inputs (frames, d) and their summed squared reconstruction errors by setting."""
        inputs = inputs.double().cpu()
        if self.input_sum is None:
            self.input_sum = torch.zeros(inputs.shape[1:], dtype=torch.float64)
            self.input_square_sum = torch.zeros(inputs.shape[1:], dtype=torch.float64)
        self.input_sum += inputs.sum(0)
        self.input_square_sum += inputs.square().sum(0)
        for name, error in squared_errors.items():
            self.squared_error[name] = self.squared_error.get(name, 0.0) + error

    def active_units(self, latent: str, threshold: float = 0.01) -> int:
        """Dimensions whose mean varies across frames (variance above ``threshold``, Burda et al.'s active units):
        the others sit at one value whatever the input (a collapsed latent dimension)."""
        return int((self.stacked(latent).var(0) > threshold).sum())

    def reconstruction(self) -> dict[str, float | dict[str, float]]:
        """Mean squared reconstruction error per input element, by setting, beside the input's mean variance
        (the error of always answering the input's mean): 1 - mse / variance is the share of variance explained."""
        elements = self.frames * self.input_sum.numel()
        mean = self.input_sum / self.frames
        variance = (self.input_square_sum / self.frames - mean.square()).mean().item()
        return {
            "mse": {name: total / elements for name, total in self.squared_error.items()},
            "input_variance": variance,
        }


def adapter_kind(model: nn.Module) -> str:
    """``fvae_lora`` or ``lora``: the kind of the model's adapter layers; ValueError when it has none."""
    kinds = {
        "fvae_lora" if isinstance(layer, FVAELoRALinear) else "lora"
        for layer in adapter_layers(model)
        if isinstance(layer, (FVAELoRALinear, LoRALinear))
    }
    if not kinds:
        raise ValueError("the model has no adapter layers (FVAE-LoRA or LoRA): it has no latents to look at")
    if len(kinds) > 1:
        raise ValueError("the model mixes FVAE-LoRA and LoRA layers; record one kind at a time")
    return kinds.pop()


class LatentRecorder:
    """Forward hooks on every adapter layer; after each forward, ``end_batch(mask)`` keeps the real frames."""

    def __init__(self, model: nn.Module) -> None:
        self.kind = adapter_kind(model)
        self.layers: list[AdaptedLinear] = adapter_layers(model)
        self.records = {
            layer.adapter_name: LayerRecord({name: [] for name in FEATURES[self.kind]}) for layer in self.layers
        }
        self.frames_per_item: list[int] = []
        self._pending: dict[str, dict[str, Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> LatentRecorder:
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, layer: AdaptedLinear, args: tuple, output: Tensor) -> None:
        del output
        with torch.no_grad():
            self._pending[layer.adapter_name] = self._measure(layer, args[0].detach())

    def _measure(self, layer: AdaptedLinear, x: Tensor) -> dict[str, Tensor]:
        """Per-position values of one layer's input x (..., d): latents, and per-frame squared errors."""
        if isinstance(layer, LoRALinear):
            return {"Ax": layer.lora_A(x)}
        mu1, mu2 = layer.latent_means(x)
        values = {"z1": mu1, "z2": mu2, "input": x}
        for name, ablated in RECONSTRUCTIONS.items():
            with latent_ablation(layer, **ablated):
                values[f"error/{name}"] = (x - layer.reconstruction(x)).float().square().sum(-1)
        return values

    def end_batch(self, frame_mask: Tensor) -> None:
        """Keep, item by item, what the batch just run recorded at its real frames (``frame_mask`` (items, frames))."""
        missing = [name for name in self.records if name not in self._pending]
        if missing:
            raise ValueError(f"adapter layers {', '.join(missing[:4])} did not run in this batch")
        mask = frame_mask.bool()
        for name, values in self._pending.items():
            leading = tuple(values[FEATURES[self.kind][0]].shape[:-1])
            if leading != tuple(mask.shape):
                raise ValueError(
                    f"adapter layer '{name}' saw inputs of leading shape {leading}, but the frame mask "
                    f"has shape {tuple(mask.shape)}: its frames are not the model's frames"
                )
            self._keep(self.records[name], values, mask.to(values[FEATURES[self.kind][0]].device))
        self.frames_per_item += mask.sum(1).tolist()
        self._pending.clear()

    def _keep(self, record: LayerRecord, values: dict[str, Tensor], mask: Tensor) -> None:
        for latent, per_item in record.features.items():
            per_item += [item[real].float().cpu() for item, real in zip(values[latent], mask)]
        record.frames += int(mask.sum())
        if "input" in values:
            errors = {name: values[f"error/{name}"][mask].sum().item() for name in RECONSTRUCTIONS}
            record.add_reconstruction(values["input"][mask], errors)


def record_latents(model: nn.Module, batches: Iterable[Batch], run: Callable[[Batch], Tensor]) -> LatentRecorder:
    """Run ``run`` (model forward on a batch, returning its real-frame mask) on every batch, recording latents."""
    with LatentRecorder(model) as recorder, torch.no_grad():
        for batch in batches:
            recorder.end_batch(run(batch))
    return recorder
