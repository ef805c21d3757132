"""Onset detection: pure spectral functions and one stateful streaming detector per stream."""
