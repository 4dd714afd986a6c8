"""Run by test_trainer.py under ``torch.distributed.run --nproc_per_node=2``: FVAETrainer on CPU with gloo DDP.

DDP (``ddp_find_unused_parameters=False``) fails a step if any trainable parameter gets no gradient.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fvae_asr.integrations.transformers import FVAETrainer

from trainer_task import ParityTask, pad_collate, tiny_bert_classifier, training_args

if __name__ == "__main__":
    args = training_args(
        sys.argv[1],
        max_steps=4,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=2,
        ddp_find_unused_parameters=False,
        ddp_backend="gloo",
    )
    trainer = FVAETrainer(
        model=tiny_bert_classifier(), args=args, train_dataset=ParityTask(), data_collator=pad_collate
    )
    trainer.train()
    assert trainer.args.world_size == 2, trainer.args.world_size
    if trainer.is_world_process_zero():
        print("DDP_DONE", [entry for entry in trainer.state.log_history if "fvae_gamma" in entry])
    trainer.end()  # destroys the process group, as torch.distributed asks of every script
    # torch 2.11's gloo threads may still be freeing the last collective's tensors, which takes the GIL; if the
    # interpreter is finalizing by then, the finished run aborts (pytorch/pytorch#190489: 3 of 6 exits here
    # without trainer.end(), 1 of 10 with it). Everything is written, so leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
