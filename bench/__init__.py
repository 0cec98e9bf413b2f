"""Benchmarks and the video edits they (and the tests and demo) use."""
