"""Benchmarks: how much Baton costs on top of bare Temporal (see README)."""
