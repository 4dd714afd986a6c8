"""Library log records that say nothing to our users, dropped by their exact opening words: a targeted filter per
logger, never a blanket one. Installed when ``fvae_asr.speech`` is first imported, before SpeechBrain is."""

from __future__ import annotations

import logging

# logger name -> the openings of the messages dropped from it, and why they say nothing to our users
IRRELEVANT_MESSAGES: dict[str, tuple[str, ...]] = {
    # at import: an optional figure saver we never use
    "speechbrain.utils.train_logger": ("torchvision is not available - cannot save figures",),
    # the CTC blank is put at index 0 by design, and the label file is written once then reloaded (DDP-safe)
    "speechbrain.dataio.encoder": ("Moving label ", "Load called, but CTCTextEncoder is not empty"),
}


class _DropMessages(logging.Filter):
    def __init__(self, openings: tuple[str, ...]) -> None:
        super().__init__()
        self.openings = openings

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.openings)


def quiet_library_logs() -> None:
    """Drop ``IRRELEVANT_MESSAGES`` from their loggers (idempotent)."""
    for name, openings in IRRELEVANT_MESSAGES.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(openings))
