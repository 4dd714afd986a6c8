"""What adapter latents carry, for any model with adapter layers: recording them, linear probes, plots.

Modality-agnostic like the adapter core: the speech side (frames, phones, speakers) is fvae_asr.analysis.latents.
"""
