"""Faithfulness: our FVAE-LoRA layer against the authors' own, built as their code builds it."""
