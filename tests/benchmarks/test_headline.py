"""The headline figures on the README, the home page (which includes the README's table) and the results page are
the committed comparison records' own, as ``benchmarks.compare.headline`` reads them from ``results.json``."""

import json
from pathlib import Path

import pytest

from benchmarks.compare.headline import headline_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = json.loads((ROOT / "docs" / "compare" / "results.json").read_text())


@pytest.mark.parametrize(
    ("page", "shift"),
    [("README.md", "target"), ("docs/results.md", "target"), ("docs/results.md", "noisy_room")],
)
def test_the_pages_carry_the_records_headline_table(page, shift):
    assert headline_table(RESULTS, shift) in (ROOT / page).read_text()


def test_the_home_page_shows_the_readmes_table():
    assert '--8<-- "README.md:headline"' in (ROOT / "docs" / "index.md").read_text()


def test_the_table_reads_the_records():
    results = {"results": []}
    for method, params in (("frozen", 10), ("lora", 20), ("fvae_lora", 30), ("full", 40)):
        for targets in ("qk", "all_linear"):
            results["results"].append(
                {
                    "method": method,
                    "targets": targets,
                    "shift": "s",
                    "test_per": [1.0, 2.0, 3.0],
                    "trainable_params_train": params * (2 if targets == "all_linear" else 1),
                }
            )
    table = headline_table(results, "s").splitlines()
    assert (
        table[0]
        == "| s shift | trainable, q/k | test PER, q/k | trainable, all linear layers | test PER, all linear layers |"
    )
    assert table[4] == "| FVAE-LoRA | 30 | 2.00 ± 1.00 | 60 | 2.00 ± 1.00 |"
    assert len(table) == 6
