"""Experiments: the paper's benchmark protocol and the end-to-end demo (--mode=benchmark, demo)."""
