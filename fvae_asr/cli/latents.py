"""A look inside the latents of an exported recogniser or classifier: ``fvae-asr latents --checkpoint DIR
--manifest test.json --out DIR [--probes phone,speaker,domain | label,nuisance] [--no-ablations] [--quiet]``.

For an FVAE-LoRA export: linear probes for each label on z1 and on z2 of every adapted layer, chance beside
them, the PER (a classifier: its average and worst-group accuracy) with z1 at its prior mean (in every layer, and
in each alone) and each layer's reconstruction error with z2 (and z1) at its prior mean. For a LoRA export: the
same probes on ``A x``. A classifier's manifest gives each utterance its class (``label``) and spurious attribute
(``nuisance``), probed on every frame and on the utterance's mean latent. Writes ``DIR/latents.json`` and PNG
figures; exits 1 on a bad checkpoint (one without adapters included), manifest (one without the labels the
probes need included) or audio file, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fvae_asr.analysis.latents import (
    CLASSIFIER_PROBES,
    POOLED,
    PROBES,
    LatentAnalysis,
    analyze_classifier_latents,
    analyze_latents,
)
from fvae_asr.analysis.probes import ProbeSettings
from fvae_asr.argument_types import positive_int, torch_device
from fvae_asr.files import write_json
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.models.export import load_exported, read_description
from fvae_asr.speech.models.training_methods import ADAPTER_METHODS

DEFAULT_PROBES = {"ctc": "phone,speaker", "classification": ",".join(CLASSIFIER_PROBES)}  # by the export's task
KNOWN_PROBES = [*PROBES, *CLASSIFIER_PROBES]
MODEL_NAMES = {"ctc": "recogniser", "classification": "classifier"}


def probe_list(text: str) -> list[str]:
    """Comma-separated probe names, each known and named once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_PROBES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown probe(s) {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(PROBES)} (recognisers) or {', '.join(CLASSIFIER_PROBES)} "
            "(classifiers)"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a probe is named twice in {text!r}")
    return names


def fraction(text: str) -> float:
    """A share strictly between 0 and 1, such as ``--held-out``."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fvae-asr latents", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="FVAE-LoRA or LoRA recogniser or classifier directory written by export_model",
    )
    parser.add_argument(
        "--manifest",
        required=True,
        type=Path,
        help="JSON manifest; recogniser: prepare_timit's (wav, phn, phn_segments, spk_id, optionally "
        "domain); classifier: wav, label (its class), nuisance (a spurious attribute)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for latents.json and the figures")
    parser.add_argument(
        "--probes",
        type=probe_list,
        help=f"labels to probe for, comma-separated: recognisers from {', '.join(PROBES)} (default "
        f"{DEFAULT_PROBES['ctc']}), classifiers from {', '.join(CLASSIFIER_PROBES)} (default "
        f"{DEFAULT_PROBES['classification']})",
    )
    parser.add_argument(
        "--no-ablations", action="store_true", help="skip the PER (classifier: accuracy) ablations (one pass per layer)"
    )
    parser.add_argument(
        "--held-out",
        type=fraction,
        default=ProbeSettings.held_out_fraction,
        help="share of the speakers (utterances, for the speaker probe and for classifiers) held out "
        "from probe training",
    )
    parser.add_argument("--seed", type=int, default=ProbeSettings.seed, help="seed of the held-out choice")
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="utterances per forward pass")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars on stderr (shown by default, also when stderr is a log file)",
    )
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {args.out} is a file, not a folder")
    return args


def summary(report: dict) -> list[str]:
    """Lines for the console: each probe's accuracy range over layers per latent, and the PER ablations."""
    lines = []
    for probe, info in report["probes"].items():
        ranges = []
        for latent in report["latents"]:
            accuracies = [layer["probe"][probe][latent] for layer in report["layers"]]
            ranges.append(f"{latent} {min(accuracies):.2f}-{max(accuracies):.2f}")
        lines.append(
            f"{probe} probe (held out: {info['held_out']}): {', '.join(ranges)} over "
            f"{len(report['layers'])} layers; chance {info['chance']:.2f}"
        )
    for metric, values in report.get("ablations", {}).items():
        lines.append(
            f"{metric.replace('_', ' ')} {values['trained']:.2f}% as trained, "
            f"{values['z1_prior_all_layers']:.2f}% with z1 = 0 in every layer"
        )
    return lines


def write_outputs(analysis: LatentAnalysis, out: Path) -> list[Path]:
    """latents.json and the figures in ``out``; returns the files written."""
    from fvae_asr.analysis import plots  # matplotlib only when writing figures

    out.mkdir(parents=True, exist_ok=True)
    report = analysis.report
    written = [out / "latents.json"]
    write_json(written[0], report)
    written.append(out / "probe_accuracy.png")
    plots.plot_probe_accuracy(report, written[-1])
    shown = plots.projection_layers(list(analysis.recorder.records))
    for task in analysis.tasks:
        written.append(out / f"projection_{task.name}.png")
        unit = "utterances" if task.name.endswith(POOLED) else "frames"
        plots.plot_projections(analysis.projected_features(task, shown), task, written[-1], unit=unit)
    for metric in report.get("ablations", {}):
        written.append(out / f"{metric}_ablation.png")
        plots.plot_ablation(report, metric, written[-1])
    return written


def analyze(args: argparse.Namespace, settings: ProbeSettings) -> LatentAnalysis:
    """The analysis of the checkpoint, a recogniser or a classifier (its description's ``task``)."""
    description = read_description(args.checkpoint)
    task, method = description["task"], description["method"]
    if method not in ADAPTER_METHODS:
        raise ValueError(
            f"checkpoint {args.checkpoint} is a '{method}' {MODEL_NAMES[task]}: it has no adapter layers to look "
            "inside (give an FVAE-LoRA export for z1 and z2, or a LoRA export for A x)"
        )
    probes = args.probes or probe_list(DEFAULT_PROBES[task])
    ablations = not args.no_ablations
    if task == "classification":
        model, description = load_exported(args.checkpoint, args.device)
        return analyze_classifier_latents(
            model,
            description,
            args.manifest,
            probes,
            settings,
            args.batch_size,
            args.device,
            ablations,
            progress=not args.quiet,
        )
    transcriber = Transcriber(args.checkpoint, args.device, args.batch_size)
    return analyze_latents(transcriber, args.manifest, probes, settings, ablations=ablations, progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    settings = ProbeSettings(held_out_fraction=args.held_out, seed=args.seed)
    try:
        analysis = analyze(args, settings)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    analysis.report = {"checkpoint": str(args.checkpoint), **analysis.report}
    for line in summary(analysis.report):
        print(line, flush=True)
    try:
        written = write_outputs(analysis, args.out)
    except OSError as err:
        print(f"error: cannot write to {args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
