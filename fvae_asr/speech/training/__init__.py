"""Training runs around a recipe's flow: the resumable Brain, the run guard (run folders, locks, exact resume),
hyperparameter files, the training log, and the flow's steps that are not its method."""
