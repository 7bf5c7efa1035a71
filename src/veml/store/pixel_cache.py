"""Decoded pixels on disk: fixed-shape uint8 arrays in memory-mapped files, keyed by content digest.

Decoding a PNG costs 100 times more than copying its pixels, and a data loader decodes the same
images every epoch; this cache decodes each stored image once per transform (output size, decode
rules) and hands out slices of memory-mapped files afterwards.  Entries are keyed by the sample's
content digest, so two versions holding the same samples (a filter, a merge, a re-import of the
same bytes) share them.

One directory per transform under ``root`` (``.veml/cache/pixels/``)::

    transform.json     what the pixels are (the caller's description; the directory name hashes it)
    manifest.json      the committed segments: name, rows, crc32 of their pixels and of their digests
    seg-000001.u8      rows x H x W x C uint8: row r holds the sample whose digest is row r of
    seg-000001.sha     rows x 32 bytes, raw sha256 digests
    .lock              flock'ed by a writer

Crash safety: segments are immutable.  A writer, holding the lock, writes a new segment under a
temporary name, fsyncs it, renames it, and only then replaces ``manifest.json`` (temporary file,
fsync, rename): a reader sees the old manifest or the new one, never a segment half written.  A
segment file no manifest lists is a killed writer's, removed by the next writer.

Damage: a reader checks every segment it uses against the manifest (file sizes, then crc32 of the
digests and of the pixels, once per process and file), so a truncated or overwritten segment is
never read as pixels; it is reported as damaged and a writer drops it (its samples are decoded
again).  A manifest that does not parse counts as an empty cache, and the next writer starts the
directory afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from veml.errors import InvalidInput, StorageError

FORMAT = 1
DIGEST = np.dtype("S32")  # raw sha256
MANIFEST = "manifest.json"
SEGMENT_BYTES = 1 << 30  # at most 1 GiB of pixels per segment: a killed build loses at most one segment's work
_NAME = re.compile(r"^seg-\d{6}$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_CHUNK = 16 << 20
_VERIFIED: set[tuple[str, int, int, int, int]] = set()  # (path, inode, size, mtime_ns, crc) checked in this process
_VERIFIED_LOCK = threading.Lock()


def digests_of(hexes: Sequence[str | None]) -> np.ndarray:
    """sha256 hex strings as raw 32-byte digests (S32); a missing or malformed one raises StorageError."""
    try:
        raw = b"".join(bytes.fromhex(h) for h in hexes)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StorageError("a sample has no valid content digest (run 'veml verify')") from None
    if len(raw) != 32 * len(hexes):
        raise StorageError("a sample has no valid content digest (run 'veml verify')")
    return np.frombuffer(raw, dtype=DIGEST)


def _crc_file(path: Path) -> int:
    """crc32 of a file, read through a memory map (no copy: the pages are the ones the loader maps next)."""
    if path.stat().st_size == 0:
        return 0
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        crc = 0
        for lo in range(0, len(data), _CHUNK):
            crc = zlib.crc32(data[lo:lo + _CHUNK], crc)
        return crc
    finally:
        del data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Segment:
    name: str
    rows: int
    crc32: int
    digests_crc32: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "crc32": self.crc32, "digests_crc32": self.digests_crc32}


@dataclass(frozen=True)
class Lookup:
    """Where each asked-for digest lives: ``segment`` (index into ``segments``, -1 when not cached) and ``row``."""

    segments: tuple[Segment, ...]
    segment: np.ndarray
    row: np.ndarray
    damaged: tuple[str, ...] = ()  # segments found damaged (not used)
    manifest_damaged: bool = False

    @property
    def missing(self) -> np.ndarray:
        return self.segment < 0


@dataclass
class _Manifest:
    segments: list[Segment] = field(default_factory=list)
    damaged: bool = False  # the file exists but does not parse as a manifest of this shape


class PixelSpace:
    """The cache of one transform: fixed ``shape`` (H, W, C) uint8 rows keyed by digest."""

    def __init__(self, root: Path, key: str, shape: tuple[int, int, int], spec: Mapping[str, Any]) -> None:
        if not _SAFE_KEY.match(key):
            raise InvalidInput(f"bad pixel cache key {key!r}")
        self.dir = root / key
        self.key = key
        self.shape = tuple(int(s) for s in shape)
        self.spec = dict(spec)
        self.row_bytes = int(np.prod(self.shape))

    # --- reading ---------------------------------------------------------------------------------
    def _manifest(self) -> _Manifest:
        path = self.dir / MANIFEST
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return _Manifest()
        except (OSError, ValueError):
            return _Manifest(damaged=True)
        try:
            if doc["format"] != FORMAT or doc["key"] != self.key or list(doc["shape"]) != list(self.shape):
                return _Manifest(damaged=True)
            segs = [Segment(str(s["name"]), int(s["rows"]), int(s["crc32"]), int(s["digests_crc32"])) for s in doc["segments"]]
        except (KeyError, TypeError, ValueError):
            return _Manifest(damaged=True)
        if any(not _NAME.match(s.name) or s.rows <= 0 for s in segs) or len({s.name for s in segs}) != len(segs):
            return _Manifest(damaged=True)
        return _Manifest(segs)

    def _checked(self, path: Path, size: int, crc: int) -> bool:
        """The file has ``size`` bytes and crc32 ``crc`` (the crc computed once per process and file version)."""
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != size:
            return False
        memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, crc)
        with _VERIFIED_LOCK:
            if memo in _VERIFIED:
                return True
        try:
            ok = _crc_file(path) == crc
        except OSError:
            return False
        if ok:
            with _VERIFIED_LOCK:
                _VERIFIED.add(memo)
        return ok

    def _digests(self, seg: Segment) -> np.ndarray | None:
        path = self.dir / f"{seg.name}.sha"
        if not self._checked(path, seg.rows * 32, seg.digests_crc32):
            return None
        return np.fromfile(path, dtype=DIGEST)

    def lookup(self, digests: np.ndarray) -> Lookup:
        """Find ``digests`` (S32) among the committed segments whose files check out."""
        man = self._manifest()
        n = len(digests)
        seg_of = np.full(n, -1, np.int32)
        row_of = np.zeros(n, np.int64)
        damaged: list[str] = []
        if not man.segments or n == 0:
            return Lookup(tuple(man.segments), seg_of, row_of, (), man.damaged)
        keys, owners, rows = [], [], []
        for i, seg in enumerate(man.segments):
            d = self._digests(seg)
            if d is None:
                damaged.append(seg.name)
                continue
            keys.append(d)
            owners.append(np.full(len(d), i, np.int32))
            rows.append(np.arange(len(d), dtype=np.int64))
        if keys:
            all_keys, all_owner, all_row = np.concatenate(keys), np.concatenate(owners), np.concatenate(rows)
            order = np.argsort(all_keys, kind="stable")
            all_keys, all_owner, all_row = all_keys[order], all_owner[order], all_row[order]
            at = np.minimum(np.searchsorted(all_keys, digests), len(all_keys) - 1)
            hit = all_keys[at] == digests
            seg_of[hit], row_of[hit] = all_owner[at[hit]], all_row[at[hit]]
        for i in np.unique(seg_of[seg_of >= 0]):  # the pixels of every segment used must check out too
            seg = man.segments[int(i)]
            if not self._checked(self.dir / f"{seg.name}.u8", seg.rows * self.row_bytes, seg.crc32):
                damaged.append(seg.name)
                gone = seg_of == i
                seg_of[gone], row_of[gone] = -1, 0
        return Lookup(tuple(man.segments), seg_of, row_of, tuple(damaged), man.damaged)

    def open_segment(self, seg: Segment) -> np.ndarray:
        """A segment's pixels, memory-mapped copy-on-write: writable views (torch takes them without a
        warning) whose writes never reach the file."""
        try:
            return np.memmap(self.dir / f"{seg.name}.u8", dtype=np.uint8, mode="c", shape=(seg.rows, *self.shape))
        except (OSError, ValueError) as exc:
            raise StorageError(f"pixel cache segment {seg.name} of {self.key} cannot be opened ({exc}): "
                               "run 'veml data cache --clear'") from None

    # --- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, wait: bool = True) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise InvalidInput(f"the pixel cache {self.dir} is being built by another process; "
                                   "try again when it has finished") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_manifest(self, segments: Sequence[Segment]) -> None:
        doc = {"format": FORMAT, "key": self.key, "shape": list(self.shape), "segments": [s.to_json() for s in segments]}
        tmp = self.dir / f"{MANIFEST}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / MANIFEST)
        _fsync_dir(self.dir)

    def add(self, digests: np.ndarray, fill: Callable[[np.ndarray, np.ndarray], None], batch: int = 256) -> tuple[int, int]:
        """Decode and commit the ``digests`` not cached yet; returns (rows added, damaged segments dropped).

        ``fill(wanted, out)`` writes the pixels of the digests ``wanted`` into ``out`` (len(wanted) x
        H x W x C), called with at most ``batch`` digests at a time.  Under the lock the manifest is
        read again (another process may have cached some meanwhile), damaged segments and files no
        manifest lists are removed, and each segment is committed as soon as it is full.
        """
        with self._locked():
            man = self._manifest()
            unique = digests[np.sort(np.unique(digests, return_index=True)[1])]  # first-occurrence order:
            found = self.lookup(unique)  # a version imported in one go then reads contiguous rows
            segments = [] if man.damaged else [s for s in man.segments if s.name not in found.damaged]
            dropped = len(man.segments) - len(segments) + int(man.damaged)  # damaged files found
            self._remove_unlisted(segments)
            if dropped or man.damaged or not (self.dir / MANIFEST).exists():
                (self.dir / "transform.json").write_text(json.dumps(self.spec, indent=1))
                self._write_manifest(segments)
            todo = unique[found.segment < 0]
            self._check_space(len(todo))
            per_segment = max(1, SEGMENT_BYTES // self.row_bytes)
            number = max([int(s.name[4:]) for s in segments], default=0)
            for start in range(0, len(todo), per_segment):
                number += 1
                segments.append(self._write_segment(f"seg-{number:06d}", todo[start:start + per_segment], fill, batch))
                self._write_manifest(segments)
            return len(todo), dropped

    def _check_space(self, rows: int) -> None:
        need = rows * self.row_bytes
        free = shutil.disk_usage(self.dir).free
        if need and need > free - (256 << 20):
            raise StorageError(f"the pixel cache needs {need / 2**20:,.0f} MiB for {rows} images and {self.dir} has "
                               f"{free / 2**20:,.0f} MiB free ('veml data cache --clear' removes every cached pixel)")

    def _write_segment(self, name: str, digests: np.ndarray, fill: Callable[[np.ndarray, np.ndarray], None],
                       batch: int) -> Segment:
        data, sha = self.dir / f"{name}.u8", self.dir / f"{name}.sha"
        tmp_data, tmp_sha = self.dir / f"{name}.u8.tmp", self.dir / f"{name}.sha.tmp"
        try:
            mm = np.memmap(tmp_data, dtype=np.uint8, mode="w+", shape=(len(digests), *self.shape))
            try:
                for start in range(0, len(digests), batch):
                    fill(digests[start:start + batch], mm[start:start + batch])
                mm.flush()
            finally:
                del mm
            with open(tmp_data, "rb+") as f:
                os.fsync(f.fileno())
            with open(tmp_sha, "wb") as f:
                f.write(digests.tobytes())
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # a failed decode, Ctrl-C: nothing half-written stays (a kill -9 leaves it to the next writer)
            tmp_data.unlink(missing_ok=True)
            tmp_sha.unlink(missing_ok=True)
            raise
        seg = Segment(name, len(digests), _crc_file(tmp_data), zlib.crc32(digests.tobytes()))
        os.replace(tmp_sha, sha)
        os.replace(tmp_data, data)
        _fsync_dir(self.dir)
        return seg

    def _remove_unlisted(self, segments: Sequence[Segment]) -> None:
        """Files of segments no manifest lists (a killed writer's, or dropped as damaged); the lock is held."""
        listed = {s.name for s in segments}
        for p in self.dir.iterdir():
            stem = p.name.split(".", 1)[0]
            if p.name.startswith("seg-") and stem not in listed:
                p.unlink(missing_ok=True)
            elif p.name == f"{MANIFEST}.tmp":
                p.unlink(missing_ok=True)

    def prune(self, keep: np.ndarray) -> int:
        """Drop every cached row whose digest is not in ``keep`` (S32, sorted); returns the bytes freed.

        Under the lock (not waited for: a space another process is building is left as it is, 0 freed):
        a segment whose rows all stay is kept as it is, one with none is dropped, and one with some is
        copied (its surviving rows, pixels checked first) into a new segment written as ``add`` writes
        them (temporary file, fsync, rename); then the manifest is replaced atomically, and only then are
        the old segments' files removed, so a crash at any point leaves the old or the new manifest with
        every file it lists (and unlisted files for the next writer to remove).  Damaged segments, and
        every segment under a damaged manifest, are dropped (they would be decoded again anyway).
        """
        try:
            with self._locked(wait=False):
                return self._prune(keep)
        except InvalidInput:  # only the lock raises it: another process is building this space
            return 0

    def _prune(self, keep: np.ndarray) -> int:
        before = self.size_bytes()
        man = self._manifest()
        segments: list[Segment] = []
        number = max([int(s.name[4:]) for s in man.segments], default=0)
        for seg in [] if man.damaged else man.segments:
            digests = self._digests(seg)
            if digests is None or not self._checked(self.dir / f"{seg.name}.u8", seg.rows * self.row_bytes, seg.crc32):
                continue
            pos = np.minimum(np.searchsorted(keep, digests), max(len(keep) - 1, 0))
            alive = np.flatnonzero(keep[pos] == digests) if len(keep) else np.zeros(0, np.int64)
            if len(alive) == seg.rows:
                segments.append(seg)
            elif len(alive):
                src, done = self.open_segment(seg), [0]

                def fill(wanted: np.ndarray, out: np.ndarray, src: np.ndarray = src, alive: np.ndarray = alive,
                         done: list[int] = done) -> None:
                    out[:] = src[alive[done[0]:done[0] + len(wanted)]]  # add's batches come in order
                    done[0] += len(wanted)

                number += 1
                segments.append(self._write_segment(f"seg-{number:06d}", digests[alive], fill, 256))
                del src
        if man.damaged or segments != man.segments:
            self._write_manifest(segments)
        self._remove_unlisted(segments)
        return max(0, before - self.size_bytes())

    def size_bytes(self) -> int:
        return _tree_bytes(self.dir)


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


class PixelCache:
    """Every transform's pixel cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def space(self, key: str, shape: tuple[int, int, int], spec: Mapping[str, Any]) -> PixelSpace:
        return PixelSpace(self.root, key, shape, spec)

    def size_bytes(self) -> int:
        return _tree_bytes(self.root) if self.root.exists() else 0

    def prune(self, keep: np.ndarray) -> int:
        """Every transform's rows whose digest is not in ``keep`` (S32) dropped (:meth:`PixelSpace.prune`);
        returns the bytes freed."""
        if not self.root.exists():
            return 0
        keep = np.unique(keep.astype(DIGEST))
        freed = 0
        for d in sorted(self.root.iterdir()):
            if not (d.is_dir() and _SAFE_KEY.match(d.name)):
                continue
            try:
                shape = tuple(json.loads((d / MANIFEST).read_text())["shape"])
            except (OSError, ValueError, KeyError, TypeError):
                shape = ()
            if not (len(shape) == 3 and all(isinstance(x, int) and x > 0 for x in shape)):
                shape = (1, 1, 1)  # an unreadable manifest: the space reads as damaged, its segments go
            freed += PixelSpace(self.root, d.name, shape, {}).prune(keep)  # type: ignore[arg-type]
        with _VERIFIED_LOCK:
            _VERIFIED.clear()
        return freed

    def clear(self) -> tuple[int, int]:
        """Remove every transform's cache; returns (bytes freed, transforms removed).  A cache being
        built by another process is refused (nothing is removed then)."""
        if not self.root.exists():
            return 0, 0
        dirs = [p for p in sorted(self.root.iterdir()) if p.is_dir()]
        freed = self.size_bytes()
        with contextlib.ExitStack() as stack:
            for d in dirs:
                stack.enter_context(PixelSpace(self.root, d.name, (1, 1, 1), {})._locked(wait=False)
                                    if _SAFE_KEY.match(d.name) else contextlib.nullcontext())
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        with _VERIFIED_LOCK:
            _VERIFIED.clear()
        return freed, len(dirs)
