"""The recogniser and classifier modules, their encoders, the ways of training them, and the self-contained export."""
