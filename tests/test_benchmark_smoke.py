"""Smoke test of benchmarks/adapter_speed.py on a tiny wav2vec2: it runs, and every figure is a positive number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from conftest import load_script


FIGURES = [
    "train_step_ratio_fvae_over_lora",
    "eval_step_ratio_fvae_over_lora",
    "layer_speedup_vs_fullcov",
    "train_peak_memory_ratio_fvae_over_lora",
    "eval_peak_memory_ratio_fvae_over_lora",
    "layer_peak_memory_ratio_fullcov_over_ours",
    "train_step_ms_fvae",
    "train_step_ms_lora",
    "eval_step_ms_fvae",
    "eval_step_ms_lora",
    "layer_step_ms_ours",
    "layer_step_ms_fullcov",
]


def test_quick_tiny_run_writes_positive_finite_figures(tmp_path: Path) -> None:
    bench = load_script("adapter_speed")
    threads = torch.get_num_threads()
    try:
        # One thread: on a busy 2-core machine, two threads wait on each other and the run takes 10x longer.
        argv = ["--quick", "--tiny", "--rounds", "2", "--threads", "1", "--json", str(tmp_path / "b.json")]
        returned = bench.main(argv)
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["settings"] == returned["settings"]
    for key in FIGURES:
        value = written[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    assert set(written["goals_met"]) == set(bench.GOALS)
    assert written["device"] and written["torch_version"] == torch.__version__ and written["threads"] >= 1


def test_fullcov_reconstruction_equals_the_diagonal_one() -> None:
    bench = load_script("adapter_speed")
    from fvae_asr.adapters.objective import gaussian_nll

    torch.manual_seed(0)
    x, mean, log_scale = torch.randn(3, 5, 8), torch.randn(3, 5, 8), 0.3 * torch.randn(8)
    torch.testing.assert_close(bench.fullcov_gaussian_nll(x, mean, log_scale), gaussian_nll(x, mean, log_scale))
