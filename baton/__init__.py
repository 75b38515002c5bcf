"""Baton: the coordination layer for AI workflows on Temporal."""
