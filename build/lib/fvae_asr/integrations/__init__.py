"""Integrations of the adapter core with third-party training loops (optional extras, imported on demand)."""
