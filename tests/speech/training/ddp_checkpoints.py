"""Run by torchrun on two processes: ``AtomicCheckpointer.save_and_keep_only`` as the recipe calls it each epoch,
with the main process slow to rename its staged checkpoint, as on a loaded machine. Prints each process's view of
the checkpoints at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from fvae_asr.speech.training.resume import AtomicCheckpointer


def main(folder: Path) -> None:
    dist.init_process_group("gloo")
    if dist.get_rank() == 0:
        rename = Path.rename

        def slow_rename(self: Path, target: Path) -> Path:
            time.sleep(0.5)
            return rename(self, target)

        Path.rename = slow_rename
    checkpointer = AtomicCheckpointer(folder, recoverables={"model": torch.nn.Linear(2, 2)})
    for epoch in range(3):
        checkpointer.save_and_keep_only(meta={"PER": 10.0 - epoch}, min_keys=["PER"])
    seen = sorted(c.meta["PER"] for c in checkpointer.list_checkpoints())
    sys.stdout.write(f"rank {dist.get_rank()} sees {seen}\n")  # one write: the two processes share the output
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
