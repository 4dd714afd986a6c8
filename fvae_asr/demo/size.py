"""The demo's corpus, training size and learning rates: sized to finish within 300 s on 2 CPU cores. More
utterances seen fewer times adapt better than few utterances seen often (see the README)."""

TRAIN_SPEAKERS = 64
SENTENCES_PER_SPEAKER = 10  # SI/SX sentences per speaker (SA1/SA2 come on top and are excluded by preparation)
EPOCHS = 5
# Each run at the rate the comparison study picked for it by dev PER on the same shift and targets (target
# domain, every linear layer adapted; docs/compare/results.md): the frozen head is the tuned baseline.
LEARNING_RATES = {"frozen": 0.05, "fvae_lora": 0.01}
WHY = ("Adapters on every linear layer: on the target shift the comparison study found adapters on q_proj/k_proj "
       "alone no better than a head on the frozen backbone, and every linear layer better. Each run trains at the "
       "learning rate the study picked for its method by dev PER on this shift (docs/compare/results.md).")
