"""Code the studies share: running tasks in worker processes, picking rates, records and their commands."""
