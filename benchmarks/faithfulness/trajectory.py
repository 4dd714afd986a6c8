"""Our FVAE-LoRA training against the authors', step for step: their layers and their optimiser set-up beside ours
and our optimiser rule, on the same batches, noise and dropout masks, for a number of steps.

A small model in the shape of their image runs: two adapted projections (``query`` and ``value``, their
``target_modules``) of a frozen base, summed, mean-pooled over frames and fed to a trainable ``classifier`` (their
``modules_to_save``). Theirs: their ``FVAEPEFTLoraLayerWrapped`` (``check.build_authors_layer``); the loss
``1000 * CE + the mean of the layers' losses`` (their FVAEPEFTModel's forward); AdamW in their two groups, by their
name list (``bias``, ``LayerNorm.weight``), lr 5e-3, eps 1e-8, weight decay 0.01 (``image_model.py``,
``configure_optimizers``); their linear warm-up schedule (``transformers.get_linear_schedule_with_warmup``,
stepped after each optimiser step, as Lightning's ``interval: step``); Lightning's ``gradient_clip_val=1.0``
replayed as Lightning does it, ``torch.nn.utils.clip_grad_norm_`` over every parameter of the optimiser's groups.
Ours: ``inject`` with ``FVAELoRAConfig`` defaults (its ``lora_alpha`` set to their exact scale,
8 / (16 + 1e-5) * rank, so that their one remaining epsilon is matched), ``CE + aux_weight * aux_loss``, the
recipe's optimiser (``ResumableBrain``: ``weight_decay_groups``, eps ``adam_eps(1e-3)``, one clip at 1e-3 over
every group) and schedule (SpeechBrain's ``LinearWarmupScheduler``, stepped as ``ResumableBrain`` steps it).
Their weights start from their initialisation and are copied into ours; their noise is replayed into ours.
Reports, at the chosen steps, the largest relative difference max |ours - theirs| / max |theirs| of every
trainable parameter, and the loss (ours times 1000 against theirs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from speechbrain.nnet.schedulers import LinearWarmupScheduler
from torch import Tensor, nn
from transformers import get_linear_schedule_with_warmup

from benchmarks.faithfulness.check import NoiseTape, authors_loss, build_authors_layer, parameter_map
from fvae_asr.adapters import FVAELoRAConfig, aux_loss, aux_weight, inject
from fvae_asr.adapters.optimizer import MAX_GRAD_NORM, adam_eps, weight_decay_groups

TARGETS = ("query", "value")
THEIR_NO_DECAY = ("bias", "LayerNorm.weight")  # image_model.py, configure_optimizers
THEIR_TASK_WEIGHT = 1000.0  # their lambda_downstream
THEIR_CLIP, THEIR_EPS = 1.0, 1e-8
LR, WEIGHT_DECAY, WARMUP_RATIO = 5e-3, 0.01, 0.1
DRAWS_PER_THEIR_LAYER = 7  # two encoder masks, eps for z1 and z2, three decoder masks


class PooledProjections(nn.Module):
    """x (B, T, d) -> classifier(mean over T of query(x) + value(x)): (B, classes)."""

    def __init__(self, query: nn.Module, value: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.query, self.value, self.classifier = query, value, classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier((self.query(x) + self.value(x)).mean(1))


def build_pair(
    config_cls: type, layer_cls: type, features: int, classes: int, rank: int, dtype: torch.dtype, seed: int
) -> tuple[PooledProjections, PooledProjections]:
    """(theirs, ours) on the same frozen bases and classifier, ours holding their initial adapter weights."""
    torch.manual_seed(seed)
    bases = {name: nn.Linear(features, features).requires_grad_(False) for name in TARGETS}
    classifier = nn.Linear(features, classes)
    theirs = PooledProjections(
        *(build_authors_layer(config_cls, layer_cls, bases[name], rank) for name in TARGETS), classifier
    ).to(dtype)
    their_scaling = theirs.query.scaling["default"] / (rank + 1e-5)  # as their forward divides it
    ours = PooledProjections(
        *(nn.Linear(features, features).requires_grad_(False) for _ in TARGETS), nn.Linear(features, classes)
    ).to(dtype)
    ours.load_state_dict(_base_state(theirs))
    config = FVAELoRAConfig(
        rank=rank, lora_alpha=their_scaling * rank, target_modules=list(TARGETS), trainable_modules=["classifier"]
    )
    inject(ours, config)
    mapping = parameter_map(config.decoder_layers)
    their_params, our_params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    with torch.no_grad():
        for target in TARGETS:
            for our_name, their_name in mapping.items():
                our_params[f"{target}.{our_name}"].copy_(their_params[f"{target}.{their_name}"])
    return theirs, ours


def _base_state(theirs: PooledProjections) -> dict[str, Tensor]:
    """Their frozen bases and classifier under the names of a plain PooledProjections of nn.Linear layers."""
    state = {
        f"{name}.{leaf}": getattr(getattr(theirs, name).get_base_layer(), leaf)
        for name in TARGETS
        for leaf in ("weight", "bias")
    }
    state.update({f"classifier.{k}": v for k, v in theirs.classifier.state_dict().items()})
    return state


def their_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """``configure_optimizers`` of their image_model.py, on this model's names."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {
                "params": [p for n, p in named if not any(nd in n for nd in THEIR_NO_DECAY)],
                "weight_decay": WEIGHT_DECAY,
            },
            {"params": [p for n, p in named if any(nd in n for nd in THEIR_NO_DECAY)], "weight_decay": 0.0},
        ],
        lr=LR,
        eps=THEIR_EPS,
    )


def our_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """The recipe's: ResumableBrain.init_optimizers with the yaml's AdamW(lr, weight_decay)."""
    return torch.optim.AdamW(weight_decay_groups(model), lr=LR, weight_decay=WEIGHT_DECAY, eps=adam_eps(MAX_GRAD_NORM))


def merge_layer_masks(records: list[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    """Their tape of a model forward (7 draws per layer) as ours draws it: each layer's two encoder masks as one."""
    if len(records) % DRAWS_PER_THEIR_LAYER:
        raise RuntimeError(f"{len(records)} draws are not whole layers of {DRAWS_PER_THEIR_LAYER}")
    merged = []
    for start in range(0, len(records), DRAWS_PER_THEIR_LAYER):
        (k1, m1), (k2, m2), *rest = records[start : start + DRAWS_PER_THEIR_LAYER]
        if (k1, k2) != ("dropout", "dropout"):
            raise RuntimeError(f"expected a layer's two encoder dropout masks first, got {k1} and {k2}")
        merged += [("dropout", torch.cat([m1, m2], dim=-1)), *rest]
    return merged


def relative_differences(theirs: nn.Module, ours: nn.Module) -> dict[str, float]:
    """max |ours - theirs| / max |theirs| of every trainable parameter of ours, by our name."""
    mapping = parameter_map(ours.query.config.decoder_layers)
    their_params = dict(theirs.named_parameters())
    out = {}
    for name, param in ours.named_parameters():
        if not param.requires_grad:
            continue
        target, _, local = name.partition(".")
        their_name = f"{target}.{mapping[local]}" if target in TARGETS else name
        their_value = their_params[their_name].detach()
        out[name] = ((param.detach() - their_value).abs().max() / their_value.abs().max()).item()
    return out


def train_side_by_side(
    theirs: PooledProjections,
    ours: PooledProjections,
    batches: Sequence[tuple[Tensor, Tensor]],
    report_at: Sequence[int],
    on_report: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Trains both for ``len(batches)`` steps; after each step in ``report_at``, a report of the differences."""
    steps = len(batches)
    warmup = math.floor(WARMUP_RATIO * steps)  # int(), as image_model.py
    their_opt = their_optimizer(theirs)
    their_schedule = get_linear_schedule_with_warmup(their_opt, warmup, steps)
    our_opt = our_optimizer(ours)
    our_schedule = LinearWarmupScheduler(LR, round(WARMUP_RATIO * steps), steps)
    for group in our_opt.param_groups:  # ResumableBrain.on_fit_start: the rate of the first step
        group["lr"] = our_schedule.calculate_lr(our_schedule.current_step)
    their_params = [p for g in their_opt.param_groups for p in g["params"]]
    our_params = [p for g in our_opt.param_groups for p in g["params"]]
    reports = []
    for step, (x, y) in enumerate(batches, start=1):
        theirs.train(), ours.train()
        tape = NoiseTape()
        with tape.active():
            their_logits = theirs(x)
        their_loss = THEIR_TASK_WEIGHT * F.cross_entropy(their_logits, y) + sum(
            authors_loss(getattr(theirs, name)) for name in TARGETS
        ) / len(TARGETS)
        their_opt.zero_grad(set_to_none=True)
        their_loss.backward()
        torch.nn.utils.clip_grad_norm_(their_params, THEIR_CLIP)  # Lightning's gradient_clip_val, algorithm "norm"
        their_opt.step()
        their_schedule.step()

        replay = NoiseTape(merge_layer_masks(tape.records))
        with replay.active():
            our_logits = ours(x)
        if replay.remaining():
            raise RuntimeError(f"our model drew {replay.remaining()} fewer noise tensors than theirs")
        our_loss = F.cross_entropy(our_logits, y) + aux_weight(ours) * aux_loss(ours)
        our_opt.zero_grad(set_to_none=True)
        our_loss.backward()
        torch.nn.utils.clip_grad_norm_(our_params, MAX_GRAD_NORM)  # ResumableBrain.optimizers_step
        our_opt.step()
        our_schedule(our_opt)  # ResumableBrain.on_fit_batch_end: the rate of the next step

        if step in report_at:
            differences = relative_differences(theirs, ours)
            report = {
                "step": step,
                "largest_relative_difference": max(differences.values()),
                "worst_parameter": max(differences, key=differences.get),
                "relative_difference_by_parameter": differences,
                "loss_authors": their_loss.item(),
                "loss_ours_times_1000": THEIR_TASK_WEIGHT * our_loss.item(),
                "learning_rates": [their_opt.param_groups[0]["lr"], our_opt.param_groups[0]["lr"]],
            }
            reports.append(report)
            if on_report is not None:
                on_report(step, report)
    return reports


def random_batches(
    steps: int, batch: int, frames: int, features: int, classes: int, dtype: torch.dtype, seed: int
) -> list[tuple[Tensor, Tensor]]:
    """Inputs with a learnable class (the sign pattern of two projections of the frame mean) for every step."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(features, 2, generator=generator, dtype=dtype)
    batches = []
    for _ in range(steps):
        x = torch.randn(batch, frames, features, generator=generator, dtype=dtype)
        signs = (x.mean(1) @ direction > 0).long()
        batches.append((x, (signs[:, 0] * 2 + signs[:, 1]) % classes))
    return batches
