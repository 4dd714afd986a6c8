"""The recipe's text log read back: each epoch's training terms and the first batch's, before any update."""

from __future__ import annotations

from speechbrain.utils.train_logger import FileTrainLogger

from fvae_asr.speech.training.train_logger import (
    BEFORE_TRAINING,
    logged_train_stats,
    train_stats_before_training,
    train_stats_by_epoch,
)


def test_epochs_and_the_first_batch_are_read_back_from_speechbrains_log_lines(tmp_path):
    log = tmp_path / "train_log.txt"
    logger = FileTrainLogger(str(log))
    logger.log_stats({BEFORE_TRAINING: "first batch"}, train_stats={"ctc": 9.5, "reconstruction": 125.0})
    for epoch, (nll, per) in enumerate([(80.5, 60.0), (41.0, 50.0)], start=1):
        logger.log_stats(
            {"epoch": epoch, "lr first step": 1e-4, "lr last step": 2.5e-5},
            train_stats={"loss": 3.0, "ctc": 2.0, "reconstruction": nll, "gamma": -0.0012},
            valid_stats={"loss": 2.5, "PER": per},
        )
    logger.log_stats({"epoch": 2, "lr first step": 1e-4}, train_stats={"loss": 1.0, "reconstruction": 39.75})  # resumed
    logger.log_stats({"epoch loaded": 2}, test_stats={"loss": 2.0, "PER": 48.0})
    assert train_stats_before_training(log) == {"ctc": 9.5, "reconstruction": 125.0}  # written 1.25e+02
    epochs = train_stats_by_epoch(log)
    assert [e["reconstruction"] for e in epochs] == [80.5, 39.75]  # the epoch's last line wins
    assert epochs[0]["gamma"] == -1.2e-3  # SpeechBrain writes small values as 1.20e-03
    assert "epoch loaded: 2" not in logged_train_stats(log)  # no train stats on the test line
