"""Evaluation (and, later, training loops, checkpoints and export)."""
