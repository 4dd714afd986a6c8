"""SpeechBrain recipe for TIMIT phone recognition (``train.py``, ``hparams/train.yaml``; the demo's overrides in
``hparams/demo.yaml``)."""
