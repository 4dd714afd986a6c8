"""Whole-model speed and memory of FVAE-LoRA against an authors'-style implementation of its objective and LoRA.

Three variants of one wav2vec2-sized ``Wav2Vec2Model`` (random init, q_proj/k_proj adapted, CNN feature encoder
frozen), built from the same seed, timed side by side in one run:

- ``fvae``: this package's ``FVAELoRALinear``;
- ``authors``: ``AuthorsStyleFVAELoRALinear`` below, the same parameters and the same objective computed the way
  the authors' published layer computes it (full ``MultivariateNormal`` reconstruction term, no padding mask, and
  the whole objective computed in eval mode too);
- ``lora``: plain LoRA;
- ``fvae_recompute`` (train step only: its eval is ``fvae``'s): ``fvae`` with ``recompute_scoring=True``, which
  recomputes the scoring branch in backward instead of keeping its activations.

Train step: forward, linear CTC head, ``task + aux_weight * aux_loss``, backward, AdamW step. Eval step: forward
under ``torch.inference_mode()`` in eval mode. The variants run interleaved, each round in a rotated order
(A B C, B C A, C A B, ...) so that machine noise and position effects spread evenly; times are medians over
rounds, and ratios are medians over rounds of the ratio of two variants timed in the same round.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation at the step's start; on CPU, the
peak of live bytes above the step's start, replayed from the CPU allocator's alloc/free records that
``torch.profiler`` (``profile_memory=True``) keeps. Both count tensor memory only (no allocator caches, no Python).

Run ``python -m benchmarks.speed.adapter_speed --help`` for the options; ``--quick`` takes under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from torch.autograd import DeviceType
from transformers import Wav2Vec2Config, Wav2Vec2Model

from benchmarks.speed.authors_style import AuthorsStyleFVAELoRALinear, same_objective_gap
from fvae_asr import FVAELoRAConfig, LoRAConfig, aux_loss, frame_mask, inject
from fvae_asr.files import write_json

SAMPLE_RATE = 16_000
CTC_VOCAB = 40  # a phone-set-sized CTC head (39 phones + blank)
LEARNING_RATE = 1e-5  # small, so that many rounds of random-data steps stay finite
VARIANTS = ("fvae", "authors", "lora", "fvae_recompute")
EVAL_VARIANTS = VARIANTS[:3]  # recompute_scoring changes nothing in eval

# name -> (comparison, bound): the figures the adapters are meant to reach (issue 21).
GOALS: dict[str, tuple[str, float]] = {
    "train_step_speedup_vs_authors": (">=", 1.12),
    "eval_step_speedup_vs_authors": (">=", 1.10),
    "train_step_ratio_fvae_over_lora": ("<=", 1.12),
    "eval_step_ratio_fvae_over_lora": ("<=", 1.02),
    "train_peak_memory_ratio_fvae_recompute_over_lora": ("<=", 1.08),
}

# Wav2Vec2Config overrides per size; base is the config's defaults (hidden 768, 12 layers, 12 heads, FFN 3072).
MODEL_SIZES: dict[str, dict] = {
    "tiny": dict(  # smoke tests only: its figures say nothing about the real models
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32),
        conv_stride=(10, 8),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
    "base": {},
    "large": dict(  # wav2vec2-large(-lv60): layer-norm CNN and pre-norm transformer, which take an attention mask
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    ),
}
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
# AdamW's implementation, the same for every variant: torch's default (on CPU a loop over the parameter tensors,
# which costs FVAE-LoRA's many small tensors more than LoRA's few) or its multi-tensor kernels.
ADAMW_IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "default": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run; written to the JSON next to the figures."""

    device: str
    dtype: str
    size: str
    clock: str
    threads: int
    rounds: int
    warmup: int
    batch: int
    seconds: float
    short_fraction: float
    rank: int
    seed: int
    adamw: str = "default"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.adapter_speed",
        description="Train and eval step time and peak memory of FVAE-LoRA against an authors'-style "
        "implementation of the same objective and against LoRA, on a whole wav2vec2-sized model.",
    )
    parser.add_argument("--quick", action="store_true", help="5 rounds of short audio: under a minute on 2 cores")
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), default="base", help="wav2vec2 size (default base)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="bf16: autocast (default: fp32)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time (default), or this process's CPU time (cpu only: steadier on a shared machine, and with "
        "--threads 1 the same as wall time on an idle one)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is steadiest when busy)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per step kind (default 10, quick 5)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="longest utterance in seconds (default cpu 3, cuda 10; quick /6)"
    )
    parser.add_argument("--batch", type=int, default=None, help="utterances per batch (default cpu 2, cuda 8)")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank (default 16, the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--adamw",
        choices=sorted(ADAMW_IMPLEMENTATIONS),
        default="default",
        help="AdamW's implementation for every variant: torch's default (on CPU one parameter tensor at a time), "
        "foreach or fused (default: default)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA device here (torch.cuda.is_available() is False)")
    if args.device == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu times the CPU only: use --clock wall with --device cuda")
    for name in ("threads", "rounds", "batch", "rank"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Fill the defaults that depend on --quick and --device, and apply --threads."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    seconds = args.seconds if args.seconds is not None else (10.0 if cuda else 3.0) / (6 if args.quick else 1)
    return Settings(
        device=args.device,
        dtype=args.dtype,
        size=args.size,
        clock=args.clock,
        threads=torch.get_num_threads(),
        rounds=args.rounds if args.rounds is not None else (5 if args.quick else 10),
        warmup=(3 if cuda else 0 if args.quick else 1),  # on top of the two calls of the memory measurement
        batch=args.batch if args.batch is not None else (8 if cuda else 2),
        seconds=seconds,
        short_fraction=0.7,
        rank=args.rank,
        seed=args.seed,
        adamw=args.adamw,
    )


# ----------------------------------------------------------------------------------------------- measuring tools


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# What a step's time is: wall time, or the CPU time of this process (CPU only), which leaves out the time other
# processes held the cores: on a shared machine it estimates what wall time would be on an idle one.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_ms(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Time of one call in milliseconds on ``clock``, with the device synchronised on both sides."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return 1e3 * (now() - start)


def interleaved_times_ms(
    steps: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device, clock: str = "wall"
) -> dict[str, list[float]]:
    """Times of each step over ``rounds``: all steps back to back each round, the order rotated by one per round."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_ms(steps[name], device, clock))
    return times


def paired_ratios(numerator: list[float], denominator: list[float]) -> tuple[float, list[float]]:
    """Median over rounds of the ratio of two steps timed in the same round (robust to load that drifts), and the
    quartiles of those ratios: how far the noise spreads them."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return statistics.median(ratios), quartiles(ratios)


def quartiles(values: list[float]) -> list[float]:
    """[first, third] quartile of values (the value twice when there is only one)."""
    cuts = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return [cuts[0], cuts[2]]


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


def wav2vec2_config(size: str) -> Wav2Vec2Config:
    """The wav2vec2 architecture of ``size`` without LayerDrop (which would skip layers at random)."""
    return Wav2Vec2Config(layerdrop=0.0, **MODEL_SIZES[size])


@dataclass
class SpeechBatch:
    """Zero-padded wavs with their sample mask, the frame mask a recipe derives from the lengths, CTC targets."""

    wavs: Tensor  # (B, S)
    sample_mask: Tensor  # (B, S) long, 1 on real samples
    frame_mask: Tensor  # (B, T) bool
    frame_lengths: Tensor  # (B,)
    targets: Tensor  # (B, L)
    target_lengths: Tensor  # (B,)


def make_batch(model: Wav2Vec2Model, settings: Settings, device: torch.device) -> SpeechBatch:
    """The first utterance lasts ``seconds``, the others ``short_fraction`` of it; padding is zeros."""
    generator = torch.Generator().manual_seed(settings.seed)
    n_samples = int(settings.seconds * SAMPLE_RATE)
    lengths = torch.tensor([n_samples] + [int(settings.short_fraction * n_samples)] * (settings.batch - 1))
    sample_mask = (torch.arange(n_samples)[None, :] < lengths[:, None]).long()
    wavs = torch.randn(settings.batch, n_samples, generator=generator) * sample_mask
    frame_lengths = model._get_feat_extract_output_lengths(lengths).long()
    n_frames = int(model._get_feat_extract_output_lengths(torch.tensor(n_samples)))
    mask = torch.arange(n_frames)[None, :] < frame_lengths[:, None]
    target_lengths = (frame_lengths // 4).clamp_min(1)
    targets = torch.randint(1, CTC_VOCAB, (settings.batch, int(target_lengths.max())), generator=generator)
    tensors = (wavs, sample_mask, mask, frame_lengths, targets, target_lengths)
    return SpeechBatch(*(t.to(device) for t in tensors))


def adapter_config(variant: str, rank: int) -> FVAELoRAConfig | LoRAConfig:
    """The shipped defaults at ``rank``: the peer takes FVAE-LoRA's config; ``fvae_recompute`` recomputes scoring."""
    if variant == "lora":
        return LoRAConfig(rank=rank)
    return FVAELoRAConfig(rank=rank, recompute_scoring=variant == "fvae_recompute")


class AdaptedSpeechModel:
    """A wav2vec2 with adapters, a linear CTC head and AdamW over the trainable parameters: one train or eval step."""

    def __init__(self, variant: str, settings: Settings, device: torch.device) -> None:
        torch.manual_seed(settings.seed)  # the same base weights, adapter init and head for every variant
        self.model = Wav2Vec2Model(wav2vec2_config(settings.size))
        self.model.freeze_feature_encoder()
        config = adapter_config(variant, settings.rank)
        inject(self.model, config, AuthorsStyleFVAELoRALinear if variant == "authors" else None)
        self.head = nn.Linear(self.model.config.hidden_size, CTC_VOCAB)
        self.model.to(device)
        self.head.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, **ADAMW_IMPLEMENTATIONS[settings.adamw])
        self.aux_weight = getattr(config, "aux_weight", 0.0)
        # wav2vec2-base's group-norm CNN takes no attention mask (as Hugging Face recommends); large takes one.
        self.takes_attention_mask = self.model.config.feat_extract_norm == "layer"
        autocast_dtype = DTYPES[settings.dtype]
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=autocast_dtype))
            if autocast_dtype is not None
            else contextlib.nullcontext
        )

    def logits(self, batch: SpeechBatch) -> Tensor:
        attention_mask = batch.sample_mask if self.takes_attention_mask else None
        with self.autocast(), frame_mask(self.model, batch.frame_mask):
            return self.head(self.model(batch.wavs, attention_mask=attention_mask).last_hidden_state)

    def train_step(self, batch: SpeechBatch) -> None:
        self.model.train()
        log_probs = self.logits(batch).float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
        task = F.ctc_loss(log_probs, batch.targets, batch.frame_lengths, batch.target_lengths, zero_infinity=True)
        loss = task + self.aux_weight * aux_loss(self.model)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the gradients within the step, as they are made in it

    def eval_step(self, batch: SpeechBatch) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.logits(batch)


def compare_models(settings: Settings, device: torch.device) -> dict:
    """Median train and eval step times and peak memories of the three variants on the same model and batch."""
    runners = {variant: AdaptedSpeechModel(variant, settings, device) for variant in VARIANTS}
    batch = make_batch(runners["fvae"].model, settings, device)
    results: dict = {"frames": int(batch.frame_mask.shape[1]), "valid_frames": int(batch.frame_mask.sum())}
    steps = {
        kind: {name: _step(runner, kind, batch) for name, runner in runners.items() if name in names}
        for kind, names in (("train", VARIANTS), ("eval", EVAL_VARIANTS))
    }
    # Memory first, while the runners are fresh (see peak_memory_bytes).
    peaks = {kind: {name: peak_memory_bytes(fn, device) for name, fn in trio.items()} for kind, trio in steps.items()}
    steps_times = {}
    for kind, trio in steps.items():
        times = steps_times[kind] = interleaved_times_ms(trio, settings.rounds, settings.warmup, device, settings.clock)
        results[f"{kind}_step_times_ms"] = times  # every round, for a look at the noise
        for name in trio:
            results[f"{kind}_step_ms_{name}"] = statistics.median(times[name])
            results[f"{kind}_step_ms_{name}_quartiles"] = quartiles(times[name])
            results[f"{kind}_peak_memory_mb_{name}"] = peaks[kind][name] / 2**20
        for name, (numerator, denominator) in {
            f"{kind}_step_speedup_vs_authors": ("authors", "fvae"),
            f"{kind}_step_ratio_fvae_over_lora": ("fvae", "lora"),
        }.items():
            results[name], results[f"{name}_quartiles"] = paired_ratios(times[numerator], times[denominator])
        results[f"{kind}_peak_memory_ratio_authors_over_fvae"] = peaks[kind]["authors"] / peaks[kind]["fvae"]
        results[f"{kind}_peak_memory_ratio_fvae_over_lora"] = peaks[kind]["fvae"] / peaks[kind]["lora"]
    train_peaks, train_times = peaks["train"], steps_times["train"]
    results["train_peak_memory_ratio_fvae_recompute_over_lora"] = train_peaks["fvae_recompute"] / train_peaks["lora"]
    cost = "train_step_ratio_fvae_recompute_over_fvae"
    results[cost], results[f"{cost}_quartiles"] = paired_ratios(train_times["fvae_recompute"], train_times["fvae"])
    return results


def _step(runner: AdaptedSpeechModel, kind: str, batch: SpeechBatch) -> Callable[[], None]:
    step = runner.train_step if kind == "train" else runner.eval_step
    return lambda: step(batch)


# ----------------------------------------------------------------------------------------------- report


def goal_verdicts(results: dict[str, float]) -> dict[str, bool]:
    """Met (True) or not (False) for every goal."""
    return {
        name: results[name] <= bound if op == "<=" else results[name] >= bound for name, (op, bound) in GOALS.items()
    }


def format_report(results: dict) -> str:
    """A readable table of the times and memories, the goals met or not, the memory ratios and the cost of
    recompute_scoring."""
    r, s = results, results["settings"]
    model = wav2vec2_config(s["size"])
    lines = [
        f"device {r['device']} | {s['dtype']} | torch {r['torch_version']} | threads {r['threads']} | "
        f"{s['clock']} clock",
        f"wav2vec2 {s['size']} (hidden {model.hidden_size}, {model.num_hidden_layers} layers) | q/k rank {s['rank']} "
        f"| batch {s['batch']} x {s['seconds']:g} s ({r['frames']} frames, {r['valid_frames']} valid) "
        f"| rounds {s['rounds']} | AdamW {s['adamw']}",
        f"{'':28}{'FVAE-LoRA':>12}{'authors-style':>15}{'LoRA':>10}{'FVAE recompute':>16}",
    ]
    widths = dict(zip(VARIANTS, (12, 15, 10, 16)))
    for kind in ("train", "eval"):
        shown = VARIANTS if kind == "train" else EVAL_VARIANTS
        times = "".join(f"{r[f'{kind}_step_ms_{v}']:{widths[v]}.1f}" for v in shown)
        peaks = "".join(f"{r[f'{kind}_peak_memory_mb_{v}']:{widths[v]}.1f}" for v in shown)
        lines += [f"{kind + ' step (ms, median)':28}{times}", f"{kind + ' peak memory (MiB)':28}{peaks}"]
    lines.append("goals (median over rounds of the ratio of two variants timed in the same round, and its quartiles):")
    for name, (op, bound) in GOALS.items():
        verdict = "met" if r["goals_met"][name] else "NOT met"
        spread = r.get(f"{name}_quartiles")
        spread = f"   (quartiles {spread[0]:.3f} to {spread[1]:.3f})" if spread else "   (one steady-state step)"
        lines.append(f"  {name:50}{r[name]:8.3f} {op} {bound:<5g} {verdict}{spread}")
    low, high = r["train_step_ratio_fvae_recompute_over_fvae_quartiles"]
    lines.append(
        f"recompute_scoring step-time cost: train_step_ratio_fvae_recompute_over_fvae "
        f"{r['train_step_ratio_fvae_recompute_over_fvae']:.3f} (quartiles {low:.3f} to {high:.3f})"
    )
    lines.append("peak memory ratios:")
    for kind in ("train", "eval"):
        for name in (f"{kind}_peak_memory_ratio_authors_over_fvae", f"{kind}_peak_memory_ratio_fvae_over_lora"):
            lines.append(f"  {name:42}{r[name]:8.3f}")
    lines += [
        f"peer check: authors-style loss vs ours, relative gap {r['authors_style_loss_relative_gap']:.1e}",
        f"memory measure: {r['memory_measure']}",
        load_line(r),
    ]
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


def save_json(path: Path | None, results: dict) -> None:
    """The figures as JSON at ``path`` (its folder made if needed), written atomically; nothing when path is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, results)


def main(argv: list[str] | None = None) -> dict:
    """Check the peer, run the comparison, print the table, write the JSON if asked, and return the figures."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    device = torch.device(settings.device)
    gap = same_objective_gap(adapter_config("fvae", settings.rank), features=32, frames=12, seed=settings.seed)
    if not gap < 1e-5:
        raise RuntimeError(f"the authors-style peer's loss differs from ours by {gap:.1e} (relative): not comparable")
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})",
        "cpu_model": cpu_name(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "threads": settings.threads,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_average(),
        "settings": asdict(settings),
        "memory_measure": memory_measure(device),
        "authors_style_loss_relative_gap": gap,
    }
    results.update(compare_models(settings, device))
    results["load_average_end"] = load_average()
    results["goals"] = {name: f"{op} {bound:g}" for name, (op, bound) in GOALS.items()}
    results["goals_met"] = goal_verdicts(results)
    print(format_report(results))
    save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
