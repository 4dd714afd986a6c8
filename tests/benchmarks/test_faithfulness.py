"""benchmarks/faithfulness/check.py: weight mapping, noise replay and, given FVAE_AUTHORS_REPO, the authors' layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.faithfulness import check as faithfulness
from fvae_asr.adapters.config import FVAELoRAConfig
from fvae_asr.adapters.layers import FVAELoRALinear

from conftest import REPO


def _layer(decoder_layers: int = 3, seed: int = 0) -> FVAELoRALinear:
    torch.manual_seed(seed)
    base = nn.Linear(12, 10).requires_grad_(False)
    layer = FVAELoRALinear(base, FVAELoRAConfig(rank=4, decoder_layers=decoder_layers), "t")
    with torch.no_grad():
        for param in layer.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
    return layer


def _stand_in(layer: FVAELoRALinear, mapping: dict[str, tuple[str, str]]) -> nn.Module:
    """A module holding layer's parameters under the authors' names and parametrisation (raw std for the scale)."""
    root = nn.Module()
    ours = dict(layer.named_parameters())
    for our_name, (their_name, transform) in mapping.items():
        *path, leaf = their_name.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        value = ours[our_name].detach().clone()
        node.register_parameter(leaf, nn.Parameter(value.exp() if transform == "log" else value))
    return root


@pytest.mark.parametrize("decoder_layers", [1, 3])
def test_weight_map_round_trips_every_trainable_parameter(decoder_layers):
    source, target = _layer(decoder_layers, seed=0), _layer(decoder_layers, seed=1)
    mapping = faithfulness.parameter_map(decoder_layers)
    faithfulness.copy_weights(_stand_in(source, mapping), target, mapping)
    trained = [(n, p) for n, p in source.named_parameters() if p.requires_grad]
    assert {n for n, _ in trained} == set(mapping)
    copied = dict(target.named_parameters())
    for name, param in trained:
        torch.testing.assert_close(copied[name], param, rtol=1e-6, atol=1e-7, msg=name)


def test_copy_weights_names_an_unmapped_parameter():
    layer = _layer()
    mapping = faithfulness.parameter_map(3)
    stand_in = _stand_in(layer, mapping)
    del mapping["decoder.4.bias"]
    with pytest.raises(KeyError, match="decoder.4.bias"):
        faithfulness.copy_weights(stand_in, layer, mapping)


def test_gradient_of_raw_std_is_taken_to_the_log_scale():
    layer = _layer()
    mapping = faithfulness.parameter_map(3)
    stand_in = _stand_in(layer, mapping)
    their = dict(stand_in.named_parameters())
    for name, param in layer.named_parameters():
        if param.requires_grad:
            param.grad = torch.randn_like(param)
            their_name, transform = mapping[name]
            # dL/ds = dL/dlog(s) / s
            their[their_name].grad = param.grad / their[their_name].detach() if transform == "log" else param.grad
    differences = faithfulness.mapped_gradient_differences(stand_in, layer, mapping)
    assert max(d["abs"] for d in differences.values()) < 1e-6
    their["lora_B.default"].grad = their["lora_B.default"].grad + 0.5
    assert faithfulness.mapped_gradient_differences(stand_in, layer, mapping)["lora_B.weight"]["abs"] == (
        pytest.approx(0.5)
    )


def test_replayed_noise_reproduces_a_training_forward_and_checks_the_draw_order():
    layer = _layer()
    x = torch.randn(2, 5, 12)
    tape = faithfulness.NoiseTape()
    with tape.active():
        first = layer.train()(x)
    assert [kind for kind, _ in tape.records] == [
        "dropout",
        "randn",
        "randn",
        "dropout",
        "dropout",
        "dropout",
    ]
    replay = faithfulness.NoiseTape(tape.records)
    with replay.active():
        again = layer(x)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert replay.remaining() == 0
    with (
        pytest.raises(RuntimeError, match="draw order"),
        faithfulness.NoiseTape(tape.records[1:]).active(),
    ):
        layer(x)


def test_their_two_encoder_masks_become_our_one():
    m1, m2, eps = torch.ones(2, 3, 4), torch.zeros(2, 3, 4), torch.randn(2, 3, 4)
    merged = faithfulness.merge_encoder_masks([("dropout", m1), ("dropout", m2), ("randn", eps)])
    assert [kind for kind, _ in merged] == ["dropout", "randn"]
    torch.testing.assert_close(merged[0][1], torch.cat([m1, m2], dim=-1))


def test_a_folder_that_is_not_their_checkout_is_a_usage_error(tmp_path):
    assert faithfulness.main(["--authors-repo", str(tmp_path)]) == 2


@pytest.mark.skipif(
    not os.environ.get("FVAE_AUTHORS_REPO"),
    reason="FVAE_AUTHORS_REPO (idiap/FVAE-LoRA) not set",
)
def test_our_default_layer_matches_the_authors_layer_to_float_precision(tmp_path):
    out = tmp_path / "result.json"
    # A fresh process: their PEFT fork must not meet the installed peft another test may have imported.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.faithfulness",
            "--authors-repo",
            os.environ["FVAE_AUTHORS_REPO"],
            "--features",
            "64",
            "--frames",
            "10",
            "--json",
            str(out),
        ],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    result = json.loads(Path(out).read_text())
    assert result["noise_tensors_shared"] == 7
    assert result["their_parameters_with_gradient_not_mapped"] == []
    assert result["train_output_max_abs_diff"] < 1e-5
    assert result["eval_output_max_abs_diff"] < 1e-5
    assert result["loss_rel_diff"] < 1e-5
    assert result["gradient_max_rel_diff"] < 5e-4  # their std + 1e-5: relative 1e-5 per decoder-scale entry
