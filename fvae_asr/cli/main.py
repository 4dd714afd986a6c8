"""``fvae-asr <command> ...`` (also ``python -m fvae_asr``): one command line for everything the package does.

Each command's options are its module's (``fvae_asr.cli.<command>``, the demo's and the corpus generator's);
``train`` runs the packaged TIMIT recipe, so an installed user never hunts for its yaml.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# command -> (module, function, what it does); imported only when run, so that --help stays fast
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("fvae_asr.cli.main", "train", "train a phone recogniser with the TIMIT recipe (SpeechBrain)"),
    "transcribe": ("fvae_asr.cli.transcribe", "main", "phones, with times, from audio files"),
    "evaluate": ("fvae_asr.cli.evaluate", "main", "phone error rate of a recogniser on a manifest"),
    "align": ("fvae_asr.cli.align", "main", "phone boundaries for audio whose phones are known (forced alignment)"),
    "latents": ("fvae_asr.cli.latents", "main", "what the adapters' latents carry: probes and ablations"),
    "demo": ("fvae_asr.demo.__main__", "main", "the offline demo: synthetic corpus, adaptation, summary"),
    "synthetic": ("fvae_asr.synthetic.__main__", "main", "write a synthetic TIMIT-layout corpus"),
}


def train(argv: Sequence[str]) -> int:
    """``fvae-asr train [--hparams FILE] [--key=value ...]``: the recipe with the packaged ``hparams/train.yaml`` unless
    ``--hparams`` names another; every other argument is the recipe's own (SpeechBrain's overrides). No arguments,
    or ``--help``, lists the yaml's settings."""
    from fvae_asr.recipes.timit import recipe_file
    from fvae_asr.recipes.timit.train import main as recipe_main
    from fvae_asr.speech.training.recipe_help import answer_help

    parser = argparse.ArgumentParser(prog="fvae-asr train", add_help=False)
    parser.add_argument("--hparams", default=str(recipe_file("hparams/train.yaml")))
    known, rest = parser.parse_known_args(argv)
    code = answer_help(
        [known.hparams, *rest] if argv else [], Path(known.hparams), "fvae-asr train [--hparams FILE] [--key=value ...]"
    )
    if code is not None:
        return code
    recipe_main([known.hparams, *rest])
    return 0


def _command_function(name: str) -> Callable[[Sequence[str]], int | None]:
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv[0]``'s command with the rest of ``argv``; usage errors exit 2."""
    parser = argparse.ArgumentParser(
        prog="fvae-asr",
        description="FVAE-LoRA for speech recognition. Run `fvae-asr <command> --help` for a command's options.",
        epilog="\n".join(f"  {name:<11} {what}" for name, (_, _, what) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return _command_function(args.command)(args.args) or 0


if __name__ == "__main__":
    sys.exit(main())
