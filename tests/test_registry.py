"""The model registry (issue 16): ``veml --version``, aliases, ``veml model register`` and ``veml export onnx``.

Real data throughout: scikit-learn's handwritten digits as a small image folder and a table; tiny
models trained or fitted in seconds.  Expensive things (the repository, a trained run) are built
once per module and read back through the CLI, the way a user would.
"""

from __future__ import annotations

from conftest import run_cli


def test_version_prints_the_package_version():
    from importlib.metadata import version

    res = run_cli("--version")
    assert res.code == 0 and res.err == ""
    assert res.out == f"veml {version('veml')}\n"
