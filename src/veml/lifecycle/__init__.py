"""Lifecycle functions built only on the version APIs: similarity, transfer, drift, rebuild."""
