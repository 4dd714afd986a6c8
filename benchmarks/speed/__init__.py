"""Speed and memory: FVAE-LoRA against LoRA and an authors'-style layer; transcription against the transformers
pipeline."""
