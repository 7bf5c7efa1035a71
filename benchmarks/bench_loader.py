#!/usr/bin/env python
"""Data that loads at disk speed: VeML's cached loader against reading the same PNG files.

Generated driving scenes (PNG, ``--side`` pixels square) are written once as files and imported
once into a fresh repository.  Each variant then delivers every image once, in batches of
``--batch``, and copies each batch into one preallocated (N, H, W, 3) uint8 array (so every variant
really reads every pixel, and all arrays are checked equal to PIL's):

- ``torchvision_imagefolder``: ``torchvision.datasets.ImageFolder`` (``PILToTensor``) + ``DataLoader``, 0 workers
- ``pil_files``: PIL reads of the files, ``np.asarray`` per image (the baseline: 1.00x)
- ``veml_cold``: ``repo.data.loader(...)`` with the pixel cache cleared first: the build (decode in a
  thread pool, write, fsync, crc32) plus the first epoch
- ``veml_warm_open``: a new loader on the built cache as a new process would make it (metadata
  read, digest lookup, crc32 of the segments it uses) plus one epoch
- ``veml_warm_epoch``: one more epoch of an open loader (sequential: zero-copy batches)
- ``veml_warm_shuffled``: one epoch of an open loader with ``shuffle=True`` (gathered batches)
- ``lance_take`` (the alternative considered for the cache): the same decoded pixels as one
  fixed-size binary column of a Lance table, read by ``take`` per batch

Run with ``OMP_NUM_THREADS=1``; the 1-minute load average is sampled during the run.  Variants run
``--repeats`` times in alternating order; medians and the spread (min-max) are reported.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py                      # 3,000 images of 64 px, 5 repeats
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py --images 2000 --side 224 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, machine_line, md_table, median, tree_bytes  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import veml  # noqa: E402
from veml.datasets import generate_driving_coco  # noqa: E402
from veml.store import pixel_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--side", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="decoding threads for the cold build (default: VeML's)")
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-", dir=a.work) as tmp, LoadSampler() as load:
        work = Path(tmp)
        uptime_before = os.popen("uptime").read().strip()
        results = run(work, a)
        uptime_after = os.popen("uptime").read().strip()
    report(results, a, load.summary(), uptime_before, uptime_after)


def run(work: Path, a: argparse.Namespace) -> dict:
    ann = generate_driving_coco(work / "gen", a.images, seed=17, size=(a.side, a.side))
    # the same files for every variant; ImageFolder wants one sub-folder per class: one class, "all"
    folder = work / "folder" / "all"
    folder.mkdir(parents=True)
    for p in sorted((ann.parent / "images").iterdir()):
        os.link(p, folder / p.name)
    paths = sorted(folder.iterdir())
    repo = veml.init(work / "repo")
    repo.data.import_("coco", ann, "scenes", images=ann.parent / "images")
    view = repo.data.checkout("scenes")
    order = np.argsort(np.array(view.metadata()["file_name"].to_pylist()), kind="stable")  # file-name order
    assert [Path(f).name for f in np.array(view.metadata()["file_name"].to_pylist())[order]] == [p.name for p in paths]
    n, shape = len(paths), (a.side, a.side, 3)
    out = np.empty((n, *shape), np.uint8)
    pos_to_row = np.empty(n, np.int64)
    pos_to_row[order] = np.arange(n)  # sample position -> file-name row

    def pil_files() -> None:
        for i, p in enumerate(paths):
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert("RGB"))

    from torchvision import datasets, transforms

    folder_ds = datasets.ImageFolder(str(folder.parent), transform=transforms.PILToTensor())

    def imagefolder() -> None:
        i = 0
        for x, _ in torch.utils.data.DataLoader(folder_ds, batch_size=a.batch, shuffle=False, num_workers=0):
            out[i:i + len(x)] = x.permute(0, 2, 3, 1).numpy()
            i += len(x)

    def epoch(loader) -> None:  # sequential: batch k holds positions k*batch .. (k+1)*batch-1
        i = 0
        for x, _ in loader:
            out[pos_to_row[i:i + len(x)]] = x.permute(0, 2, 3, 1).numpy()
            i += len(x)

    def veml_cold() -> None:
        repo.data.clear_pixel_cache()
        if a.workers is not None:
            repo.data.cache_pixels("scenes", workers=a.workers)
        epoch(repo.data.loader("scenes", batch_size=a.batch))

    def veml_warm_open() -> None:
        with pixel_cache._VERIFIED_LOCK:
            pixel_cache._VERIFIED.clear()  # as a new process: every segment is checked again
        epoch(repo.data.loader("scenes", batch_size=a.batch))

    warm = repo.data.loader("scenes", batch_size=a.batch)
    shuffled = repo.data.loader("scenes", batch_size=a.batch, shuffle=True, seed=0)

    def veml_warm_shuffled() -> None:  # the same copy per batch (into a scratch row range: its positions stay inside the loader)
        for x, _ in shuffled:
            out[:len(x)] = x.permute(0, 2, 3, 1).numpy()

    lance_tbl = _lance_pixels(repo, work, a)

    def lance_take() -> None:
        ds = lance_tbl
        for lo in range(0, n, a.batch):
            col = ds.take(np.arange(lo, min(lo + a.batch, n)), columns=["px"])["px"]
            arr = col.combine_chunks()  # fixed-size binary: buffers [validity, data]
            row = out[0].nbytes
            b = np.frombuffer(arr.buffers()[1], np.uint8)[arr.offset * row:(arr.offset + len(arr)) * row].reshape(len(arr), *shape)
            out[pos_to_row[lo:lo + len(col)]] = b

    variants: dict[str, Callable[[], None]] = {
        "torchvision_imagefolder": imagefolder, "pil_files": pil_files, "veml_cold": veml_cold,
        "veml_warm_open": veml_warm_open, "veml_warm_epoch": lambda: epoch(warm),
        "veml_warm_shuffled": veml_warm_shuffled, "lance_take": lance_take,
    }
    pil_files()
    reference = out.copy()
    for name, fn in variants.items():  # warm-up, and every variant must give PIL's pixels
        out[:] = 0
        fn()
        if name != "veml_warm_shuffled":  # (it overwrites the first batch only: checked below)
            assert np.array_equal(out, reference), name
    seen = np.zeros(n, bool)
    for batch_pos in shuffled.sampler:  # the shuffled loader's batches are the right pixels too
        x, _ = shuffled.dataset[batch_pos]
        assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), reference[pos_to_row[np.asarray(batch_pos)]])
        seen[batch_pos] = True
    assert seen.all()
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for k in range(a.repeats):
        for name in (names if k % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    cache = repo.data.cache_pixels("scenes")
    png = [p.stat().st_size for p in paths]
    return {"images": n, "side": a.side, "batch": a.batch, "times": times,
            "png_bytes_per_image": float(np.mean(png)), "cache_bytes": cache.cache_bytes,
            "cache_bytes_per_image": cache.cache_bytes / n,
            "sample_store_bytes": tree_bytes(repo.dir / "data")["apparent"],
            "decode_workers": a.workers or _default_workers()}


def _default_workers() -> int:
    from veml.versions.pixels import default_workers

    return default_workers()


def _lance_pixels(repo, work: Path, a: argparse.Namespace):
    import lance
    import pyarrow as pa

    ds = repo.data.torch_dataset("scenes")
    px = ds.source.batch(np.arange(len(ds)))
    row = int(np.prod(px.shape[1:]))
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(row), len(px), [None, pa.py_buffer(np.ascontiguousarray(px).tobytes())])
    lance.write_dataset(pa.table({"px": arr}), str(work / "pixels.lance"))
    return lance.dataset(str(work / "pixels.lance"))


def report(R: dict, a: argparse.Namespace, load: dict, up0: str, up1: str) -> None:
    n, t = R["images"], R["times"]
    base = median(t["pil_files"])
    rows = []
    for name, xs in t.items():
        m = median(xs)
        rows.append([name, f"{m * 1000:,.1f}", f"{min(xs) * 1000:,.1f}-{max(xs) * 1000:,.1f}", f"{n / m:,.0f}",
                     f"{base / m:.2f}x", f"{base / max(xs):.2f}x-{base / min(xs):.2f}x"])
    print(f"{n:,} PNG images of {R['side']}x{R['side']}, batches of {R['batch']}, {a.repeats} repeats (alternating order), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {R['decode_workers']} decoding thread(s) for the cold build")
    print()
    print(md_table(["variant", "ms (median)", "ms (min-max)", "images/s", "vs PIL files", "vs PIL (spread)"], rows))
    print()
    warm = base / median(t["veml_warm_epoch"])
    print(f"Target warm >= 3x PIL files: {'met' if warm >= 3 else 'not met'} ({warm:.1f}x); "
          f"warm with a new process's open: {base / median(t['veml_warm_open']):.1f}x; cold: {base / median(t['veml_cold']):.2f}x.")
    print(f"Disk: PNG {R['png_bytes_per_image']:,.0f} B/image; pixel cache {R['cache_bytes_per_image']:,.0f} B/image "
          f"({R['cache_bytes_per_image'] / R['png_bytes_per_image']:.1f}x the PNG); sample store {R['sample_store_bytes'] / n:,.0f} B/image.")
    print()
    print(f"uptime before: {up0}")
    print(f"uptime after:  {up1}")
    print(load_line(load, os.cpu_count()))
    print(machine_line(machine_info()) + f" (os.cpu_count() = {os.cpu_count()}; nproc honours OMP_NUM_THREADS)")


if __name__ == "__main__":
    main()
