"""A Hugging Face ``Trainer`` for models with fvae-asr adapters (``pip install fvae-asr[hf]``).

Build the model, ``fvae_asr.inject(model, config)`` (or wrap it with ``get_fvae_model``), then use ``FVAETrainer``
exactly like ``transformers.Trainer``.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import sort_checkpoints
from transformers.utils import can_return_loss, find_labels

from fvae_asr.adapters.checkpoint import CONFIG_NAME, load_adapter, save_adapter
from fvae_asr.adapters.model import aux_loss, aux_weight, has_adapters, loss_terms, set_frame_mask
from fvae_asr.adapters.optimizer import adam_eps, no_decay_parameter_names
from fvae_asr.adapters.peft_api import FVAEModel
from fvae_asr.files import read_json
from fvae_asr.integrations.frame_masks import audio_frame_mask, token_frame_mask

logger = logging.getLogger(__name__)

TRAINER_ADAM_EPS = 1e-8  # TrainingArguments.adam_epsilon's default


def incomplete_checkpoint(folder: str | os.PathLike) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from, or None: the Trainer writes ``trainer_state.json`` last, so
    a run stopped while saving leaves it missing or cut short."""
    try:
        read_json(Path(folder) / TRAINER_STATE_NAME, TRAINER_STATE_NAME)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that is complete; newer incomplete ones are logged and
    skipped. ValueError when there is none."""
    skipped = []
    for folder in reversed(sort_checkpoints(str(output_dir))):
        problem = incomplete_checkpoint(folder)
        if problem is None:
            for other, why in skipped:
                logger.warning("%s is incomplete (%s); resuming from %s", other, why, folder)
            return folder
        skipped.append((folder, problem))
    found = f" ({', '.join(f'{folder} is incomplete' for folder, _ in skipped)})" if skipped else ""
    raise ValueError(f"no complete checkpoint in {output_dir} to resume from{found}")


REENTRANT_CHECKPOINTING = (
    "FVAETrainer: reentrant activation checkpointing (use_reentrant=True) runs the checkpointed layers without "
    "autograd, so the FVAE auxiliary loss would have no gradient and the decoders would never train; use "
    "activation_checkpointing_kwargs={'use_reentrant': False} (the Trainer's default)"
)


class FVAETrainer(Trainer):
    """``transformers.Trainer`` that trains fvae-asr adapters: task loss + ``aux_weight * aux_loss`` in training.

    Logs the mean FVAE loss parts since the last log (``fvae_reconstruction``, ``fvae_kl_z1``, ``fvae_gamma``...),
    keeps padding out of the FVAE terms (see ``frame_mask_for``), and saves and resumes adapter-only checkpoints
    (``adapter_config.json`` + ``adapter_model.safetensors``); ``resume_from_checkpoint=True`` skips a checkpoint
    left incomplete by a kill. A model without adapters trains as with ``Trainer``.

    With adapters, gradient accumulation gives the gradients of the whole batch for both terms: each micro-batch's
    loss is its own (the model is not handed ``num_items_in_batch``, which models that take ``**kwargs``, such as
    BERT's or wav2vec2's heads, silently ignore) and the sum is divided by the accumulation steps; a
    ``compute_loss_func`` normalises over the accumulated batch as the Trainer documents, and the aux term follows.
    Activation checkpointing works in its default, non-reentrant form; the reentrant one is refused.
    One process or DDP (``torchrun``); DeepSpeed and FSDP shard the weights, which adapter saving does not handle.

    The optimiser follows the authors' rule, as the recipe's does (``fvae_asr.adapters.optimizer``): weight decay
    skips biases and normalisation weights, and with adapters AdamW's eps is 1e-8 x ``max_grad_norm`` (the
    authors' eps at their clipping norm of 1). The authors' recipe in these units is ``max_grad_norm=1e-3``, which
    gives eps 1e-11; an ``adam_epsilon`` set to anything but the Trainer's default 1e-8 is taken as it is.

    Args:
        model: the model, adapters injected (``fvae_asr.inject``) or loaded (``fvae_asr.load_adapter``).
        args: the ``TrainingArguments``.
        data_collator: as ``Trainer``'s.
        train_dataset: as ``Trainer``'s.
        eval_dataset: as ``Trainer``'s.
        processing_class: as ``Trainer``'s (a tokenizer, feature extractor or processor).
        **kwargs: ``Trainer``'s other arguments (``compute_metrics``, ``callbacks``, ``compute_loss_func``, ...).

    Raises:
        ValueError: DeepSpeed or FSDP, or reentrant activation checkpointing, with a model that has adapters.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if isinstance(self.model, FVAEModel):  # the Trainer reads labels off the wrapped model's class, as for PEFT's
            inner = type(self.model.get_base_model())
            self.label_names = find_labels(inner) if self.args.label_names is None else self.args.label_names
            self.can_return_loss = can_return_loss(inner)
        if has_adapters(self._adapted_model()):
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError("FVAETrainer supports one process or DDP; DeepSpeed and FSDP are not supported")
            checkpointing = self.args.activation_checkpointing_kwargs or {}
            if self.args.activation_checkpointing and checkpointing.get("use_reentrant") is True:
                raise ValueError(REENTRANT_CHECKPOINTING)
            self.model_accepts_loss_kwargs = False  # see the class docstring: one rule for the task and aux terms
        self._part_sums: dict[str, Tensor] = {}
        self._part_batches = 0
        self._in_training_step = False

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Every parameter but biases and normalisation weights: the authors' weight-decay groups."""
        exempt = no_decay_parameter_names(model)
        return [name for name, param in model.named_parameters() if param.requires_grad and name not in exempt]

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimiser, with Adam's eps by the authors' rule when the model has adapters and
        ``adam_epsilon`` is left at the Trainer's default (without clipping, ``max_grad_norm`` 0, eps stays)."""
        optimizer = super().create_optimizer(model)
        clipped = bool(self.args.max_grad_norm) and self.args.max_grad_norm > 0
        if clipped and has_adapters(self._adapted_model()) and self.args.adam_epsilon == TRAINER_ADAM_EPS:
            for group in optimizer.param_groups:
                if "eps" in group:
                    group["eps"] = adam_eps(self.args.max_grad_norm)
        return optimizer

    def _adapted_model(self, model: nn.Module | None = None) -> nn.Module:
        """The model that holds the adapters: unwrapped from DDP and from ``FVAEModel`` (its active adapter)."""
        model = self.accelerator.unwrap_model(model if model is not None else self.model, keep_torch_compile=False)
        return model.get_base_model() if isinstance(model, FVAEModel) else model

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the dataset columns the wrapped model's forward takes (``FVAEModel.forward`` takes any)."""
        if self._signature_columns is None and isinstance(self.model, FVAEModel):
            names = inspect.signature(self.model.get_base_model().forward).parameters
            self._signature_columns = [*names, *{"label", "label_ids", *self.label_names}]
        super()._set_signature_columns_if_needed()

    def frame_mask_for(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor | None:
        """The padding mask handed to the FVAE layers for this batch; override to change it.

        Token inputs: their ``attention_mask``; wav2vec2-style audio: its mask mapped to encoder frames; anything
        else (e.g. images, which have no padding): None. The mask must have the adapted layers' input shape
        without the feature dim: for an encoder-decoder model whose decoder is adapted, return None or your own.
        """
        audio = audio_frame_mask(model, inputs)
        return audio if audio is not None else token_frame_mask(inputs)

    def _task_loss_is_scaled_for_ga(self, num_items_in_batch: Tensor | int | None) -> bool:
        """The Trainer's own rule (``training_step``): is the returned loss already divided over the accumulation?"""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The Trainer's task loss, plus ``aux_weight * aux_loss`` in training (evaluation adds nothing)."""
        adapted = self._adapted_model(model)
        if not has_adapters(adapted):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        set_frame_mask(adapted, self.frame_mask_for(adapted, inputs))
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            if not self._in_training_step:  # a training step clears it after backward (see training_step)
                set_frame_mask(adapted, None)
        if not adapted.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        weight = aux_weight(adapted)
        if weight:
            aux = aux_loss(adapted)
            if torch.is_grad_enabled() and not aux.requires_grad and loss_terms(adapted):
                raise RuntimeError(REENTRANT_CHECKPOINTING)
            if self._task_loss_is_scaled_for_ga(num_items_in_batch):
                aux = aux / self.current_gradient_accumulation_steps
            loss = loss + weight * aux
        self._accumulate_parts(loss_terms(adapted))
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Tensor | Any], num_items_in_batch: Tensor | int | None = None
    ) -> Tensor:
        """The Trainer's step, with the batch's frame mask kept on the FVAE layers until backward is done: layers
        that activation checkpointing recomputes in backward then compute what they computed in the forward."""
        self._in_training_step = True
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._in_training_step = False
            set_frame_mask(self._adapted_model(model), None)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; ``resume_from_checkpoint=True`` resumes from the newest complete checkpoint (skipping,
        with a warning, one that a kill left incomplete), and a named incomplete checkpoint is a ValueError."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        elif resume_from_checkpoint:
            problem = incomplete_checkpoint(resume_from_checkpoint)
            if problem:
                raise ValueError(f"{resume_from_checkpoint} is incomplete ({problem}): cannot resume from it")
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _accumulate_parts(self, parts: dict[str, Tensor]) -> None:
        if not parts:
            return
        for key, value in parts.items():
            self._part_sums[key] = self._part_sums.get(key, 0.0) + value
        self._part_batches += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean FVAE loss parts of the micro-batches since the last training log (averaged over ranks)."""
        if "loss" in logs and self._part_batches:
            for key, total in self._part_sums.items():
                mean = (total / self._part_batches).detach().reshape(1)
                logs[f"fvae_{key}"] = nested_gather(mean, self.args.parallel_mode).mean().item()
        if "loss" in logs or "train_loss" in logs:  # a window left at the end of training is not carried over
            self._part_sums, self._part_batches = {}, 0
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Adapter-only files when the model has adapters (the training arguments beside them); else the Trainer's."""
        adapted = self._adapted_model()
        if not has_adapters(adapted):
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return None
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        save_adapter(adapted, output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Load the adapter weights of an adapter-only checkpoint; other checkpoints load as in the Trainer."""
        adapted = self._adapted_model(model)
        if has_adapters(adapted) and os.path.isfile(os.path.join(resume_from_checkpoint, CONFIG_NAME)):
            load_adapter(adapted, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end`` for adapter-only checkpoints."""
        adapted = self._adapted_model()
        best = self.state.best_model_checkpoint
        if has_adapters(adapted) and os.path.isfile(os.path.join(best, CONFIG_NAME)):
            load_adapter(adapted, best)
            return
        super()._load_best_model()
