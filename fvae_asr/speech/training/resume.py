"""Checkpoints that survive crashes, and the random state that makes a resumed run equal an uninterrupted one.

``AtomicCheckpointer`` writes each checkpoint into a dot-named staging folder and renames it into place once
every file is written, so a crash or a full disk never leaves a checkpoint that looks complete; recovery skips
(with a warning) a checkpoint that cannot be read or loaded, in favour of the one before it.
``TrainableWeights`` checkpoints only the weights that train, and refuses non-finite ones.
``RandomStates`` checkpoints the Python, NumPy and torch (CPU and CUDA) generators of every process.
"""

from __future__ import annotations

import errno
import logging
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.utils.checkpoints import (
    Checkpoint,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from torch import nn

from fvae_asr.files import is_disk_full
from fvae_asr.speech.models.export import load_trainable, save_trainable, trainable_state
from fvae_asr.tensor_files import check_finite

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (the previous checkpoints are intact)."""


class CheckpointRecoveryError(RuntimeError):
    """No checkpoint of the run could be loaded."""


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or weight: the run stops there, and nothing non-finite is saved."""


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` with all-or-nothing saves and recovery that skips damaged checkpoints."""

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        """Save into a staging folder, then rename it to its ``CKPT+...`` name (atomic on one file system)."""
        self._staging = True
        try:
            staged = super().save_checkpoint(meta, end_of_epoch, name, verbosity=logging.DEBUG)
            ddp_barrier()  # every process has written its files
        except Exception as err:
            disk_full = is_disk_full(err, self.checkpoints_dir)  # before the partial checkpoint frees its space
            self._remove_staging_folders()
            if disk_full:
                raise CheckpointSaveError(
                    errno.ENOSPC,
                    f"no space left on the device while saving a checkpoint in {self.checkpoints_dir}: free some "
                    "space and run again (the run resumes from its last complete checkpoint)",
                ) from err
            raise
        finally:
            self._staging = False
        saved = None if staged is None else self._rename_staged(staged, end_of_epoch, verbosity)  # main process
        # Every process sees the renamed checkpoint before it goes on: SpeechBrain's delete_checkpoints runs one
        # collective per checkpoint it deletes, so processes that listed different checkpoints would deadlock.
        ddp_barrier()
        return saved

    def _rename_staged(self, staged: Checkpoint, end_of_epoch: bool, verbosity: int) -> Checkpoint:
        final = staged.path.with_name(staged.path.name.removeprefix(STAGING_PREFIX))
        staged.path.rename(final)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        return Checkpoint(final, staged.meta, {key: final / path.name for key, path in staged.paramfiles.items()})

    def _new_checkpoint_dirpath(self) -> Path:
        return self._staged(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name) -> Path:
        return self._staged(super()._custom_checkpoint_dirpath(name))

    def _staged(self, path: Path) -> Path:
        if not getattr(self, "_staging", False):
            return path
        staging = path.with_name(STAGING_PREFIX + path.name)
        shutil.rmtree(staging, ignore_errors=True)  # left by a crash
        return staging

    def _remove_staging_folders(self) -> None:
        if if_main_process():
            for path in self.checkpoints_dir.glob(STAGING_PREFIX + "*"):
                shutil.rmtree(path, ignore_errors=True)

    def list_checkpoints(self) -> list[Checkpoint]:
        """The checkpoints whose metadata can be read; an unreadable one is skipped with a warning."""
        checkpoints = []
        for path in self._list_checkpoint_dirs():
            try:
                (checkpoint,) = self._construct_checkpoint_objects([path])
                if not isinstance(checkpoint.meta, dict) or "end-of-epoch" not in checkpoint.meta:
                    raise ValueError("its CKPT.yaml has no end-of-epoch entry")
            except (OSError, ValueError, yaml.YAMLError) as err:
                logger.warning("Skipping the damaged checkpoint %s: %s", path, err)
                continue
            checkpoints.append(checkpoint)
        return checkpoints

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Load the best checkpoint that loads; a damaged one is skipped with a warning."""
        candidates = self.find_checkpoints(importance_key, max_key, min_key, ckpt_predicate)
        if not candidates:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        failures = []
        for checkpoint in candidates:
            try:
                self.load_checkpoint(checkpoint)
                return checkpoint
            except Exception as err:
                failures.append(f"{checkpoint.path.name}: {type(err).__name__}: {err}")
                logger.warning("Skipping the damaged checkpoint %s (%s: %s)", checkpoint.path, type(err).__name__, err)
                self._undo_partial_load()
        tried = "; ".join(failures)
        raise CheckpointRecoveryError(f"no checkpoint in {self.checkpoints_dir} could be loaded: {tried}")

    def load_checkpoint(self, checkpoint: Checkpoint) -> None:
        """SpeechBrain's load, with every ``torch.load`` it makes restricted to weights (see ``weights_only_loads``)."""
        with weights_only_loads():
            super().load_checkpoint(checkpoint)

    def _undo_partial_load(self) -> None:
        """A failed load may have told the training loader to skip ahead; the next checkpoint says its own."""
        for obj in self.recoverables.values():
            if isinstance(obj, SaveableDataLoader):
                obj._speechbrain_recovery_skip_to = None


@register_checkpoint_hooks
class TrainableWeights:
    """SpeechBrain recoverable that checkpoints only the trainable weights (adapter-sized for adapters)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @mark_as_saver
    def save(self, path: str | Path) -> None:
        """Refuses non-finite weights: a checkpoint of a diverged run would only make every later run fail."""
        try:
            check_finite(trainable_state(self.model), "the trained weights")
        except ValueError as err:
            raise NonFiniteTrainingError(
                f"{err}: the run diverged; no checkpoint was saved (lower the learning rate and pass --restart=True)"
            ) from None
        save_trainable(self.model, Path(path))

    @mark_as_loader
    def load(self, path: str | Path, end_of_epoch: bool) -> None:
        del end_of_epoch
        load_trainable(self.model, Path(path))


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """``torch.load`` with ``weights_only=True`` whatever its caller or the environment says. SpeechBrain's loaders
    (schedulers, ``torch_recovery``) call it without the argument, and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` then
    turns it into full unpickling: a pickle planted in a checkpoint would run on resume."""
    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


class RandomStates:
    """The random generators of this process, checkpointed so that dropout masks, FVAE noise and any other draw
    continue as in an uninterrupted run; each DDP process keeps its own file.

    An end-of-epoch checkpoint is restored when loaded. An intra-epoch one is restored by ``restore_pending``
    at the next training step: the resumed epoch's data loader draws a seed from torch's generator when it
    starts, a draw the uninterrupted run made before the checkpoint was saved.
    """

    def __init__(self) -> None:
        self.pending: dict | None = None

    @mark_as_saver
    def save(self, path: str | Path) -> None:
        states = {
            "python": random.getstate(),
            "numpy": _numpy_state_as_tensors(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(states, _rank_path(Path(path)))

    @mark_as_loader
    def load(self, path: str | Path, end_of_epoch: bool) -> None:
        states = torch.load(_rank_path(Path(path)), weights_only=True)
        self.pending = None if end_of_epoch else states
        if end_of_epoch:
            _apply(states)

    def restore_pending(self) -> None:
        """Restore the states of an intra-epoch checkpoint just loaded (once)."""
        if self.pending is not None:
            _apply(self.pending)
            self.pending = None


register_checkpoint_hooks(RandomStates, save_on_main_only=False)


def _rank_path(path: Path) -> Path:
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return path if rank == 0 else path.with_name(f"{path.name}.rank{rank}")


def _numpy_state_as_tensors(state: tuple) -> tuple:
    name, keys, position, has_gauss, cached_gaussian = state
    return name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian


def _apply(states: dict) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
