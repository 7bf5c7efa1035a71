"""How long work (import, embedding, prediction) reports how far it got.

API functions take ``progress: ProgressLike | None``: a :class:`Progress` (the CLI's bar, which then
shows a total and an ETA), or a plain ``Callable[[int], None]`` called with the number of items just
done (older callers, the server), which never hears the total.  The work itself normalises it once
with :func:`as_progress` and calls ``add_total`` as soon as it knows how many items there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    def add_total(self, n: int) -> None:
        """``n`` more items will be reported (totals add up: several sources, several data versions)."""

    def advance(self, n: int) -> None:
        """``n`` items were just done."""


ProgressLike = Union[Progress, Callable[[int], None]]


@dataclass(frozen=True)
class _Counter:
    """A plain callable behind the protocol: it hears what was done, not the total."""

    done: Callable[[int], None]

    def add_total(self, n: int) -> None:
        pass

    def advance(self, n: int) -> None:
        self.done(n)


class _Silent:
    def add_total(self, n: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


SILENT: Progress = _Silent()


def as_progress(progress: ProgressLike | None) -> Progress:
    """``progress`` as a :class:`Progress`; nothing given reports nowhere."""
    if progress is None:
        return SILENT
    return progress if isinstance(progress, Progress) else _Counter(progress)
