"""The recogniser and classifier modules, their encoders, and the self-contained export."""
