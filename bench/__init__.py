"""Benchmarks: each measures the connector against a baseline in the same run."""
