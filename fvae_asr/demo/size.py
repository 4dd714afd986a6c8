"""The demo's default corpus and training size (also the comparison study's): sized to finish within 300 s on
2 CPU cores. More utterances seen fewer times adapt better than few utterances seen often (see the README)."""

TRAIN_SPEAKERS = 64
SENTENCES_PER_SPEAKER = 10  # SI/SX sentences per speaker (SA1/SA2 come on top and are excluded by preparation)
EPOCHS = 5
