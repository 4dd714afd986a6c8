"""A SpeechBrain ``Brain`` whose runs resume exactly: the bookkeeping a recipe's Brain inherits, so that the recipe
keeps only its method (forward, objectives, what each stage reports).

Its checkpoints also hold the random generators and the running sums of the epoch in progress, so a run resumed
from any checkpoint trains and logs as the uninterrupted run would have; the learning-rate schedule steps once per
optimiser step and is rebuilt when ``number_of_epochs`` changes; a non-finite training loss stops the run.
The optimiser is set up as the authors' FVAE-LoRA code did, for every method alike (``fvae_asr.adapters.optimizer``):
weight decay skips biases and normalisation weights, Adam's eps follows the clipping norm, and the gradient norm
is clipped over every trainable parameter at once.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from fvae_asr.adapters.optimizer import adam_eps, weight_decay_groups
from fvae_asr.speech.training.resume import NonFiniteTrainingError, RandomStates
from fvae_asr.speech.training.run_folder import RunSettingsError
from fvae_asr.speech.training.train_logger import BEFORE_TRAINING

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class ResumableBrain(sb.Brain):
    """Expects hparams ``lr_scheduler`` (stepped per optimiser step), ``epoch_counter`` and ``train_logger``.

    Subclasses record the terms of their training loss with ``log_loss_parts`` and call ``super()`` in
    ``on_stage_start`` and ``on_stage_end``; after the training stage, ``train_stats`` holds the epoch's mean loss
    and the mean of each logged term, and ``epoch_rates`` the learning rates of its first and last steps.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.random_states = RandomStates()
        self.resumed_epoch: dict | None = None  # sums of the epoch in progress, from an intra-epoch checkpoint
        self.loss_parts: dict[str, float] = defaultdict(float)
        self.epoch_rates: list[float] = []  # learning rates of the epoch's first and latest steps
        self.train_stats: dict[str, float] = {}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("random_states", self.random_states)

    def init_optimizers(self):
        """One optimiser over the authors' two weight-decay groups, with Adam's eps for ``max_grad_norm``
        (``adam_eps``) unless the yaml's ``opt_class`` sets ``eps`` itself."""
        if self.opt_class is None:
            return super().init_optimizers()
        given = self.opt_class.keywords if isinstance(self.opt_class, functools.partial) else {}
        eps = {} if "eps" in given else {"eps": adam_eps(self.max_grad_norm)}
        self.optimizer = self.opt_class(weight_decay_groups(self.modules), **eps)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def optimizers_step(self):
        """SpeechBrain's step, with the gradient norm clipped over all of an optimiser's parameter groups at
        once, as the authors clip every trainable parameter (SpeechBrain clips each optimiser's first group
        only, which would leave the no-decay group unclipped)."""
        optimizers = self.freeze_optimizers(self.optimizers_dict)
        for optimizer in optimizers.values():
            self.scaler.unscale_(optimizer)
            params = [param for group in optimizer.param_groups for param in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if not self.scaler.is_enabled() and self.skip_nonfinite_grads:
            self.check_gradients()
        for optimizer in optimizers.values():
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def log_loss_parts(self, **parts: torch.Tensor) -> None:
        """Add this batch's loss terms to the epoch's sums (logged as means at the end of the epoch); a fresh
        run's first batch, scored before any update, is also logged on its own line ("before training")."""
        values = {name: value.detach().item() for name, value in parts.items()}
        if self.hparams.epoch_counter.current == 1 and self.step == 1 and not self.loss_parts:
            self.hparams.train_logger.log_stats(
                stats_meta={BEFORE_TRAINING: "first batch"}, train_stats=values, verbose=False
            )
        for name, value in values.items():
            self.loss_parts[name] += value
        self.loss_parts["batches"] += 1

    def check_loss_isfinite(self, loss: torch.Tensor) -> None:
        """Stop at the first non-finite training loss (SpeechBrain's default skips a few first): a diverged run
        must end with an error that says so, not a NaN checkpoint that every later run calls damaged."""
        if not torch.isfinite(loss):
            raise NonFiniteTrainingError(
                f"the training loss is {loss.item()} at epoch {self.hparams.epoch_counter.current}, step "
                f"{self.step} (learning rate {self.optimizer.param_groups[0]['lr']:.3g}): the run diverged; nothing "
                "of it after its last checkpoint is saved. Lower the learning rate and pass --restart=True"
            )

    def on_fit_start(self):
        """Optimiser ready and the latest checkpoint recovered: refuse fewer epochs than were trained; rebuild
        the schedule if ``number_of_epochs`` changed (the checkpoint's schedule ends at the old count); set the
        rate of the next step from the schedule, so the first step trains at the warm-up's first value."""
        scheduler = self.hparams.lr_scheduler
        planned = (scheduler.num_warmup_steps, scheduler.num_training_steps)
        super().on_fit_start()
        counter = self.hparams.epoch_counter
        if counter.current > counter.limit:
            raise RunSettingsError(
                f"{self.checkpointer.checkpoints_dir}: this run has trained {counter.current} epochs, more than "
                f"number_of_epochs={counter.limit}; raise it, or pass --restart=True to start afresh"
            )
        recovered = (scheduler.num_warmup_steps, scheduler.num_training_steps)
        if recovered != planned:
            scheduler.num_warmup_steps, scheduler.num_training_steps = planned
            self._log_rebuilt_schedule(recovered, counter.limit)
        for group in self.optimizer.param_groups:
            group["lr"] = scheduler.calculate_lr(scheduler.current_step)

    def _log_rebuilt_schedule(self, recovered: tuple[int, int], epochs: int) -> None:
        scheduler = self.hparams.lr_scheduler
        logger.warning(
            "number_of_epochs is now %d: the checkpoint's learning-rate schedule (%d steps, %d warm-up) is rebuilt "
            "for %d steps (%d warm-up); training continues at step %d with rate %.3g",
            epochs,
            recovered[1],
            recovered[0],
            scheduler.num_training_steps,
            scheduler.num_warmup_steps,
            scheduler.current_step,
            scheduler.calculate_lr(scheduler.current_step),
        )
        self.hparams.train_logger.log_stats(
            stats_meta={
                "schedule rebuilt for number_of_epochs": epochs,
                "steps": scheduler.num_training_steps,
                "warm-up steps": scheduler.num_warmup_steps,
                "from step": scheduler.current_step,
            },
            verbose=False,
        )

    def on_fit_batch_start(self, batch, should_step):
        self.random_states.restore_pending()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step:
            used = self.optimizer.param_groups[0]["lr"]
            self.epoch_rates = [self.epoch_rates[0] if self.epoch_rates else used, used]
            self.hparams.lr_scheduler(self.optimizer)  # the rate of the next step

    def on_stage_start(self, stage, epoch=None):
        resumed = self.resumed_epoch if stage == sb.Stage.TRAIN else None
        if stage == sb.Stage.TRAIN:
            self.resumed_epoch = None
            self.epoch_rates = list(resumed["epoch_rates"]) if resumed else []
        self.loss_parts = defaultdict(float, resumed["loss_parts"] if resumed else {})

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.random_states.restore_pending()  # an epoch resumed after its last step
            batches = max(self.loss_parts.pop("batches", 1), 1)
            self.train_stats = {"loss": stage_loss, **{k: v / batches for k, v in self.loss_parts.items()}}

    @mark_as_saver
    def _save(self, path):
        """SpeechBrain's step counters plus this epoch's loss sums and learning rates."""
        super()._save(path)
        with open(path, "a", encoding="utf-8") as out:
            state = {"loss_parts": dict(self.loss_parts), "epoch_rates": self.epoch_rates}
            out.write(yaml.dump(state, sort_keys=False))  # the log keeps the order of the parts

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as fin:
            saved = yaml.safe_load(fin)
        resumed = {"loss_parts": saved.get("loss_parts") or {}, "epoch_rates": saved.get("epoch_rates") or []}
        self.resumed_epoch = None if end_of_epoch else resumed
