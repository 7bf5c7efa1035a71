"""Content-addressed artifacts (adjacency matrices, checkpoints, deployed models, embeddings).

Every artifact is stored under its sha256 (``<root>/<first two hex digits>/<digest>``), in a local
directory (:class:`LocalArtifactStore`) or an object store (:class:`ObjectArtifactStore`,
``s3://bucket/prefix`` through s3fs).  Either way no reader ever sees a truncated artifact: locally
a file is written to a temporary name in the same directory and then renamed, so a killed writer
leaves at most a stray temp file; in an object store a PUT (or a multipart upload's completion)
makes the whole object visible at once or not at all.

Whatever deserializes an artifact reads it with :meth:`ArtifactStore.get_verified`: the bytes are
read once, hashed, and those very bytes are returned, so a file swapped on disk after a check
cannot reach a loader unverified (there is no separate check-then-read step to race).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, NoReturn, Protocol

from veml.errors import InvalidInput, NotFound, StorageError
from veml.store.object_store import S3Location, S3Settings


class ArtifactStore(Protocol):
    def put_bytes(self, data: bytes) -> str: ...

    def get_bytes(self, digest: str) -> bytes: ...

    def get_verified(self, digest: str, what: str | None = None) -> bytes:
        """The artifact's bytes, read once and returned only if their sha256 is ``digest``.

        :class:`NotFound` when it is missing, :class:`StorageError` when it is damaged; ``what``
        names it in those messages (default ``artifact <digest[:12]>``)."""

    def read_range(self, digest: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end): a slice without fetching the whole artifact."""

    def exists(self, digest: str) -> bool: ...

    def verify(self, digest: str) -> bool: ...

    def digests(self) -> Iterator[str]: ...

    def remove_stale_temps(self, older_than_s: float) -> int:
        """Remove what writers killed mid-write left behind, if older than ``older_than_s``; how many."""


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"not a sha256 digest: {digest!r}")
    return digest


def _is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _checked(data: bytes, digest: str, what: str | None) -> bytes:
    """``data`` itself once its sha256 is ``digest`` (the caller loads these bytes, never a re-read)."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise StorageError(f"{what or 'artifact ' + digest[:12]} is damaged (digest mismatch)")
    return data


def _missing(digest: str, what: str | None) -> NotFound:
    return NotFound(f"{what or 'artifact ' + digest[:12]} is missing")


def _check_range(start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise InvalidInput(f"bad byte range: start {start}, length {length}")


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        digest = _check_digest(digest)
        return self.root / digest[:2] / digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get_bytes(self, digest: str) -> bytes:
        path = self._path(digest)
        if not path.exists():
            raise NotFound(f"artifact {digest[:12]} is missing")
        return path.read_bytes()

    def get_verified(self, digest: str, what: str | None = None) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise _missing(digest, what) from None
        except OSError as exc:
            raise StorageError(f"cannot read {what or 'artifact ' + digest[:12]}: {exc.strerror or exc}") from None
        return _checked(data, digest, what)

    def read_range(self, digest: str, start: int, length: int) -> bytes:
        path = self._path(digest)
        _check_range(start, length)
        if not path.exists():
            raise NotFound(f"artifact {digest[:12]} is missing")
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def verify(self, digest: str) -> bool:
        path = self._path(digest)
        if not path.exists():
            return False
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest() == digest

    def remove_stale_temps(self, older_than_s: float) -> int:
        """``.tmp-*`` files of writers killed between mkstemp and rename (younger ones may be live)."""
        if not self.root.exists():
            return 0
        cutoff, removed = time.time() - older_than_s, 0
        for tmp in self.root.glob("*/.tmp-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # its writer finished (renamed it) or another gc took it
        return removed

    def digests(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith(".tmp-"):
                        yield f.name


class ObjectArtifactStore:
    """Artifacts in an object store: ``s3://bucket/prefix`` through s3fs (the ``[s3]`` extra).

    Why this is safe without a temp-and-rename step: an S3 PUT is atomic — the object appears
    whole, with its final bytes, or not at all (a multipart upload appears only when it completes)
    — so a reader never sees a truncated artifact.  Writes are create-only: a HEAD first skips the
    upload when the artifact is already there (content addressing makes it the same bytes), and the
    PUT carries ``If-None-Match: *`` so two writers racing on one digest cannot overwrite each other;
    the loser's ``412 Precondition Failed`` just means the artifact exists.  Retries of transient
    errors are botocore's (see :mod:`veml.store.object_store`).
    """

    _BLOCK = 8 << 20  # read size when hashing a whole artifact in :meth:`verify`

    def __init__(self, url: str, s3: S3Settings | Mapping[str, Any] | None = None) -> None:
        settings = s3 if isinstance(s3, S3Settings) else S3Settings.resolve(s3)
        self.loc = S3Location(url, settings)
        self.root = self.loc.uri

    def _path(self, digest: str) -> str:
        digest = _check_digest(digest)
        return self.loc.path(f"{digest[:2]}/{digest}")

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        with self.loc.errors(f"cannot store artifact {digest[:12]} in"):
            if self.loc.fs.exists(path):
                return digest
            try:
                self.loc.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                pass  # another writer stored the same digest first: the same bytes
        return digest

    def get_bytes(self, digest: str) -> bytes:
        path = self._path(digest)
        with self.loc.errors(f"cannot read artifact {digest[:12]} from"):
            try:
                return self.loc.fs.cat_file(path)
            except FileNotFoundError as exc:
                self._raise_missing(digest, exc)

    def get_verified(self, digest: str, what: str | None = None) -> bytes:
        """One GET; the bytes it returned are the ones hashed and handed back."""
        path = self._path(digest)
        with self.loc.errors(f"cannot read artifact {digest[:12]} from"):
            try:
                data = self.loc.fs.cat_file(path)
            except FileNotFoundError as exc:
                if self.loc.is_bucket_missing(exc):
                    raise
                raise _missing(digest, what) from None
        return _checked(data, digest, what)

    def read_range(self, digest: str, start: int, length: int) -> bytes:
        """One ranged GET (``Range: bytes=start-end``), not a download of the whole object."""
        path = self._path(digest)
        _check_range(start, length)
        if length == 0:
            return b""
        with self.loc.errors(f"cannot read artifact {digest[:12]} from"):
            try:
                return self.loc.fs.cat_file(path, start=start, end=start + length)
            except FileNotFoundError as exc:
                self._raise_missing(digest, exc)

    def _raise_missing(self, digest: str, exc: FileNotFoundError) -> NoReturn:
        if self.loc.is_bucket_missing(exc):
            raise exc  # a missing bucket is a storage failure, reported as such by errors()
        raise NotFound(f"artifact {digest[:12]} is missing") from None

    def exists(self, digest: str) -> bool:
        path = self._path(digest)
        with self.loc.errors(f"cannot look for artifact {digest[:12]} in"):
            return bool(self.loc.fs.exists(path))

    def verify(self, digest: str) -> bool:
        """Re-hash the stored bytes (streamed in 8 MiB ranged reads, so memory stays flat)."""
        path = self._path(digest)
        h = hashlib.sha256()
        with self.loc.errors(f"cannot verify artifact {digest[:12]} in"):
            try:
                with self.loc.fs.open(path, "rb", block_size=self._BLOCK, cache_type="none") as fh:
                    for block in iter(lambda: fh.read(self._BLOCK), b""):
                        h.update(block)
            except FileNotFoundError as exc:
                if self.loc.is_bucket_missing(exc):
                    raise
                return False
        return h.hexdigest() == digest

    def remove_stale_temps(self, older_than_s: float) -> int:
        """Nothing to do: an object PUT leaves no partial object behind (S3 discards an
        unfinished multipart upload's parts by the bucket's lifecycle rule, not by VeML)."""
        return 0

    def digests(self) -> Iterator[str]:
        with self.loc.errors("cannot list artifacts in"):
            try:
                found = self.loc.fs.find(self.loc.path())
            except FileNotFoundError:
                return
        out = []
        for key in found:
            parts = key.rsplit("/", 2)
            if len(parts) == 3 and _is_digest(parts[2]) and parts[1] == parts[2][:2]:
                out.append(parts[2])
        yield from sorted(out)
