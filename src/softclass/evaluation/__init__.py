"""Evaluation: metrics, seed statistics and plots."""
