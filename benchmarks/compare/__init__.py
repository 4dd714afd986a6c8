"""The comparison study: frozen, LoRA, FVAE-LoRA and full fine-tuning (and ablations) through the TIMIT recipe."""
