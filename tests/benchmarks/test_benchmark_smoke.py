"""Smoke tests of benchmarks/speed/adapter_speed.py on a tiny wav2vec2, and the honesty of its authors'-style peer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from benchmarks.speed import adapter_speed as bench
from fvae_asr import FVAELoRAConfig, aux_loss, inject
from fvae_asr.adapters.layers import ADAPTER_LAYERS

VARIANTS = ["fvae", "authors", "lora"]
PAIRS = ("authors_over_fvae", "fvae_over_lora")
FIGURES = [
    *(f"{kind}_step_ms_{variant}" for kind in ("train", "eval") for variant in VARIANTS),
    *(f"{kind}_peak_memory_mb_{variant}" for kind in ("train", "eval") for variant in VARIANTS),
    *(f"{kind}_peak_memory_ratio_{pair}" for kind in ("train", "eval") for pair in PAIRS),
    "train_step_ms_fvae_recompute",
    "train_peak_memory_mb_fvae_recompute",
    "train_step_ratio_fvae_recompute_over_fvae",
]


def _run_quietly(bench, argv: list[str]) -> dict:
    threads = torch.get_num_threads()
    try:
        return bench.main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype, clock", [("fp32", "wall"), ("bf16", "cpu")])
def test_quick_tiny_run_writes_every_goal_and_positive_finite_figures(tmp_path: Path, dtype: str, clock: str) -> None:
    # One thread: on a busy 2-core machine, two threads wait on each other and the run takes 10x longer.
    argv = ["--quick", "--size", "tiny", "--dtype", dtype, "--rounds", "2", "--threads", "1", "--clock", clock]
    returned = _run_quietly(bench, [*argv, "--json", str(tmp_path / "b.json")])
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["settings"] == returned["settings"]
    assert written["settings"]["dtype"] == dtype and written["settings"]["clock"] == clock
    assert all(len(times) == 2 for kind in ("train", "eval") for times in written[f"{kind}_step_times_ms"].values())
    assert set(bench.GOALS) == {
        "train_step_speedup_vs_authors",
        "eval_step_speedup_vs_authors",
        "train_step_ratio_fvae_over_lora",
        "eval_step_ratio_fvae_over_lora",
        "train_peak_memory_ratio_fvae_recompute_over_lora",
    }
    for key in [*FIGURES, *bench.GOALS]:
        value = written[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    assert set(written["goals_met"]) == set(bench.GOALS)
    for name, met in written["goals_met"].items():
        op, bound = bench.GOALS[name]
        assert met == (written[name] >= bound if op == ">=" else written[name] <= bound)
    assert written["authors_style_loss_relative_gap"] < 1e-5
    assert (
        written["cpu_model"]
        and written["train_step_ms_fvae_quartiles"][0] <= written["train_step_ms_fvae_quartiles"][1]
    )
    assert written["device"] and written["torch_version"] == torch.__version__ and written["threads"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--device", "tpu"],
        ["--dtype", "fp16"],
        ["--size", "huge"],
        ["--clock", "gpu"],
        ["--rounds", "0"],
        ["--seconds", "-1"],
        ["--adamw", "sgd"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_cuda_without_a_gpu_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_cpu_clock_counts_this_process_work_not_sleep() -> None:
    cpu = torch.device("cpu")
    assert bench.time_ms(lambda: time.sleep(0.05), cpu, "wall") >= 50
    assert bench.time_ms(lambda: time.sleep(0.05), cpu, "cpu") < 25


def test_variants_are_interleaved_in_rotated_order() -> None:
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "ABC"}
    times = bench.interleaved_times_ms(steps, rounds=4, warmup=1, device=torch.device("cpu"))
    assert "".join(calls) == "ABC" + "ABC" + "BCA" + "CAB" + "ABC"
    assert {name: len(t) for name, t in times.items()} == {"A": 4, "B": 4, "C": 4}


def test_authors_style_peer_has_our_loss_at_the_default_config() -> None:
    """Same weights, same noise: the peer's training loss equals ours, so the benchmark compares like with like."""
    config = FVAELoRAConfig()
    assert config.delta == 2 / config.rank  # the default this equality rests on
    assert bench.same_objective_gap(config, features=48, frames=10, seed=3) < 1e-6
    assert bench.same_objective_gap(FVAELoRAConfig(rank=8, delta=0.1), features=24, frames=6, seed=0) < 1e-6


def test_authors_style_peer_runs_the_whole_objective_in_eval_but_outputs_mu1() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 24))
    with mock.patch.dict(ADAPTER_LAYERS, {"fvae_lora": bench.AuthorsStyleFVAELoRALinear}):
        inject(model, FVAELoRAConfig(rank=4, target_modules=["0"]))
    peer = model[0]
    assert isinstance(peer, bench.AuthorsStyleFVAELoRALinear)
    decoder_calls = []
    peer.decoder.register_forward_hook(lambda *_: decoder_calls.append(1))
    x = torch.randn(3, 24)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert decoder_calls == [1, 1]  # encoder 2 and the decoder run in eval mode, as the authors' layer does
    assert torch.equal(first, second)  # but the output uses mu1: deterministic
    assert aux_loss(model).item() == 0.0


def test_large_style_model_takes_the_attention_mask_and_steps_in_bf16() -> None:
    """The wav2vec2-large path (layer-norm CNN, attention mask) on a tiny model, under bf16 autocast."""
    tiny_large = {**bench.MODEL_SIZES["tiny"], "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    settings = bench.Settings(
        device="cpu",
        dtype="bf16",
        size="tiny",
        clock="wall",
        threads=1,
        rounds=1,
        warmup=0,
        batch=2,
        seconds=0.2,
        short_fraction=0.5,
        rank=4,
        seed=0,
    )
    with mock.patch.dict(bench.MODEL_SIZES, {"tiny": tiny_large}):
        runner = bench.AdaptedSpeechModel("authors", settings, torch.device("cpu"))
    batch = bench.make_batch(runner.model, settings, torch.device("cpu"))
    assert runner.takes_attention_mask and batch.sample_mask[1].sum() < batch.sample_mask[0].sum()
    seen = []
    runner.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True
    )
    trainable = [p for p in runner.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    runner.train_step(batch)
    runner.eval_step(batch)
    assert all(mask is batch.sample_mask for mask in seen) and len(seen) == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable))
    assert all(torch.isfinite(p).all() for p in trainable)


@pytest.mark.parametrize("adamw", ["default", "foreach", "fused"])
def test_every_variant_steps_with_the_chosen_adamw_implementation(adamw: str) -> None:
    settings = bench.settings_from_args(
        bench.parse_args(["--size", "tiny", "--quick", "--rank", "4", "--adamw", adamw])
    )
    assert settings.adamw == adamw
    for variant in VARIANTS:
        runner = bench.AdaptedSpeechModel(variant, settings, torch.device("cpu"))
        defaults = runner.optimizer.defaults
        assert (defaults["foreach"], defaults["fused"]) == {
            "default": (None, None),
            "foreach": (True, None),
            "fused": (None, True),
        }[adamw], variant
        trainable = [p for p in runner.model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        runner.train_step(bench.make_batch(runner.model, settings, torch.device("cpu")))
        assert all(not torch.equal(b, p) for b, p in zip(before, trainable)), variant  # every tensor took a step
