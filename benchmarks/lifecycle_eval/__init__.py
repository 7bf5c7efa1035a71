"""Lifecycle evaluation harness (issue 14): does ``veml similar`` pick the source that transfers best, on real data."""
