"""Benchmarks: `invoke bench` (inside the SVM lab), or `python -m bench --device ...`."""
