"""Library log lines that say nothing to our users are dropped by their exact opening; nothing else is."""

import logging

import pytest

import fvae_asr.speech  # noqa: F401  (installs the filters, as any speech import does)
from fvae_asr.library_logs import IRRELEVANT_MESSAGES


def test_only_the_named_messages_are_dropped(caplog):
    with caplog.at_level(logging.INFO):
        for name, openings in IRRELEVANT_MESSAGES.items():
            for opening in openings:
                logging.getLogger(name).info(opening + " ... the rest of the message")
            logging.getLogger(name).warning("something our users need to read")
        logging.getLogger("speechbrain.core").info("Moving label 'aa' from index 0 on another logger")
    assert [r.getMessage() for r in caplog.records] == [
        *["something our users need to read"] * len(IRRELEVANT_MESSAGES),
        "Moving label 'aa' from index 0 on another logger",
    ]


@pytest.mark.e2e
def test_a_recipe_run_logs_none_of_them(tmp_path, tone_corpus):
    from fvae_asr.recipes.timit.train import run

    from conftest import HPARAMS, recipe_overrides

    run(HPARAMS, {"noprogressbar": True}, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    log = (tmp_path / "log.txt").read_text()  # SpeechBrain's log of the run, every INFO record
    assert "valid PER" in log and "Beginning experiment" in log
    for unwanted in ("expect_len was never called", "Moving label", "Load called, but", "torchvision"):
        assert unwanted not in log
