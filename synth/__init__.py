"""Synthetic media with known answers, for the demo, the tests and the benchmarks.

Library code: no prefect, nothing of ``flows``. ``python -m synth ROOT`` writes
the demo's planted set (see :mod:`synth.planted`).
"""
