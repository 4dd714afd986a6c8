"""The recipe's training log: SpeechBrain's file log always, and its TensorBoard event files when asked
(``logger: tensorboard`` in the recipe's yaml), so a user switches it on with one key."""

from __future__ import annotations

from typing import Any

from speechbrain.utils.train_logger import FileTrainLogger, TensorboardLogger, TrainLogger

LOGGERS = ("file", "tensorboard")
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
