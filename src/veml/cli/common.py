"""What every command handler shares: the repository, output mode and progress bars."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import veml
from veml.progress import Progress

if TYPE_CHECKING:
    from veml.repository import Repository


@dataclass
class Context:
    repo_path: str | None
    as_json: bool
    debug: bool
    _repo: Repository | None = field(default=None, repr=False)

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = veml.open(self.repo_path)
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()

    def emit(self, obj: Any, text: str | Callable[[], str] | None = None) -> None:
        """One JSON document with ``--json``, else the human rendering (or indented JSON)."""
        if self.as_json:
            sys.stdout.write(json.dumps(obj, default=str) + "\n")
            return
        out = text() if callable(text) else text
        sys.stdout.write((out if out is not None else json.dumps(obj, indent=2, default=str)).rstrip("\n") + "\n")

    @contextmanager
    def progress(self, desc: str, unit: str = "it") -> Iterator[Progress | None]:
        """A tqdm bar on a terminal's stderr, with a total and an ETA once the work tells how much there is;
        nothing with --json or when stderr is not a TTY."""
        if self.as_json or not sys.stderr.isatty():
            yield None
            return
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit=unit, file=sys.stderr, leave=False)
        try:
            yield _Bar(bar)
        finally:
            bar.close()


@dataclass(frozen=True)
class _Bar:
    """A tqdm bar as a :class:`veml.progress.Progress`."""

    bar: Any

    def add_total(self, n: int) -> None:
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)


def version_line(v: dict[str, Any]) -> str:
    extra = ""
    if v.get("kind") == "data":
        extra = f"  {v.get('modality', '')}/{v.get('role', '')}  samples={v.get('samples', 0)} annotations={v.get('annotations', 0)}"
    tags = f"  [{', '.join(v['tags'])}]" if v.get("tags") else ""
    return f"{v['id']:>6}  {v['kind']:<10} {v['name']}{extra}{tags}"
