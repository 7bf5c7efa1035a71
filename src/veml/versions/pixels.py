"""A data version's decoded pixels, cached once per image and output size (``veml data cache``).

The pixels are the ones training uses: the stored bytes decoded to RGB and, where the size differs,
resized with PIL's bilinear filter (:func:`veml.formats.images.decode_array`).  They are cached
under ``.veml/cache/pixels/`` (:mod:`veml.store.pixel_cache`) by the sample's content digest and a
key of the transform (size, decode rules, Pillow version), so a changed size or a new Pillow reads
other entries, and versions sharing samples share entries.  Building decodes every sample not
cached yet in a thread pool (PIL releases the GIL while it decodes) and checks each payload against
its digest first, so a damaged payload never lands in the cache under a good digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from veml.errors import InvalidInput, StorageError
from veml.formats.images import decode_array
from veml.progress import ProgressLike, as_progress
from veml.store.pixel_cache import DIGEST, PixelCache, PixelSpace, Segment, digests_of
from veml.versions.checkout import DataView
from veml.versions.context import Stores

MAX_SIDE = 8192  # a cached side longer than this is a typo, not a plan (224 x 224 x 3 is 150 KB per image)
_BUILD_BATCH = 512  # payloads read from the sample store per call while building


@dataclass(frozen=True)
class PixelCacheReport:
    """One version's pixels at one size, after ``cache_pixels`` (or a loader) made sure they are cached."""

    version: str
    version_id: int
    height: int
    width: int
    samples: int  # samples in the version
    unique: int  # distinct images among them (same bytes, one entry)
    decoded: int  # images decoded now; the others were cached already (by this or another version)
    repaired: int  # damaged cache segments found and dropped (their images decoded again)
    cache_bytes: int  # this size's cache on disk, all versions together
    path: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "version_id": self.version_id, "height": self.height, "width": self.width,
                "samples": self.samples, "unique": self.unique, "decoded": self.decoded,
                "reused": self.unique - self.decoded, "repaired": self.repaired, "cache_bytes": self.cache_bytes,
                "bytes_per_sample": self.height * self.width * 3, "path": self.path, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class PixelCacheCleared:
    bytes_freed: int
    transforms: int

    def to_json(self) -> dict[str, Any]:
        return {"cleared": True, "bytes_freed": self.bytes_freed, "transforms": self.transforms}


class PixelSource(Protocol):
    """Where a loader's pixels come from: ``batch`` gives (len(positions), H, W, 3) uint8."""

    shape: tuple[int, int, int]

    def batch(self, positions: np.ndarray) -> np.ndarray: ...


class CachedPixels:
    """Pixels read from cache segments: a run of consecutive rows of one segment is a view of the
    memory-mapped file (no copy); any other batch is gathered into a new array.  Picklable for
    DataLoader workers (the segments are mapped again there, already checked by the parent)."""

    def __init__(self, space: PixelSpace, segments: Sequence[Segment], segment: np.ndarray, row: np.ndarray) -> None:
        self.space, self.segments = space, tuple(segments)
        self.segment, self.row = segment, row
        self.shape: tuple[int, int, int] = space.shape  # type: ignore[assignment]
        self._maps: dict[int, np.ndarray] = {}

    def _map(self, i: int) -> np.ndarray:
        if i not in self._maps:
            self._maps[i] = self.space.open_segment(self.segments[i])
        return self._maps[i]

    def batch(self, positions: np.ndarray) -> np.ndarray:
        segs, rows = self.segment[positions], self.row[positions]
        if len(rows) and (segs == segs[0]).all():
            mm = self._map(int(segs[0]))
            if rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or (np.diff(rows) == 1).all()):
                return mm[rows[0]:rows[-1] + 1]
            return mm[rows]
        out = np.empty((len(rows), *self.shape), np.uint8)
        for s in np.unique(segs):
            m = segs == s
            out[m] = self._map(int(s))[rows[m]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}


class DecodedPixels:
    """Pixels decoded on every read (``cache=False``): the payloads are read once, up front."""

    def __init__(self, view: DataView, size: tuple[int, int]) -> None:
        self.shape = (size[0], size[1], 3)
        self._size = size
        self._payloads = view.read_payloads(range(len(view)))
        self._what = [view.describe(int(d)) for d in view.data_ids]

    def batch(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions), *self.shape), np.uint8)
        for j, i in enumerate(positions):
            out[j] = decode_array(self._payloads[int(i)], self._what[int(i)], self._size)
        return out


# --- the transform -------------------------------------------------------------------------------
def image_size(view: DataView, size: int | Sequence[int] | None) -> tuple[int, int]:
    """(height, width) to hand out: ``size`` (an int is square), else the version's ``resize`` step,
    else the images' own size when they all share one."""
    if view.node.props.get("modality") != "image":
        raise InvalidInput(f"data version {view.node.name!r} holds {view.node.props.get('modality')} data, not images")
    if size is None:
        steps = [s for s in view.steps if s.get("op") == "resize"]
        if steps:
            return _checked_size((int(steps[-1]["height"]), int(steps[-1]["width"])))
        meta = view.metadata()
        sizes = {(int(h), int(w)) for h, w in zip(meta["height"].to_pylist(), meta["width"].to_pylist())}
        if len(sizes) != 1:
            raise InvalidInput(f"the images of {view.node.name!r} come in {len(sizes)} sizes: give a size (--size 224)")
        return _checked_size(sizes.pop())
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return _checked_size((int(size), int(size)))
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        return _checked_size((int(size[0]), int(size[1])))
    raise InvalidInput(f"size must be an int or (height, width), not {size!r}")


def _checked_size(hw: tuple[int, int]) -> tuple[int, int]:
    if not all(0 < v <= MAX_SIDE for v in hw):
        raise InvalidInput(f"image size {hw[0]}x{hw[1]} (height x width) must be between 1 and {MAX_SIDE} a side")
    return hw


def _transform(size: tuple[int, int]) -> tuple[str, dict[str, Any]]:
    """The cache key of decode_array's output at ``size``, and what it stands for."""
    from PIL import __version__ as pillow

    spec = {"height": size[0], "width": size[1], "channels": 3, "dtype": "uint8", "decode": "rgb",
            "resample": "bilinear", "pillow": pillow, "format": 1}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{size[0]}x{size[1]}-rgb-{digest}", spec


def cache_of(stores: Stores) -> PixelCache | None:
    """The repository's pixel cache (``.veml/cache/pixels``); None for stores opened without a repository."""
    if stores.location is None:
        return None
    return PixelCache(Path(stores.location.base) / "cache" / "pixels")


def _space(stores: Stores, size: tuple[int, int]) -> PixelSpace:
    cache = cache_of(stores)
    if cache is None:
        raise InvalidInput("these stores were opened without a repository: there is no pixel cache (use veml.open)")
    key, spec = _transform(size)
    return cache.space(key, (size[0], size[1], 3), spec)


# --- building and reading --------------------------------------------------------------------------
def cached_pixels(stores: Stores, view: DataView, size: tuple[int, int], workers: int | None = None,
                  progress: ProgressLike | None = None) -> tuple[CachedPixels, PixelCacheReport]:
    """The version's pixels at ``size`` from the cache, decoding (and caching) whatever is missing or damaged."""
    t0 = time.perf_counter()
    space = _space(stores, size)
    digests = digests_of(view.metadata()["content_hash"].to_pylist())
    found = space.lookup(digests)
    decoded = repaired = 0
    if found.missing.any() or found.damaged or found.manifest_damaged:
        bar = as_progress(progress)
        bar.add_total(int(len(np.unique(digests[found.missing]))))
        fill = _Filler(view, digests, size, workers or default_workers(), bar)
        decoded, repaired = space.add(digests, fill, batch=_BUILD_BATCH)
        found = space.lookup(digests)
        if found.missing.any():
            raise StorageError(f"the pixel cache {space.dir} lost entries while it was read; run again")
    report = PixelCacheReport(view.node.name, view.node.id, size[0], size[1], len(view), int(len(np.unique(digests))),
                              decoded, repaired, space.size_bytes(), str(space.dir), time.perf_counter() - t0)
    return CachedPixels(space, found.segments, found.segment, found.row), report


def default_workers() -> int:
    """Decoding threads: one per core this process may run on, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class _Filler:
    """Decodes the samples behind the digests asked for into a segment's rows (``PixelSpace.add``'s ``fill``)."""

    def __init__(self, view: DataView, digests: np.ndarray, size: tuple[int, int], workers: int, bar: Any) -> None:
        self.view, self.size, self.workers, self.bar = view, size, workers, bar
        self.unique, self.first = np.unique(digests, return_index=True)

    def __call__(self, wanted: np.ndarray, out: np.ndarray) -> None:
        pos = self.first[np.searchsorted(self.unique, wanted)]
        payloads = self.view.read_payloads(pos)
        ids = self.view.data_ids[pos]
        raw = wanted.tobytes()
        for j, p in enumerate(payloads):
            if p is None or hashlib.sha256(p).digest() != raw[32 * j:32 * j + 32]:
                raise StorageError(f"{self.view.describe(int(ids[j]))}: stored bytes do not match their digest "
                                   "(run 'veml verify')")

        def decode_range(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                out[j] = decode_array(payloads[j], self.view.describe(int(ids[j])), self.size)

        step = max(1, -(-len(payloads) // (self.workers * 4)))
        spans = [(lo, min(lo + step, len(payloads))) for lo in range(0, len(payloads), step)]
        if self.workers == 1:
            for lo, hi in spans:
                decode_range(lo, hi)
        else:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="veml-decode") as pool:
                for f in [pool.submit(decode_range, lo, hi) for lo, hi in spans]:
                    f.result()
        self.bar.advance(len(payloads))


def pixel_array(stores: Stores, view: DataView, positions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The samples at ``positions`` as one (N, H, W, 3) array: read from the pixel cache where
    ``veml data cache`` (or a loader) put them, decoded otherwise.  Never writes the cache, so
    training and prediction cost no disk unless asked; the pixels are the same either way."""
    positions = np.asarray(positions, np.int64)
    out = np.empty((len(positions), size[0], size[1], 3), np.uint8)
    todo = np.ones(len(positions), bool)
    cache = cache_of(stores)
    if cache is not None and len(positions):
        key, spec = _transform(size)
        space = cache.space(key, (size[0], size[1], 3), spec)
        if (space.dir / "manifest.json").exists():
            found = space.lookup(digests_of(view.metadata()["content_hash"].to_pylist()))
            hit = ~found.missing[positions]
            if hit.any():
                src = CachedPixels(space, found.segments, found.segment, found.row)
                out[hit] = src.batch(positions[hit])
                todo = ~hit
    if todo.any():
        for j, img in zip(np.nonzero(todo)[0], view.read_images(positions[todo], size)):
            out[j] = img
    return out


def cache_exists(stores: Stores) -> bool:
    cache = cache_of(stores)
    return cache is not None and cache.root.is_dir()


def prune(stores: Stores, keep: Sequence[str | None]) -> int:
    """Drop the cached pixels of every digest not in ``keep`` (sha256 hex; others are ignored); bytes freed."""
    cache = cache_of(stores)
    if cache is None:
        return 0
    valid = [h for h in keep if isinstance(h, str) and len(h) == 64]
    return cache.prune(digests_of(valid) if valid else np.zeros(0, DIGEST))


def clear(stores: Stores) -> PixelCacheCleared:
    cache = cache_of(stores)
    if cache is None:
        return PixelCacheCleared(0, 0)
    return PixelCacheCleared(*cache.clear())
