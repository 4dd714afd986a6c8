"""Transcription throughput of our ``Transcriber`` against ``transformers.pipeline("automatic-speech-recognition")``.

One recogniser (a randomly initialised wav2vec2 of the chosen size with a random CTC head over a phone set, no
adapters: what a frozen or full run exports) is exported twice: by ``export_model`` for the Transcriber and
by ``export_hf_ctc`` (plus a feature extractor that normalises as the recogniser does) for the pipeline. Both
transcribe the same synthetic audio (noise with tones, written as 16 kHz wav files) on the CPU with the same
threads: (a) many short utterances, (b) one long recording, the pipeline with its chunking (``chunk_length_s``,
``stride_length_s``). Each runs in a fresh process, so that its peak resident memory (model included) is its own.
The two sides run in rounds, in turn and in alternating order (ours first in odd rounds, the pipeline first in even
ones), so that a change in the machine's load between them does not pass for a difference in speed.

Reported: seconds of audio per second of wall time for each (median over rounds), their ratio (ours over the
pipeline's: the median of the rounds' ratios, with quartiles), peak memory (the largest over rounds),
and agreement: the share of short files with identical phones, and the share of identical frames on the long one
(frames rebuilt from each side's phone timestamps, blank where no phone). Run with ``--help`` for the options;
``--quick`` (tiny model, little audio) takes under a minute.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from fvae_asr.files import write_json
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_hf_ctc, export_model
from fvae_asr.speech.models.recognizer import CTCRecognizer
from fvae_asr.speech.models.training_methods import configure_training

SAMPLE_RATE = 16_000
LABELS = ["<blank>", *(f"p{i}" for i in range(39))]  # a TIMIT-sized phone set, blank first
SIZES = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    ),
    "base": {},
}
GOALS = {"short_speed_ratio_ours_over_pipeline": 1.0, "long_speed_ratio_ours_over_pipeline": 1.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.transcribe_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, 10 short files, 30 s long file")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="wav2vec2 size (default base, quick tiny)")
    parser.add_argument("--utterances", type=int, default=None, help="short files (default 200, quick 10)")
    parser.add_argument("--long-seconds", type=float, default=None, help="long file (default 600, quick 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="short files per batch, both (default 8)")
    parser.add_argument("--chunk-seconds", type=float, default=20.0, help="both (default 20)")
    parser.add_argument("--context-seconds", type=float, default=2.0, help="ours; the pipeline's stride (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both sides (default 3, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    for name in ("utterances", "threads", "batch_size", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    args.size = args.size or ("tiny" if args.quick else "base")
    args.utterances = args.utterances or (10 if args.quick else 200)
    args.long_seconds = args.long_seconds or (30.0 if args.quick else 600.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if not args.long_seconds > args.chunk_seconds:
        parser.error(f"--long-seconds ({args.long_seconds:g}) must exceed --chunk-seconds ({args.chunk_seconds:g})")
    return args


def build_exports(size: str, seed: int, root: Path) -> tuple[Path, Path]:
    """One random recogniser exported for our Transcriber and as a Hugging Face CTC directory with its feature
    extractor; the head is scaled up so that frames carry many different phones (a demanding agreement check)."""
    torch.manual_seed(seed)
    Wav2Vec2Model(Wav2Vec2Config(**SIZES[size])).save_pretrained(root / "backbone")
    model = CTCRecognizer(SSLEncoder(root / "backbone"), len(LABELS)).eval()
    configure_training(model, "frozen")  # the encoder frozen, the head trained: what a frozen run exports
    with torch.no_grad():
        model.head.weight.mul_(20.0)
    ours = export_model(model, "frozen", LABELS, root / "ours")
    theirs = export_hf_ctc(model, LABELS, root / "hf")
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=model.encoder.normalize_wav,
        return_attention_mask=model.encoder.use_attention_mask,
    ).save_pretrained(str(theirs))
    return ours, theirs


def synth_audio(seconds: float, generator: np.random.Generator) -> np.ndarray:
    """Noise with a few tones that change every half second: speech-like levels; content is irrelevant here."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    freqs = np.repeat(generator.uniform(100, 3000, size=n // (SAMPLE_RATE // 2) + 1), SAMPLE_RATE // 2)[:n]
    wav = 0.3 * np.sin(2 * np.pi * np.cumsum(freqs) / SAMPLE_RATE) + 0.05 * generator.standard_normal(n)
    return (wav * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def write_corpus(root: Path, utterances: int, long_seconds: float, seed: int) -> tuple[list[Path], Path]:
    generator = np.random.default_rng(seed)
    short = []
    for index in range(utterances):
        path = root / f"utt{index:04d}.wav"
        sf.write(path, synth_audio(generator.uniform(1.0, 5.0), generator), SAMPLE_RATE)
        short.append(path)
    long_path = root / "long.wav"
    sf.write(long_path, synth_audio(long_seconds, generator), SAMPLE_RATE)
    return short, long_path


def _frames_from_segments(segments: list[tuple[str, float, float]], n_frames: int, hop_s: float) -> list[str]:
    """Per-frame label ('' for blank) from (phone, start s, end s) segments."""
    frames = [""] * n_frames
    for phone, start, end in segments:
        for frame in range(round(start / hop_s), min(n_frames, max(round(end / hop_s), round(start / hop_s) + 1))):
            frames[frame] = phone
    return frames


def _run_ours(model_dir: str, short: list[str], long_path: str, args: dict) -> dict:
    transcriber = Transcriber(
        model_dir,
        batch_size=args["batch_size"],
        chunk_seconds=args["chunk_seconds"],
        context_seconds=args["context_seconds"],
    )
    start = time.perf_counter()
    results = transcriber.transcribe_files(short)
    short_s = time.perf_counter() - start
    start = time.perf_counter()
    long_result = transcriber.transcribe(long_path, timestamps=True)
    long_s = time.perf_counter() - start
    return {
        "short_seconds": short_s,
        "long_seconds": long_s,
        "short_phones": [r.phones for r in results],
        "long_segments": [(s.phone, s.start, s.end) for s in long_result.segments],
    }


def _run_pipeline(model_dir: str, short: list[str], long_path: str, args: dict) -> dict:
    recognize = transformers.pipeline("automatic-speech-recognition", model=model_dir, device="cpu")
    decode = {"return_timestamps": "char"}

    def load(path: str) -> dict:  # decoded here, as the Transcriber reads its files itself
        wav, rate = sf.read(path, dtype="float32")
        return {"raw": wav, "sampling_rate": rate}

    start = time.perf_counter()
    outputs = recognize([load(p) for p in short], batch_size=args["batch_size"], **decode)
    short_s = time.perf_counter() - start
    start = time.perf_counter()
    long_output = recognize(
        load(long_path),
        chunk_length_s=args["chunk_seconds"] + 2 * args["context_seconds"],
        stride_length_s=args["context_seconds"],
        batch_size=1,
        **decode,
    )
    long_s = time.perf_counter() - start
    return {
        "short_seconds": short_s,
        "long_seconds": long_s,
        "short_phones": [[c["text"] for c in out["chunks"]] for out in outputs],
        "long_segments": [(c["text"], *c["timestamp"]) for c in long_output["chunks"]],
    }


def _in_child(runner: str, threads: int, *call_args) -> dict:
    """Run one side in this (fresh) process with ``threads`` torch threads; add its peak resident memory."""
    torch.set_num_threads(threads)
    result = {"ours": _run_ours, "pipeline": _run_pipeline}[runner](*call_args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return result


def run_side(runner: str, threads: int, *call_args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_in_child, (runner, threads, *call_args))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours_dir, hf_dir = build_exports(args.size, args.seed, root)
        (root / "audio").mkdir()
        short, long_path = write_corpus(root / "audio", args.utterances, args.long_seconds, args.seed)
        short_audio_s = sum(sf.info(p).duration for p in short)
        call = ([str(p) for p in short], str(long_path), vars(args))
        dirs = {"ours": str(ours_dir), "pipeline": str(hf_dir)}
        rounds = []
        for index in range(args.rounds):
            order = list(dirs) if index % 2 == 0 else list(dirs)[::-1]
            rounds.append({name: run_side(name, args.threads, dirs[name], *call) for name in order})
    sides = rounds[0]  # the outputs, the same in every round
    hop_s = 320 / SAMPLE_RATE if args.size == "base" else 20 / SAMPLE_RATE
    n_frames = int(args.long_seconds / hop_s) + 1
    long_frames = {name: _frames_from_segments(side["long_segments"], n_frames, hop_s) for name, side in sides.items()}
    results: dict = {
        "cpu_model": cpu_model(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": f"randomly initialised wav2vec2 {args.size} + random CTC head over {len(LABELS)} labels, exported "
        "frozen (export_model) and as Hugging Face CTC (export_hf_ctc)",
        "short_audio_seconds": short_audio_s,
        "long_audio_seconds": args.long_seconds,
    }
    audio_s = {"short": short_audio_s, "long": args.long_seconds}
    for name in sides:
        for kind, seconds in audio_s.items():
            speeds = [seconds / r[name][f"{kind}_seconds"] for r in rounds]
            results[f"{kind}_audio_s_per_s_{name}"] = float(np.median(speeds))
            results[f"{kind}_audio_s_per_s_{name}_rounds"] = speeds
        results[f"peak_rss_mb_{name}"] = max(r[name]["peak_rss_mb"] for r in rounds)
    for kind in audio_s:
        ratios = [r["pipeline"][f"{kind}_seconds"] / r["ours"][f"{kind}_seconds"] for r in rounds]
        results[f"{kind}_speed_ratio_ours_over_pipeline"] = float(np.median(ratios))
        results[f"{kind}_speed_ratio_quartiles"] = np.quantile(ratios, [0.25, 0.75]).tolist()
        results[f"{kind}_speed_ratio_rounds"] = ratios
    pairs = list(zip(sides["ours"]["short_phones"], sides["pipeline"]["short_phones"], strict=True))
    results["short_identical_phones_share"] = sum(a == b for a, b in pairs) / len(pairs)
    results["long_identical_frames_share"] = float(np.mean([a == b for a, b in zip(*long_frames.values())]))
    results["goals"] = {name: f">= {bound:g}" for name, bound in GOALS.items()}
    results["goals_met"] = {name: results[name] >= bound for name, bound in GOALS.items()}
    print(format_report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
    return results


def cpu_model() -> str:
    """The processor's model name where Linux tells it, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return names[0] if names else platform.processor() or platform.machine()


def format_report(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"{r['model']} | threads {s['threads']} | batch {s['batch_size']} | chunk {s['chunk_seconds']:g} s, "
        f"context/stride {s['context_seconds']:g} s | {s['rounds']} round(s), medians (ratio quartiles)",
        f"{'':34}{'ours':>10}{'pipeline':>10}{'ratio':>8}",
    ]
    for kind, what in (("short", f"{s['utterances']} short files"), ("long", f"one {s['long_seconds']:g} s file")):
        name = f"{kind}_speed_ratio_ours_over_pipeline"
        verdict = "met" if r["goals_met"][name] else "NOT met"
        lines.append(
            f"{what + ' (audio s / s)':34}{r[f'{kind}_audio_s_per_s_ours']:10.2f}"
            f"{r[f'{kind}_audio_s_per_s_pipeline']:10.2f}{r[name]:8.3f}  goal >= 1: {verdict}  "
            f"({' to '.join(f'{q:.3f}' for q in r[f'{kind}_speed_ratio_quartiles'])})"
        )
    lines += [
        f"{'peak resident memory (MiB)':34}{r['peak_rss_mb_ours']:10.0f}{r['peak_rss_mb_pipeline']:10.0f}",
        f"short files with identical phones: {r['short_identical_phones_share']:.1%}; "
        f"long file, identical frames: {r['long_identical_frames_share']:.1%}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
