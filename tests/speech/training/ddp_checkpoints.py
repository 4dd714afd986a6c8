"""Two DDP processes (gloo, forked from this one: torch is imported once) call ``AtomicCheckpointer.
save_and_keep_only`` as the recipe does each epoch, the main process slow to rename its staged checkpoint, as on a
loaded machine. Each prints its view of the checkpoints at the end.

    python ddp_checkpoints.py SAVE_FOLDER PORT
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from fvae_asr.speech.training.resume import AtomicCheckpointer


def worker(rank: int, folder: Path, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo")
    if rank == 0:
        rename = Path.rename

        def slow_rename(self: Path, target: Path) -> Path:
            time.sleep(0.5)
            return rename(self, target)

        Path.rename = slow_rename
    checkpointer = AtomicCheckpointer(folder, recoverables={"model": torch.nn.Linear(2, 2)})
    for epoch in range(3):
        checkpointer.save_and_keep_only(meta={"PER": 10.0 - epoch}, min_keys=["PER"])
    seen = sorted(c.meta["PER"] for c in checkpointer.list_checkpoints())
    sys.stdout.write(f"rank {rank} sees {seen}\n")  # one write: the two processes share the output
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.multiprocessing.start_processes(
        worker, args=(Path(sys.argv[1]), int(sys.argv[2])), nprocs=2, start_method="fork"
    )
