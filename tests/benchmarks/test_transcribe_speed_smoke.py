"""Smoke test of benchmarks/speed/transcribe_speed.py: --quick runs both sides and writes every figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.speed import transcribe_speed as bench


@pytest.mark.e2e  # the benchmark measures each side in its own process
def test_quick_run_writes_speeds_memory_and_agreement_for_both_sides(tmp_path: Path) -> None:
    returned = bench.main(["--quick", "--batch-size", "1", "--json", str(tmp_path / "t.json")])
    written = json.loads((tmp_path / "t.json").read_text())
    assert written["short_identical_phones_share"] == returned["short_identical_phones_share"]
    for side in ("ours", "pipeline"):
        for key in (f"short_audio_s_per_s_{side}", f"long_audio_s_per_s_{side}", f"peak_rss_mb_{side}"):
            assert math.isfinite(written[key]) and written[key] > 0, key
    assert written["short_identical_phones_share"] == 1.0  # unpadded, the same model gives the same phones
    assert 0.5 < written["long_identical_frames_share"] <= 1.0
    assert set(written["goals_met"]) == set(bench.GOALS) and written["cpu_model"]
    for kind in ("short", "long"):  # one round: the median ratio and its quartiles are that round's ratio
        ratios = written[f"{kind}_speed_ratio_rounds"]
        assert len(ratios) == 1 and written[f"{kind}_speed_ratio_quartiles"] == [ratios[0]] * 2
        speeds = written[f"{kind}_audio_s_per_s_ours"], written[f"{kind}_audio_s_per_s_pipeline"]
        assert math.isclose(ratios[0], speeds[0] / speeds[1])
