"""Benchmarks: each ``bench/<name>.py`` is a script; ``python -m bench`` runs them all."""
