"""The TIMIT recipe as ``recipes/timit/train.py`` runs it, plus the result it returns written as JSON by the main
process: what ``compare_methods.py --launcher torchrun`` launches under torchrun, so that a run on several
processes gives the study the same result as a run in its own process.

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/compare/recipe_process.py RESULT.json \
        recipes/timit/hparams/train.yaml --data_folder=/path/TIMIT --device=cuda --precision=bf16
"""

from __future__ import annotations

import sys
from pathlib import Path

from speechbrain.utils.distributed import if_main_process

from fvae_asr.files import write_json
from fvae_asr.recipes.timit.train import main


def run_and_save(result_file: Path, argv: list[str]) -> None:
    """Run the recipe with ``argv`` (train.py's arguments); the main process writes its result to ``result_file``.

    Args:
        result_file: where the main process writes the returned result (atomically, once the run finished).
        argv: the hyperparameters file, then overrides and run options as on train.py's command line.
    """
    result = main(argv)
    if if_main_process():
        write_json(result_file, result)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print("usage: recipe_process.py RESULT.json HPARAMS.yaml [train.py's overrides and options]", file=sys.stderr)
        sys.exit(2)
    run_and_save(Path(sys.argv[1]), sys.argv[2:])
