"""The ``veml`` command line: a thin face over :mod:`veml.repository`."""
