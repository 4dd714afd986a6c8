"""One run of the study: the pooled classifier with a method's adapters, trained by the protocol, scored group by
group, and its record."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from speechbrain.nnet.schedulers import LinearWarmupScheduler

from benchmarks.common.methods import FACTOR_CONTROLS, METHODS, TARGETS
from benchmarks.common.records import read_record as finished_record
from benchmarks.common.records import write_record
from benchmarks.spurious.corpus import NOISES, SPLITS, WORDS, load_split
from fvae_asr.adapters import FVAELoRAConfig, LoRAConfig, aux_loss, aux_weight, loss_terms
from fvae_asr.adapters.optimizer import MAX_GRAD_NORM, OPTIMIZER_RULE, authors_adamw
from fvae_asr.speech.models.classifier import PooledClassifier
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import description_path, export_model
from fvae_asr.speech.models.training_methods import configure_training, count_parameters

TARGET_MODULES = TARGETS["all_linear"]
SPURIOUS_METHODS = {**METHODS, **FACTOR_CONTROLS}  # the comparison study's methods and the one-factor controls


def pad_batch(wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, S) waveforms and their relative lengths (B,), as SpeechBrain batches them."""
    longest = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, torch.tensor([len(w) / longest for w in wavs])


@dataclass(frozen=True)
class Task:
    """One training run: a method at one learning rate and seed."""

    method: str
    lr: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/lr{self.lr:g}/seed{self.seed}"


def adapter_config(method: str) -> FVAELoRAConfig | LoRAConfig | None:
    """The method's adapter config (None for frozen and full)."""
    kind = SPURIOUS_METHODS[method]["method"]
    overrides = SPURIOUS_METHODS[method].get("adapter_configs", {}).get(kind, {})
    if kind == "fvae_lora":
        if "fvae_lora_alpha" in SPURIOUS_METHODS[method]:
            overrides = {**overrides, "lora_alpha": SPURIOUS_METHODS[method]["fvae_lora_alpha"]}
        return FVAELoRAConfig(target_modules=TARGET_MODULES, trainable_modules=["head"], **overrides)
    if kind == "lora":
        return LoRAConfig(dropout=0.1, target_modules=TARGET_MODULES, trainable_modules=["head"], **overrides)
    return None


def max_grad_norm(method: str) -> float:
    """The method's clipping norm: the recipe's (the authors' in our units) unless a control sets another."""
    return SPURIOUS_METHODS[method].get("max_grad_norm", MAX_GRAD_NORM)


def task_settings(task: Task, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's record must match: the study's, then the method's adapter config, clipping and
    optimiser rule."""
    config = adapter_config(task.method)
    return {
        **settings,
        "adapter_config": None if config is None else config.to_dict(),
        "max_grad_norm": max_grad_norm(task.method),
        "optimizer_rule": OPTIMIZER_RULE,
    }


def build_model(method: str, backbone: str, seed: int) -> PooledClassifier:
    """The pooled classifier with the method's adapters injected (or its weights set to train); seeded."""
    torch.manual_seed(seed)
    model = PooledClassifier(SSLEncoder(backbone), len(WORDS))
    configure_training(model, SPURIOUS_METHODS[method]["method"], adapter_config(method))
    return model


@torch.no_grad()
def correct_predictions(model: PooledClassifier, split: dict[str, Any], batch_size: int) -> torch.Tensor:
    """Whether the model (in eval mode) gets each utterance of a split right: a bool tensor."""
    model.eval()
    predictions = [
        model(*pad_batch(split["wavs"][start : start + batch_size])).argmax(-1)
        for start in range(0, len(split["wavs"]), batch_size)
    ]
    return torch.cat(predictions) == split["label"]


def group_accuracies(correct: torch.Tensor, split: dict[str, Any]) -> dict[str, float]:
    """Accuracy (%) per (class, nuisance) group present in the split, keyed ``word/noise``."""
    accuracies = {}
    for c, word in enumerate(WORDS):
        for n, noise in enumerate(NOISES):
            members = (split["label"] == c) & (split["nuisance"] == n)
            if members.any():
                accuracies[f"{word}/{noise}"] = 100.0 * correct[members].float().mean().item()
    return accuracies


def train(
    model: PooledClassifier, split: dict[str, Any], task: Task, settings: dict[str, Any]
) -> dict[str, list[float]]:
    """The protocol's training, with the authors' optimiser set-up (``authors_adamw``); returns the mean of each
    epoch's training loss (``loss``) and, with FVAE layers, of each FVAE term (``reconstruction``, ``kl_z1``,
    ``gamma``, ``aux``...), so that a record shows whether the VAE trained."""
    batch_size, epochs = settings["batch_size"], settings["epochs"]
    n = len(split["wavs"])
    steps = epochs * -(-n // batch_size)
    clip = max_grad_norm(task.method)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = authors_adamw(model, task.lr, weight_decay=0.01, max_grad_norm=clip)
    scheduler = LinearWarmupScheduler(task.lr, round(0.1 * steps), steps)
    order = torch.Generator().manual_seed(task.seed)
    history: dict[str, list[float]] = {}
    for _ in range(epochs):
        model.train()
        sums: dict[str, float] = {}
        for batch in torch.randperm(n, generator=order).split(batch_size):
            scheduler(optimizer)  # the rate of this step (the schedule's step 1 first, never a step at rate 0)
            logits = model(*pad_batch([split["wavs"][i] for i in batch]))
            loss = F.cross_entropy(logits, split["label"][batch]) + aux_weight(model) * aux_loss(model)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, clip)
            optimizer.step()
            parts = {"loss": loss, **{"aux" if k == "total" else k: v for k, v in loss_terms(model).items()}}
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(batch)
        for name, total in sums.items():
            history.setdefault(name, []).append(total / n)
    return history


def export_path(exports: Path, task: Task) -> Path:
    return exports / task.key


def read_record(out: Path, task: Task, settings: dict[str, Any], exports: Path | None = None) -> dict[str, Any] | None:
    """The finished run's record if it was made with these settings (and, with ``exports``, its model exported)."""
    if exports is not None and not description_path(export_path(exports, task)).is_file():
        return None
    return finished_record(out, task, task_settings(task, settings))


def run_task(task: Task, settings: dict[str, Any], paths: dict[str, str], out: Path) -> dict[str, Any]:
    """Train and evaluate one run on one thread; write and return its record."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    corpus = Path(paths["corpus"])
    splits = {split: load_split(corpus, split) for split in SPLITS}
    model = build_model(task.method, paths["backbone"], task.seed)
    history = train(model, splits["train"], task, settings)
    val_correct = correct_predictions(model, splits["val"], settings["batch_size"])
    test_groups = group_accuracies(correct_predictions(model, splits["test"], settings["batch_size"]), splits["test"])
    trainable, total = count_parameters(model)
    if "exports" in paths:
        export_model(
            model, SPURIOUS_METHODS[task.method]["method"], list(WORDS), export_path(Path(paths["exports"]), task)
        )
    record = {
        "method": task.method,
        "lr": task.lr,
        "seed": task.seed,
        "val_acc": 100.0 * val_correct.float().mean().item(),
        "val_group_acc": group_accuracies(val_correct, splits["val"]),
        "avg_acc": statistics.fmean(test_groups.values()),
        "worst_group_acc": min(test_groups.values()),
        "test_group_acc": test_groups,
        "train_loss": history.pop("loss"),
        "train_fvae_terms": history,  # per epoch; empty without FVAE layers
        "trainable_params": trainable,
        "total_params": total,
        "seconds": round(time.perf_counter() - started, 1),
        "commit": paths["commit"],
        "settings": task_settings(task, settings),
    }
    write_record(out, task, record)
    return record
