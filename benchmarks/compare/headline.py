"""The studies' headline tables (README, the docs' home and results pages): test PER and trainable parameters of
the four ways of training, one shift, both target settings, read from a study's ``results.json`` (the real-speech
study's and the comparison study's).

The pages hold the table as text; ``tests/benchmarks/test_headline.py`` checks it against this function, so a
figure on a page is always the committed records' figure.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common.records import mean_std
from benchmarks.compare.report import _fmt

METHODS = {
    "frozen": "head on the frozen backbone",
    "lora": "LoRA",
    "fvae_lora": "FVAE-LoRA",
    "full": "full fine-tuning",
}
TARGETS = {"qk": "q/k", "all_linear": "all linear layers"}
SHIFT_NAMES = {"arctic": "real speech (ARCTIC voice)"}  # the real-speech study's shift; others: "<shift> shift"


def headline_table(results: dict[str, Any], shift: str) -> str:
    """A Markdown table: per method, for adapters on q/k and on all linear layers, the trainable parameters (the
    recipe's count while training) and the test PER (mean ± sample std over the seeds)."""
    entries = {(e["method"], e["targets"]): e for e in results["results"] if e["shift"] == shift}
    header = " | ".join(f"trainable, {name} | test PER, {name}" for name in TARGETS.values())
    lines = [f"| {SHIFT_NAMES.get(shift, f'{shift} shift')} | {header} |", "|---" * (1 + 2 * len(TARGETS)) + "|"]
    for method, name in METHODS.items():
        cells = []
        for targets in TARGETS:
            entry = entries[(method, targets)]
            mean, std = mean_std(entry["test_per"])
            cells += [_fmt(entry["trainable_params_train"], ","), f"{_fmt(mean)} ± {_fmt(std)}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)
