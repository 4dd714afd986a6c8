"""The recipe's training log: SpeechBrain's file log always, and its TensorBoard event files when asked
(``logger: tensorboard`` in the recipe's yaml), so a user switches it on with one key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbrain.utils.train_logger import FileTrainLogger, TensorboardLogger, TrainLogger

LOGGERS = ("file", "tensorboard")
BEFORE_TRAINING = "before training"  # the log line of the first batch's loss terms, computed before any update
TENSORBOARD_MISSING = (
    "logger: tensorboard needs the tensorboard package: pip install tensorboard (or fvae-asr's extra: "
    'pip install -e ".[tensorboard]"), or set logger: file'
)


def tensorboard_missing() -> bool:
    """Whether the tensorboard package (which torch's SummaryWriter needs) cannot be imported."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return True
    return False


class RecipeLogger(TrainLogger):
    """Logs each stage's stats to ``save_file`` and, with ``logger="tensorboard"``, to TensorBoard event files.

    Args:
        save_file: the text log (SpeechBrain's ``FileTrainLogger``).
        logger: ``file`` or ``tensorboard`` (the text log and SpeechBrain's ``TensorboardLogger``).
        tensorboard_folder: where TensorBoard's event files go.
    """

    def __init__(self, save_file: str, logger: str = "file", tensorboard_folder: str | None = None) -> None:
        if logger not in LOGGERS:
            raise ValueError(f"logger must be one of {', '.join(LOGGERS)}; got {logger!r}")
        if logger == "tensorboard" and tensorboard_missing():
            raise ImportError(TENSORBOARD_MISSING)
        self.loggers: list[TrainLogger] = [FileTrainLogger(save_file)]
        if logger == "tensorboard":
            self.loggers.append(TensorboardLogger(tensorboard_folder))

    def log_stats(
        self,
        stats_meta: dict[str, Any],
        train_stats: dict[str, Any] | None = None,
        valid_stats: dict[str, Any] | None = None,
        test_stats: dict[str, Any] | None = None,
        verbose: bool = True,
    ) -> None:
        """Each stage's stats to every logger; ``verbose`` (SpeechBrain's default) also logs them as INFO, which
        the console and the run's ``log.txt`` show."""
        for logger in self.loggers:
            logger.log_stats(stats_meta, train_stats, valid_stats, test_stats, verbose=verbose)


def logged_train_stats(train_log: str | Path) -> dict[str, dict[str, float]]:
    """The ``train`` stats of each line of the recipe's text log, by the line's first field (``epoch: 3``,
    ``before training: first batch``); a later line of the same field wins (a resumed epoch logs again)."""
    stats: dict[str, dict[str, float]] = {}
    for line in Path(train_log).read_text(encoding="utf-8").splitlines():
        meta, *stages = line.split(" - ")  # numbers such as 1.00e-04 hold no spaces
        train = {}
        for stage in stages:
            for item in stage.split(", "):
                key, _, value = item.partition(": ")
                if key.startswith("train "):
                    train[key.removeprefix("train ")] = float(value)
        if train:
            stats[meta.split(", ")[0]] = train
    return stats


def train_stats_by_epoch(train_log: str | Path) -> list[dict[str, float]]:
    """Each logged epoch's mean training terms (``loss``, ``ctc``, and the FVAE terms), in epoch order."""
    by_field = logged_train_stats(train_log)
    epochs = sorted(int(field.removeprefix("epoch: ")) for field in by_field if field.startswith("epoch: "))
    return [by_field[f"epoch: {epoch}"] for epoch in epochs]


def train_stats_before_training(train_log: str | Path) -> dict[str, float] | None:
    """The loss terms of the first training batch, computed before any update (None if not logged)."""
    return next((v for k, v in logged_train_stats(train_log).items() if k.startswith(BEFORE_TRAINING)), None)
