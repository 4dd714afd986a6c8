"""One adapted layer's training step, FVAE-LoRA against LoRA: what FVAE-LoRA's extra cost per layer is made of.

A frozen ``nn.Linear(d, d)`` wrapped as LoRA and as FVAE-LoRA (the shipped defaults at ``--rank``), and with
``--compile`` a third FVAE-LoRA whose scoring (``_sample_and_score``: encoders, sampling, decoder, loss terms) runs
under ``torch.compile(dynamic=True)``. One step: forward on x of shape (2, frames / 2, d), which needs a gradient as
in a model whose lower layers train, then backward of ``mean(y ** 2)`` plus the layer's FVAE total. Each round
times ``--steps`` steps of every variant, in an order rotated per round (``adapter_speed``'s tools); ratios are
medians over rounds of two variants timed in the same round. The whole-model figures are ``adapter_speed.py``'s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.speed.adapter_speed import cpu_name, interleaved_times_ms, paired_ratios, save_json
from fvae_asr import FVAELoRAConfig, LoRAConfig
from fvae_asr.adapters.layers import AdaptedLinear, FVAELoRALinear, LoRALinear


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.layer_speed",
        description="One adapted layer's train step: FVAE-LoRA against LoRA.",
    )
    parser.add_argument("--features", type=int, default=768, help="d, the layer's width (default 768: base)")
    parser.add_argument("--frames", type=int, default=298, help="frames per step (default 298: adapter_speed's)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100, help="steps per variant and round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--compile", action="store_true", help="add FVAE-LoRA with its scoring compiled")
    parser.add_argument(
        "--profile", action="store_true", help="then print FVAE-LoRA's costliest operators by input shape"
    )
    parser.add_argument("--quick", action="store_true", help="d 64, 32 frames, 2 rounds of 5 steps: seconds")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    for name in ("features", "frames", "rank", "rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.frames % 2:
        parser.error(f"--frames must be even (two utterances of frames / 2), got {args.frames}")
    if args.quick:
        args.features, args.frames, args.rounds, args.steps = 64, 32, 2, 5
    return args


def adapted_layer(variant: str, features: int, rank: int) -> AdaptedLinear:
    """A frozen ``Linear(features, features)`` wrapped for ``variant``, in training mode, from seed 0."""
    torch.manual_seed(0)
    base = nn.Linear(features, features).requires_grad_(False)
    if variant == "lora":
        return LoRALinear(base, LoRAConfig(rank=rank), "layer").train()
    layer = FVAELoRALinear(base, FVAELoRAConfig(rank=rank), "layer").train()
    if variant == "fvae_compiled":
        layer._sample_and_score = torch.compile(layer._sample_and_score, dynamic=True)
    return layer


def train_step(layer: AdaptedLinear, x: torch.Tensor) -> Callable[[], None]:
    """Forward, a stand-in task loss plus the layer's FVAE total, backward."""

    def step() -> None:
        y = layer(x)
        loss = y.square().mean()  # its gradient is a plain dense tensor, as a real task loss's would be
        if isinstance(layer, FVAELoRALinear):
            loss = loss + layer.last_terms["total"]
        loss.backward()

    return step


def repeated(step: Callable[[], None], steps: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(steps):
            step()

    return run


def operator_profile(run: Callable[[], None], rows: int = 20) -> str:
    """torch.profiler's table of the operators in ``run`` with the most self CPU time, one row per input shape."""
    with torch.profiler.profile(record_shapes=True) as profile:
        run()
    return profile.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> dict:
    """Time the variants, print ms per step and the ratios over LoRA, write the JSON if asked; returns the figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = ["lora", "fvae"] + (["fvae_compiled"] if args.compile else [])
    x = torch.randn(2, args.frames // 2, args.features, requires_grad=True)
    steps, first_step_seconds = {}, {}
    for variant in variants:
        step = train_step(adapted_layer(variant, args.features, args.rank), x)
        start = time.perf_counter()
        step()  # the compiled variant compiles here
        first_step_seconds[variant] = time.perf_counter() - start
        steps[variant] = repeated(step, args.steps)
    rounds = interleaved_times_ms(steps, args.rounds, warmup=1, device=torch.device("cpu"))
    per_step = {name: [t / args.steps for t in times] for name, times in rounds.items()}
    results: dict = {
        "device": f"cpu ({cpu_name()})",
        "torch_version": torch.__version__,
        "settings": {key: value for key, value in vars(args).items() if key != "json"},
        "first_step_seconds": first_step_seconds,
        "step_times_ms": per_step,
        "step_ms": {name: statistics.median(times) for name, times in per_step.items()},
    }
    pairs = [("fvae", "lora")] + ([("fvae_compiled", "lora"), ("fvae_compiled", "fvae")] if args.compile else [])
    for numerator, denominator in pairs:
        key = f"step_ratio_{numerator}_over_{denominator}"
        results[key], results[f"{key}_quartiles"] = paired_ratios(per_step[numerator], per_step[denominator])
    print(
        f"one adapted layer, d {args.features}, {args.frames} frames, rank {args.rank}, {args.threads} thread(s), "
        f"{args.rounds} rounds of {args.steps} steps, {results['device']}"
    )
    for name in variants:
        print(f"  {name:14} {results['step_ms'][name]:8.3f} ms per step (first step {first_step_seconds[name]:.1f} s)")
    for key in (k for k in results if k.startswith("step_ratio_") and not k.endswith("_quartiles")):
        low, high = results[f"{key}_quartiles"]
        print(f"  {key:38} {results[key]:.3f} (quartiles {low:.3f} to {high:.3f})")
    if args.profile:
        print(operator_profile(steps["fvae"]))
    save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
