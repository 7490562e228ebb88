"""Benchmarks: `make bench` (python -m bench). Each prints what it measured."""
