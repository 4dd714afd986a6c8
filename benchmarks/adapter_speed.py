"""Speed and memory of FVAE-LoRA against plain LoRA, and of our diagonal objective against a full-covariance one.

Three comparisons, each measured side by side in one run with the variants interleaved (A B, B A, A B, ...) so
that machine noise hits both alike; times are medians over rounds, and ratios are medians over rounds of the
ratio of the two steps run back to back.

1. Train step of a whole wav2vec2-base-sized ``Wav2Vec2Model`` (random init, q_proj/k_proj adapted, CNN feature
   encoder frozen): forward, linear CTC head, ``task + aux_weight * aux_loss``, backward, AdamW step.
2. Eval step of the same model: forward under ``torch.inference_mode()`` in eval mode.
3. One adapted layer: the ``FVAELoRALinear`` training forward plus backward of its recorded loss, against the same
   objective with the reconstruction term scored by a full ``MultivariateNormal`` as the authors' code does.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation at the step's start; on CPU, the
peak of live bytes above the step's start, replayed from the CPU allocator's alloc/free records that
``torch.profiler`` (``profile_memory=True``) keeps. Both count tensor memory only (no allocator caches, no Python).

Run ``python benchmarks/adapter_speed.py --help`` for the options; ``--quick`` takes under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.distributions import MultivariateNormal
from transformers import Wav2Vec2Config, Wav2Vec2Model

import fvae_asr.adapters.layers as adapter_layers_module
from fvae_asr import FVAELoRAConfig, FVAELoRALinear, LoRAConfig, aux_loss, frame_mask, inject

SAMPLE_RATE = 16_000
CTC_VOCAB = 40  # a phone-set-sized CTC head (39 phones + blank)
LEARNING_RATE = 1e-5  # small, so that many rounds of random-data steps stay finite

# name -> (comparison, bound): the figures the adapters are meant to reach.
GOALS: dict[str, tuple[str, float]] = {
    "train_step_ratio_fvae_over_lora": ("<=", 1.15),
    "eval_step_ratio_fvae_over_lora": ("<=", 1.05),
    "layer_speedup_vs_fullcov": (">=", 5.0),
}

# A small wav2vec2 for smoke tests (--tiny): the figures it gives say nothing about the real model.
TINY_WAV2VEC2 = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32, 32),
    conv_stride=(10, 8),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run; written to the JSON next to the figures."""

    device: str
    threads: int
    rounds: int
    warmup: int
    layer_rounds: int
    batch: int
    seconds: float
    short_fraction: float
    rank: int
    layer_batch: int
    layer_frames: int
    tiny: bool
    seed: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="FVAE-LoRA vs LoRA step time and peak memory on wav2vec2-base, and the per-layer speed-up of "
        "the diagonal-Gaussian objective over the authors' full-covariance scoring.",
    )
    parser.add_argument("--quick", action="store_true", help="5 rounds, 0.5 s of audio: under a minute on 2 cores")
    parser.add_argument("--tiny", action="store_true", help="tiny wav2vec2 (hidden 64, 2 layers): smoke tests only")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is steadiest when busy)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per comparison (default 10, quick 5)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="longest utterance in seconds (default 3, quick 0.5)"
    )
    parser.add_argument("--batch", type=int, default=2, help="utterances per batch; all but the first are shorter")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank (default 16, the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here as JSON")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Fill the defaults that depend on --quick and apply --threads."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 10)
    return Settings(
        device=args.device,
        threads=torch.get_num_threads(),
        rounds=rounds,
        warmup=0 if args.quick else 1,  # on top of the two calls of the memory measurement
        layer_rounds=4 * rounds,
        batch=args.batch,
        seconds=args.seconds if args.seconds is not None else (0.5 if args.quick else 3.0),
        short_fraction=0.7,
        rank=args.rank,
        layer_batch=2,
        layer_frames=150,
        tiny=args.tiny,
        seed=args.seed,
    )


# ----------------------------------------------------------------------------------------------- measuring tools


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call in milliseconds, with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def interleaved_times_ms(
    steps: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Times of each step over ``rounds``, running the steps back to back and reversing their order every round."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            times[name].append(time_ms(steps[name], device))
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two steps timed back to back: robust to load that drifts between rounds."""
    return statistics.median([n / d for n, d in zip(numerator, denominator, strict=True)])


def memory_measure(device: torch.device) -> str:
    """How ``peak_memory_bytes`` measures on this device, for the report."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation at the step's start (steady-state step)"
    return (
        "peak live CPU tensor bytes above those at the step's start (steady-state step), replayed from the "
        "CPU allocator's alloc/free records kept by torch.profiler(profile_memory=True)"
    )


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak tensor memory of a steady-state call: one call to warm up, then the peak of the next one.

    Call it on fresh objects, before anything else ran them: on CPU the profiler only knows the size of blocks
    allocated while it records, and both calls run under it.
    """
    if device.type != "cuda":
        return _cpu_peak_memory_bytes(fn)
    fn()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start


_MEASURED = "adapter_speed.measured_call"


def _cpu_peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Replay the CPU allocator's records (+bytes on alloc, -bytes on free) in time order over the second call."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep Kineto's start-up chatter off stderr
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True, acc_events=True) as prof:
        fn()
        with torch.profiler.record_function(_MEASURED):
            fn()
    events = prof.profiler.kineto_results.events()
    window = next(e for e in events if e.name() == _MEASURED)
    records = sorted(
        (e for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for record in records:
        if window.start_ns() <= record.start_ns() <= window.end_ns():
            live += record.nbytes()
            peak = max(peak, live)
    return peak


# ----------------------------------------------------------------------------------------------- the whole model


def wav2vec2_config(tiny: bool) -> Wav2Vec2Config:
    """``Wav2Vec2Config()`` defaults (wav2vec2-base: hidden 768, 12 layers, 12 heads, FFN 3072) without LayerDrop."""
    return Wav2Vec2Config(layerdrop=0.0, **(TINY_WAV2VEC2 if tiny else {}))


@dataclass
class SpeechBatch:
    """Zero-padded wavs with the frame mask a speech recipe derives from the wav lengths, and CTC targets."""

    wavs: Tensor  # (B, S)
    frame_mask: Tensor  # (B, T) bool
    frame_lengths: Tensor  # (B,)
    targets: Tensor  # (B, L)
    target_lengths: Tensor  # (B,)


def make_batch(model: Wav2Vec2Model, settings: Settings, device: torch.device) -> SpeechBatch:
    """The first utterance lasts ``seconds``, the others ``short_fraction`` of it; padding is zeros.

    wav2vec2-base (group-norm CNN) takes no attention mask, as Hugging Face recommends for it: only the adapters
    are told which frames are padding.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    n_samples = int(settings.seconds * SAMPLE_RATE)
    lengths = torch.tensor([n_samples] + [int(settings.short_fraction * n_samples)] * (settings.batch - 1))
    wavs = torch.randn(settings.batch, n_samples, generator=generator)
    wavs *= torch.arange(n_samples)[None, :] < lengths[:, None]
    frame_lengths = model._get_feat_extract_output_lengths(lengths).long()
    n_frames = int(model._get_feat_extract_output_lengths(torch.tensor(n_samples)))
    mask = torch.arange(n_frames)[None, :] < frame_lengths[:, None]
    target_lengths = (frame_lengths // 4).clamp_min(1)
    targets = torch.randint(1, CTC_VOCAB, (settings.batch, int(target_lengths.max())), generator=generator)
    return SpeechBatch(
        wavs.to(device), mask.to(device), frame_lengths.to(device), targets.to(device), target_lengths.to(device)
    )


class AdaptedSpeechModel:
    """A wav2vec2 with adapters, a linear CTC head and AdamW over the trainable parameters: one train or eval step."""

    def __init__(self, adapter_config: FVAELoRAConfig | LoRAConfig, settings: Settings, device: torch.device) -> None:
        torch.manual_seed(settings.seed)  # the same base weights and head for every adapter kind
        self.model = Wav2Vec2Model(wav2vec2_config(settings.tiny))
        self.model.freeze_feature_encoder()
        inject(self.model, adapter_config)
        self.head = nn.Linear(self.model.config.hidden_size, CTC_VOCAB)
        self.model.to(device)
        self.head.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
        self.aux_weight = getattr(adapter_config, "aux_weight", 0.0)

    def logits(self, batch: SpeechBatch) -> Tensor:
        with frame_mask(self.model, batch.frame_mask):
            return self.head(self.model(batch.wavs).last_hidden_state)

    def train_step(self, batch: SpeechBatch) -> None:
        self.model.train()
        log_probs = self.logits(batch).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        task = F.ctc_loss(log_probs, batch.targets, batch.frame_lengths, batch.target_lengths, zero_infinity=True)
        loss = task + self.aux_weight * aux_loss(self.model)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the gradients within the step, as they are made in it

    def eval_step(self, batch: SpeechBatch) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.logits(batch)


def compare_models(settings: Settings, device: torch.device) -> dict[str, float]:
    """Median train and eval step times and peak memories of FVAE-LoRA and LoRA on the same model and batch."""
    fvae = AdaptedSpeechModel(FVAELoRAConfig(rank=settings.rank), settings, device)
    lora = AdaptedSpeechModel(LoRAConfig(rank=settings.rank), settings, device)
    batch = make_batch(fvae.model, settings, device)
    results: dict[str, float] = {"frames": int(batch.frame_mask.shape[1]), "valid_frames": int(batch.frame_mask.sum())}
    runners = {"fvae": fvae, "lora": lora}
    steps = {kind: {name: _step(runner, kind, batch) for name, runner in runners.items()} for kind in ("train", "eval")}
    # Memory first, while the runners are fresh (see peak_memory_bytes).
    peaks = {kind: {name: peak_memory_bytes(fn, device) for name, fn in pair.items()} for kind, pair in steps.items()}
    for kind, pair in steps.items():
        times = interleaved_times_ms(pair, settings.rounds, settings.warmup, device)
        for name in pair:
            results[f"{kind}_step_ms_{name}"] = statistics.median(times[name])
            results[f"{kind}_peak_memory_mb_{name}"] = peaks[kind][name] / 2**20
        results[f"{kind}_step_ratio_fvae_over_lora"] = paired_ratio(times["fvae"], times["lora"])
        results[f"{kind}_peak_memory_ratio_fvae_over_lora"] = peaks[kind]["fvae"] / peaks[kind]["lora"]
    return results


def _step(runner: AdaptedSpeechModel, kind: str, batch: SpeechBatch) -> Callable[[], None]:
    step = runner.train_step if kind == "train" else runner.eval_step
    return lambda: step(batch)


# ----------------------------------------------------------------------------------------------- one adapted layer


def fullcov_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log N(x; mean, L L^T) with the (d, d) scale matrix L = diag(exp(log_scale)), scored as the authors' code does.

    ``MultivariateNormal(...).log_prob`` solves the d x d triangular system L u = x - mean for every frame (one
    triangular solve with the frames as right-hand sides): O(d^2) per frame where the diagonal formula needs O(d).
    Same value as ``objective.gaussian_nll``. Like the authors, no argument validation; unlike them, no 1e-5 * I
    added to L, so that both objectives are equal.
    """
    scale_tril = torch.diag_embed(log_scale.exp())
    return -MultivariateNormal(loc=mean, scale_tril=scale_tril, validate_args=False).log_prob(x)


class FullCovFVAELoRALinear(FVAELoRALinear):
    """``FVAELoRALinear`` whose reconstruction term uses ``fullcov_gaussian_nll``; every other term is unchanged."""

    def _sample_and_score(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        with mock.patch.object(adapter_layers_module, "gaussian_nll", fullcov_gaussian_nll):
            return super()._sample_and_score(x, mask)


def layer_pair(settings: Settings, device: torch.device) -> tuple[FVAELoRALinear, FullCovFVAELoRALinear, Tensor]:
    """Our layer and the full-covariance one with identical weights, a frame mask set, and their input."""
    d = wav2vec2_config(settings.tiny).hidden_size
    torch.manual_seed(settings.seed)
    config = FVAELoRAConfig(rank=settings.rank)
    ours = FVAELoRALinear(nn.Linear(d, d), config, "layer").to(device)
    fullcov = FullCovFVAELoRALinear(copy.deepcopy(ours.base), config, "layer").to(device)
    fullcov.load_state_dict(ours.state_dict())
    frames = settings.layer_frames
    lengths = torch.tensor([frames] + [int(settings.short_fraction * frames)] * (settings.layer_batch - 1))
    mask = (torch.arange(frames)[None, :] < lengths[:, None]).to(device)
    for layer in (ours, fullcov):
        layer.frame_mask = mask
        layer.train()
    x = torch.randn(settings.layer_batch, frames, d, device=device)
    return ours, fullcov, x


def layer_train_step(layer: FVAELoRALinear, x: Tensor) -> Tensor:
    """Training forward of one adapted layer and backward of its recorded FVAE loss; returns the terms."""
    layer.zero_grad(set_to_none=True)
    layer(x)
    terms = layer.last_terms
    terms["total"].backward()
    return terms


def check_same_objective(ours: FVAELoRALinear, fullcov: FullCovFVAELoRALinear, x: Tensor, seed: int) -> float:
    """Relative difference of the two losses under the same noise; raises unless they are the same objective and
    the full-covariance scoring really ran (it would not if ``FVAELoRALinear`` stopped calling ``gaussian_nll``)."""
    torch.manual_seed(seed)
    ours_total = layer_train_step(ours, x)["total"].item()
    torch.manual_seed(seed)
    with mock.patch.object(sys.modules[__name__], "fullcov_gaussian_nll", wraps=fullcov_gaussian_nll) as scorer:
        fullcov_total = layer_train_step(fullcov, x)["total"].item()
    if not scorer.called:
        raise RuntimeError("FVAELoRALinear no longer scores through layers.gaussian_nll: update FullCovFVAELoRALinear")
    gap = abs(ours_total - fullcov_total) / max(abs(ours_total), 1e-12)
    if not gap < 1e-4:
        raise RuntimeError(f"full-covariance loss {fullcov_total} differs from ours {ours_total}: not comparable")
    return gap


def compare_layers(settings: Settings, device: torch.device) -> dict[str, float]:
    """Median step time and peak memory of our layer against the full-covariance scoring."""
    ours, fullcov, x = layer_pair(settings, device)
    steps = {"ours": lambda: layer_train_step(ours, x), "fullcov": lambda: layer_train_step(fullcov, x)}
    peaks = {name: peak_memory_bytes(step, device) for name, step in steps.items()}  # first: see peak_memory_bytes
    gap = check_same_objective(ours, fullcov, x, settings.seed)
    times = interleaved_times_ms(steps, settings.layer_rounds, settings.warmup, device)
    return {
        "layer_dim": x.shape[-1],
        "layer_step_ms_ours": statistics.median(times["ours"]),
        "layer_step_ms_fullcov": statistics.median(times["fullcov"]),
        "layer_speedup_vs_fullcov": paired_ratio(times["fullcov"], times["ours"]),
        "layer_peak_memory_mb_ours": peaks["ours"] / 2**20,
        "layer_peak_memory_mb_fullcov": peaks["fullcov"] / 2**20,
        "layer_peak_memory_ratio_fullcov_over_ours": peaks["fullcov"] / peaks["ours"],
        "layer_loss_relative_gap": gap,
    }


# ----------------------------------------------------------------------------------------------- report


def goal_verdicts(results: dict[str, float]) -> dict[str, bool]:
    """PASS (True) or MISS (False) for every goal."""
    return {
        name: results[name] <= bound if op == "<=" else results[name] >= bound for name, (op, bound) in GOALS.items()
    }


def format_report(results: dict) -> str:
    """A readable table of the times, ratios, memories and goals."""
    r = results
    lines = [
        f"device {r['device']} | torch {r['torch_version']} | threads {r['threads']} | "
        f"batch {r['settings']['batch']} x {r['settings']['seconds']:g} s ({r['frames']} frames, "
        f"{r['valid_frames']} valid) | rank {r['settings']['rank']} | rounds {r['settings']['rounds']}",
        f"{'':34}{'FVAE-LoRA':>12}{'LoRA':>12}{'ratio':>9}",
    ]
    for kind in ("train", "eval"):
        lines.append(
            f"{kind + ' step (ms, median)':34}{r[f'{kind}_step_ms_fvae']:12.1f}{r[f'{kind}_step_ms_lora']:12.1f}"
            f"{r[f'{kind}_step_ratio_fvae_over_lora']:9.3f}"
        )
        lines.append(
            f"{kind + ' peak memory (MiB)':34}{r[f'{kind}_peak_memory_mb_fvae']:12.1f}"
            f"{r[f'{kind}_peak_memory_mb_lora']:12.1f}{r[f'{kind}_peak_memory_ratio_fvae_over_lora']:9.3f}"
        )
    lines += [
        f"one layer, d={r['layer_dim']}, {r['settings']['layer_batch']} x {r['settings']['layer_frames']} frames, "
        f"fwd+bwd ({r['settings']['layer_rounds']} rounds):",
        f"{'':34}{'ours':>12}{'full-cov':>12}{'ratio':>9}",
        f"{'step (ms, median)':34}{r['layer_step_ms_ours']:12.2f}{r['layer_step_ms_fullcov']:12.2f}"
        f"{r['layer_speedup_vs_fullcov']:9.2f}",
        f"{'peak memory (MiB)':34}{r['layer_peak_memory_mb_ours']:12.2f}{r['layer_peak_memory_mb_fullcov']:12.2f}"
        f"{r['layer_peak_memory_ratio_fullcov_over_ours']:9.2f}",
        "ratio: median over rounds of the two steps' ratio, timed back to back; memory ratios: of the peaks",
        f"memory measure: {r['memory_measure']}",
        load_line(r),
        "goals:",
    ]
    for name, (op, bound) in GOALS.items():
        verdict = "PASS" if r["goals_met"][name] else "MISS"
        lines.append(f"  {name:34}{r[name]:8.3f} {op} {bound:<5g} {verdict}")
    return "\n".join(lines)


def cpu_name() -> str:
    """The processor's model name where Linux tells it, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average: how many runnable processes compete for the CPUs (None where unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_line(results: dict) -> str:
    """The machine's load during the run, with a hint when other work competed for the CPUs."""
    start, end, cpus = results["load_average_start"], results["load_average_end"], results["cpu_count"]
    if start is None or end is None:
        return "load average: unknown"
    line = f"load average (1 min): {start:.2f} at start, {end:.2f} at end, on {cpus} logical CPUs"
    # The run itself adds up to `threads` to the end figure; more than the CPUs means other work competed.
    if max(start + results["threads"], end) > cpus:
        line += ": other work competed for the CPUs, so the timings are noisy (--threads 1 suffers least)"
    return line


def main(argv: list[str] | None = None) -> dict:
    """Run the three comparisons, print the table, write the JSON if asked, and return the figures."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    device = torch.device(settings.device)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "threads": settings.threads,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_average(),
        "settings": asdict(settings),
        "memory_measure": memory_measure(device),
    }
    results.update(compare_models(settings, device))
    results.update(compare_layers(settings, device))
    results["load_average_end"] = load_average()
    results["goals"] = {name: f"{op} {bound:g}" for name, (op, bound) in GOALS.items()}
    results["goals_met"] = goal_verdicts(results)
    print(format_report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
