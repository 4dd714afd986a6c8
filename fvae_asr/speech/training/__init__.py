"""Training runs: the Brain, run folders, exact resume, hyperparameter files, the recipe's flow."""
