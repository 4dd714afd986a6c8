#!/usr/bin/env python3
"""TIMIT phone recognition with wav2vec2 + CTC, adapted with FVAE-LoRA, LoRA, full fine-tuning or frozen.

Usage:
    python recipes/timit/train.py recipes/timit/hparams.yaml --data_folder=/path/to/TIMIT [--adapter=lora]

The Brain (CTC + FVAE objective) is ``fvae_asr.speech.training.brain.PhoneCTCBrain``; the flow (prepare, fit, test
with the best dev-PER checkpoint, export the recogniser) is ``fvae_asr.speech.training.recipe.run``.
"""

from fvae_asr.speech.training.recipe import main

if __name__ == "__main__":
    main()
