"""Forced-alignment accuracy against reference phone boundaries."""
