"""The headline figures on the README, the home page (which includes the README's table) and the results page are
the committed study records' own, as ``benchmarks.compare.headline`` reads them from each study's
``results.json``: real speech first, then the synthetic comparison study."""

import json
from pathlib import Path

import pytest

from benchmarks.compare.headline import headline_table

ROOT = Path(__file__).resolve().parents[2]


def study_results(study: str) -> dict:
    return json.loads((ROOT / "docs" / study / "results.json").read_text())


@pytest.mark.parametrize(
    ("page", "study", "shift"),
    [
        ("README.md", "real_speech", "arctic"),
        ("README.md", "compare", "target"),
        ("docs/results.md", "real_speech", "arctic"),
        ("docs/results.md", "compare", "target"),
        ("docs/results.md", "compare", "noisy_room"),
    ],
)
def test_the_pages_carry_the_records_headline_table(page, study, shift):
    assert headline_table(study_results(study), shift) in (ROOT / page).read_text()


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_real_speech_leads_the_synthetic_shift(page):
    text = (ROOT / page).read_text()
    real = text.index(headline_table(study_results("real_speech"), "arctic"))
    synthetic = text.index(headline_table(study_results("compare"), "target"))
    assert real < synthetic


def test_the_readmes_headline_holds_both_studies():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- --8<-- [start:headline] -->")
    end = readme.index("<!-- --8<-- [end:headline] -->")
    for study, shift in (("real_speech", "arctic"), ("compare", "target")):
        assert start < readme.index(headline_table(study_results(study), shift)) < end


def test_the_home_page_shows_the_readmes_table():
    assert '--8<-- "README.md:headline"' in (ROOT / "docs" / "index.md").read_text()


def _records(shift: str) -> dict:
    results = {"results": []}
    for method, params in (("frozen", 10), ("lora", 20), ("fvae_lora", 30), ("full", 40)):
        for targets in ("qk", "all_linear"):
            results["results"].append(
                {
                    "method": method,
                    "targets": targets,
                    "shift": shift,
                    "test_per": [1.0, 2.0, 3.0],
                    "trainable_params_train": params * (2 if targets == "all_linear" else 1),
                }
            )
    return results


def test_the_table_reads_the_records():
    table = headline_table(_records("s"), "s").splitlines()
    assert (
        table[0]
        == "| s shift | trainable, q/k | test PER, q/k | trainable, all linear layers | test PER, all linear layers |"
    )
    assert table[4] == "| FVAE-LoRA | 30 | 2.00 ± 1.00 | 60 | 2.00 ± 1.00 |"
    assert len(table) == 6


def test_the_real_speech_table_names_its_corpus():
    header = headline_table(_records("arctic"), "arctic").splitlines()[0]
    assert header.startswith("| real speech (ARCTIC voice) | trainable, q/k |")
