"""Absl-flag entry points: evaluate, train, render, benchmarks."""
