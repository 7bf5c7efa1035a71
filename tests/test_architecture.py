"""Rules of the code's shape that import-linter cannot state (it sees imports, not attribute access)."""

from __future__ import annotations

import ast
from pathlib import Path

import veml

SRC = Path(veml.__file__).parent


def _graph_reaches(path: Path, root: Path = SRC) -> list[str]:
    """Each ``<something>.graph`` attribute read in ``path``, as ``file:line`` under ``root``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted(f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and node.attr == "graph")


def test_lifecycle_code_goes_through_the_version_apis():
    """Similarity, transfer, drift, rebuild and monitoring read and record versions through the version APIs
    (``repo.data``, ``repo.training``, ``repo.reports``, ...), never the graph store underneath them."""
    files = sorted((SRC / "lifecycle").glob("*.py"))
    assert len(files) > 5
    assert [hit for f in files for hit in _graph_reaches(f)] == []


def test_the_rule_sees_a_graph_reach(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(self, stores):\n    self._s.graph.get(1)\n    return stores.graph\n")
    assert _graph_reaches(probe, tmp_path) == ["probe.py:2", "probe.py:3"]
