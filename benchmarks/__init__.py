"""Benchmarks run on their own (not by pytest); each module says how."""
