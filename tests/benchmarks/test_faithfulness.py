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


def _stand_in(layer: FVAELoRALinear, mapping: dict[str, str]) -> nn.Module:
    """A module holding layer's parameters under the authors' names."""
    root = nn.Module()
    ours = dict(layer.named_parameters())
    for our_name, their_name in mapping.items():
        *path, leaf = their_name.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.register_parameter(leaf, nn.Parameter(ours[our_name].detach().clone()))
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


def test_mapped_differences_compare_each_parameter_with_its_counterpart():
    layer = _layer()
    mapping = faithfulness.parameter_map(3)
    assert mapping["decoder_std"].endswith("scale_tril")  # the same variable: their raw std
    stand_in = _stand_in(layer, mapping)
    their = dict(stand_in.named_parameters())
    for name, param in layer.named_parameters():
        if param.requires_grad:
            param.grad = torch.randn_like(param)
            their[mapping[name]].grad = param.grad.clone()
    differences = faithfulness.mapped_differences(stand_in, layer, mapping, lambda p: p.grad)
    assert max(d["abs"] for d in differences.values()) == 0
    their["lora_B.default"].grad = their["lora_B.default"].grad + 0.5
    differences = faithfulness.mapped_differences(stand_in, layer, mapping, lambda p: p.grad)
    assert differences["lora_B.weight"]["abs"] == pytest.approx(0.5)


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


needs_authors_repo = pytest.mark.skipif(
    not os.environ.get("FVAE_AUTHORS_REPO"), reason="FVAE_AUTHORS_REPO (idiap/FVAE-LoRA) not set"
)


def _run_against_authors_repo(*args: str) -> None:
    """``python -m benchmarks.faithfulness`` on $FVAE_AUTHORS_REPO in a fresh process: their PEFT fork must not
    meet the installed peft another test may have imported."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.faithfulness", "--authors-repo", os.environ["FVAE_AUTHORS_REPO"], *args],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


@needs_authors_repo
@pytest.mark.e2e
def test_our_default_layer_matches_the_authors_layer_to_float_precision(tmp_path):
    out = tmp_path / "result.json"
    _run_against_authors_repo("--features", "64", "--frames", "10", "--steps", "0", "--json", str(out))
    result = json.loads(Path(out).read_text())
    assert result["noise_tensors_shared"] == 7
    assert result["their_parameters_with_gradient_not_mapped"] == []
    assert result["train_output_max_abs_diff"] < 1e-5
    assert result["eval_output_max_abs_diff"] < 1e-5
    assert result["loss_rel_diff"] < 1e-5
    assert result["gradient_max_rel_diff"] < 1e-5  # their scale 8 / (r + 1e-5): 6e-7 of itself


def test_their_model_tape_becomes_ours_layer_by_layer():
    from benchmarks.faithfulness.trajectory import merge_layer_masks

    def layer_tape(value: float) -> list:
        masks = [("dropout", torch.full((2, 3), value)), ("dropout", torch.full((2, 3), value + 1))]
        return masks + [("randn", torch.zeros(2, 4))] * 2 + [("dropout", torch.ones(2, 5))] * 3

    merged = merge_layer_masks(layer_tape(0.0) + layer_tape(10.0))
    assert [kind for kind, _ in merged] == ["dropout", "randn", "randn", "dropout", "dropout", "dropout"] * 2
    torch.testing.assert_close(merged[6][1], torch.cat([torch.full((2, 3), 10.0), torch.full((2, 3), 11.0)], -1))
    with pytest.raises(RuntimeError, match="whole layers"):
        merge_layer_masks(layer_tape(0.0)[:-1])


@needs_authors_repo
@pytest.mark.e2e
def test_our_training_follows_the_authors_for_100_steps_in_float64(tmp_path):
    out = tmp_path / "trajectory.json"
    _run_against_authors_repo("--double", "--features", "32", "--frames", "6", "--trajectory-json", str(out))
    reports = json.loads(out.read_text())["reports"]
    assert [r["step"] for r in reports] == [1, 10, 100]
    assert reports[-1]["largest_relative_difference"] < 1e-4
