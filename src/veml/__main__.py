"""``python -m veml``: the ``veml`` command (as ``python -m veml.cli.main``)."""

from veml.cli.main import run

run()
