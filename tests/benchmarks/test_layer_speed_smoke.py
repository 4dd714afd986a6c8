"""Smoke tests of benchmarks/speed/layer_speed.py: one adapted layer's train step, FVAE-LoRA against LoRA."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.speed import layer_speed


def _run(argv: list[str]) -> dict:
    threads = torch.get_num_threads()
    try:
        return layer_speed.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_quick_run_writes_the_times_and_the_ratio_over_lora_and_profiles(tmp_path: Path, capsys) -> None:
    returned = _run(["--quick", "--profile", "--json", str(tmp_path / "layer.json")])
    table = capsys.readouterr().out  # the operator table of FVAE-LoRA's step: which operators lead depends on load
    assert "Self CPU time total" in table and table.count("aten::") >= 5
    written = json.loads((tmp_path / "layer.json").read_text())
    assert written == json.loads(json.dumps(returned))
    assert set(written["step_ms"]) == {"lora", "fvae"}
    assert all(len(times) == 2 for times in written["step_times_ms"].values())
    assert written["settings"]["features"] == 64 and written["settings"]["frames"] == 32
    # FVAE-LoRA does LoRA's work plus two encoders, a decoder and the loss terms: several times more on a tiny layer.
    assert written["step_ratio_fvae_over_lora"] > 1.5
    low, high = written["step_ratio_fvae_over_lora_quartiles"]
    assert 0 < low <= high and all(math.isfinite(v) for v in (low, high))


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU builds C++ with g++")
def test_the_compiled_scoring_gives_the_eager_terms_and_gradients(monkeypatch) -> None:
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # compiled code draws eager's noise
    layers = {variant: layer_speed.adapted_layer(variant, 32, 4) for variant in ("fvae", "fvae_compiled")}
    with torch.no_grad():  # heads away from their zero init, so that the latents depend on x
        for encoder in (layers["fvae"].encoder_z1, layers["fvae"].encoder_z2):
            for head in (encoder.mean, encoder.logvar):
                head.weight.normal_(std=0.3)
    layers["fvae_compiled"].load_state_dict(layers["fvae"].state_dict())
    for layer in layers.values():  # compiled code may draw dropout's masks in another order than eager code
        layer.encoder_z1.dropout.p = 0.0
    x = torch.randn(2, 6, 32)
    inputs = {variant: x.clone().requires_grad_() for variant in layers}
    for variant, layer in layers.items():
        torch.manual_seed(1)  # the same latent noise
        layer_speed.train_step(layer, inputs[variant])()
    eager, compiled = layers["fvae"], layers["fvae_compiled"]
    for name in eager.last_terms:
        torch.testing.assert_close(compiled.last_terms[name], eager.last_terms[name], msg=name)
    torch.testing.assert_close(inputs["fvae_compiled"].grad, inputs["fvae"].grad)
    for (name, expected), got in zip(eager.named_parameters(), compiled.parameters()):
        if expected.requires_grad:
            torch.testing.assert_close(got.grad, expected.grad, msg=name)


@pytest.mark.parametrize("argv", [["--frames", "3"], ["--rank", "0"], ["--steps", "0"]])
def test_bad_options_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        layer_speed.parse_args(argv)
    assert exit_info.value.code == 2 and argv[0] in capsys.readouterr().err
