"""The pixel cache and the torch loader (issue 17): decoded once, read as memory-mapped slices.

What must hold: the loader's pixels are exactly PIL's decode (and bilinear resize) of the stored
bytes; versions sharing samples share cache entries; another size reads other entries; a damaged
or half-written cache is never read as pixels (it is rebuilt); training reads the cache without
changing its arrays; bad input is one ``error:`` line.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import veml
from conftest import assert_failed_cleanly, images_dir, ok, run_cli
from veml.store.pixel_cache import PixelCache, digests_of
from veml.versions.pixels import pixel_array


@pytest.fixture(scope="module")
def repo(tmp_path_factory, driving_small, driving_night):
    root = tmp_path_factory.mktemp("pixels") / "repo"
    r = veml.init(root)
    r.data.import_("coco", driving_small, "day", images=images_dir(driving_small))
    r.data.import_("coco", driving_night, "night", images=images_dir(driving_night))
    r.data.merge(["day", "night"], "both")
    yield r
    r.close()


def pil_pixels(repo, version: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """PIL's own decode (and bilinear resize to (height, width)) of every stored payload, in data_id order."""
    out = []
    for did in repo.data.checkout(version).data_ids:
        payload, _, _ = repo.data.sample_payload(version, int(did))
        im = Image.open(io.BytesIO(payload)).convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        out.append(np.asarray(im))
    return np.stack(out)


def space_dir(repo, size: tuple[int, int]) -> Path:
    return Path(repo.data.cache_pixels("day", size=size).path)


def loaded(repo, version: str, **kw) -> np.ndarray:
    return torch.cat([x for x, _ in repo.data.loader(version, batch_size=16, **kw)]).permute(0, 2, 3, 1).numpy()


def test_loader_pixels_are_pil_decodes_of_the_stored_bytes(repo):
    native = loaded(repo, "day")  # 64x64 PNGs: no resize
    assert native.dtype == np.uint8 and np.array_equal(native, pil_pixels(repo, "day"))
    resized = loaded(repo, "day", size=(48, 40))  # (height, width): a real, non-square resize
    assert resized.shape == (40, 48, 40, 3) and np.array_equal(resized, pil_pixels(repo, "day", (48, 40)))
    floats = loaded(repo, "day", size=(48, 40), dtype="float32")
    assert floats.dtype == np.float32 and np.allclose(floats, resized / 255.0)
    # batches of consecutive samples are views of the memory-mapped cache, not copies
    ds = repo.data.torch_dataset("day", size=(48, 40))
    seq = ds.source.batch(np.arange(8, 24))
    assert np.shares_memory(seq, ds.source._map(int(ds.source.segment[8])))
    x, y = ds[[3, 1, 2]]  # any order: gathered
    assert x.shape == (3, 3, 48, 40) and np.array_equal(x.permute(0, 2, 3, 1).numpy(), resized[[3, 1, 2]])
    # labels: a COCO image key as the class column, in sorted order, as training takes it
    ds = repo.data.torch_dataset("both", label_column="time_of_day")
    assert ds.class_names == ("day", "night") and ds.labels.tolist() == [0] * 40 + [1] * 24
    shuffled = list(repo.data.loader("both", batch_size=10, shuffle=True, seed=1, label_column="time_of_day"))
    again = list(repo.data.loader("both", batch_size=10, shuffle=True, seed=1, label_column="time_of_day"))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(shuffled, again))
    assert sorted(torch.cat([b[1] for b in shuffled]).tolist()) == [0] * 40 + [1] * 24
    # cache=False decodes on every read, writes nothing, and gives the same pixels
    assert np.array_equal(loaded(repo, "day", size=(48, 40), cache=False), resized)


def test_versions_share_entries_and_a_new_size_is_a_new_cache(repo):
    day = repo.data.cache_pixels("day", size=24)
    assert (day.samples, day.decoded) == (40, 40)
    both = repo.data.cache_pixels("both", size=24)  # day's 40 images are reused, night's 24 decoded
    assert (both.samples, both.decoded, both.to_json()["reused"]) == (64, 24, 40)
    assert repo.data.cache_pixels("night", size=24).decoded == 0
    other = repo.data.cache_pixels("day", size=(24, 20))
    assert other.decoded == 40 and other.path != day.path  # another transform, other entries
    assert np.array_equal(loaded(repo, "both", size=24), pil_pixels(repo, "both", (24, 24)))


def test_training_reads_the_cache_without_changing_its_arrays(repo):
    view = repo.data.checkout("both")
    pos = np.arange(len(view))
    before = pixel_array(repo.stores, view, pos, (20, 20))  # nothing cached at 20x20: decoded
    assert repo.data.cache_pixels("day", size=20).decoded == 40  # day cached now, night not
    mixed = pixel_array(repo.stores, view, pos, (20, 20))  # day from the cache, night decoded
    assert np.array_equal(before, mixed) and np.array_equal(before, pil_pixels(repo, "both", (20, 20)))
    assert repo.data.cache_pixels("night", size=20).decoded == 24  # pixel_array wrote nothing


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.u8"))


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "digests", "manifest", "missing"])
def test_damaged_cache_is_never_read_as_pixels(repo, damage):
    size = (16, 16)
    d = space_dir(repo, size)
    seg = _segments(d)[0]
    if damage == "truncate":
        with open(seg, "r+b") as f:
            f.truncate(seg.stat().st_size // 2)
    elif damage == "overwrite":  # same length, other bytes: only the checksum can tell
        mm = np.memmap(seg, dtype=np.uint8, mode="r+")
        mm[100:5000] ^= 0x5A
        mm.flush()
        del mm
    elif damage == "digests":
        seg.with_suffix(".sha").write_bytes(b"\x00" * seg.with_suffix(".sha").stat().st_size)
    elif damage == "manifest":
        (d / "manifest.json").write_text("{not json")
    else:
        seg.unlink()
    # training's read-only path skips what is damaged and decodes instead
    view = repo.data.checkout("day")
    assert np.array_equal(pixel_array(repo.stores, view, np.arange(len(view)), size), pil_pixels(repo, "day", size))
    report = repo.data.cache_pixels("day", size=size)
    assert report.repaired == 1 and report.decoded == 40
    assert np.array_equal(loaded(repo, "day", size=size), pil_pixels(repo, "day", size))
    assert repo.data.cache_pixels("day", size=size).decoded == 0


def test_half_written_segments_are_invisible_and_cleaned(repo):
    cache = PixelCache(Path(repo.dir) / "cache" / "pixels")
    space = cache.space("crash-test", (2, 2, 3), {"test": True})
    digests = digests_of([f"{i:064x}" for i in range(10)])

    def fill_then_die(wanted, out):
        out[:] = 1
        if len(wanted) and wanted[0] == digests[4]:
            raise KeyboardInterrupt  # a writer stopped mid-segment

    with pytest.raises(KeyboardInterrupt):
        space.add(digests, fill_then_die, batch=4)
    assert not list(space.dir.glob("seg-*")) and space.lookup(digests).missing.all()
    (space.dir / "seg-000001.u8.tmp").write_bytes(b"x" * 7)  # what a kill -9 leaves
    (space.dir / "seg-000007.u8").write_bytes(b"\x01" * 120)  # renamed, never listed in the manifest
    assert space.lookup(digests).missing.all()
    added, _ = space.add(digests, lambda w, out: out.__setitem__(slice(None), 3), batch=4)
    assert added == 10 and sorted(p.name for p in space.dir.glob("seg-*")) == ["seg-000001.sha", "seg-000001.u8"]
    found = space.lookup(digests)
    assert not found.missing.any() and (found.row == np.arange(10)).all()


def test_two_builders_at_once_decode_each_image_once(repo):
    results = []
    threads = [threading.Thread(target=lambda: results.append(repo.data.cache_pixels("both", size=12))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.decoded for r in results) == [0, 64]
    manifest = json.loads((Path(results[0].path) / "manifest.json").read_text())
    assert sum(s["rows"] for s in manifest["segments"]) == 64


def test_cli_cache_clear_and_bad_input(repo):
    r = ok("--repo", repo.root, "data", "cache", "both", "--size", "20x10")
    assert {"version", "version_id", "height", "width", "samples", "unique", "decoded", "reused", "repaired",
            "cache_bytes", "bytes_per_sample", "path", "seconds"} <= set(r)
    assert (r["height"], r["width"], r["samples"], r["bytes_per_sample"]) == (10, 20, 64, 600)
    for args, needle in [(["data", "cache", "no-such-version"], "no-such-version"),
                         (["data", "cache", "both", "--size", "abc"], "--size"),
                         (["data", "cache", "both", "--size", "0"], "between 1 and"),
                         (["data", "cache"], "usage"),
                         (["data", "cache", "both", "--clear"], "--clear")]:
        assert_failed_cleanly(run_cli("--repo", repo.root, *args, "--json"), needle)
    table = Path(repo.root) / "rows.csv"
    table.write_text("a,y\n1,p\n2,n\n")
    repo.data.import_("table", table, "tab", label="y")
    assert_failed_cleanly(run_cli("--repo", repo.root, "data", "cache", "tab", "--json"), "not images")
    assert_failed_cleanly(run_cli("--repo", repo.root, "data", "cache", "day", "--workers", "0", "--json"), "--workers")
    with pytest.raises(veml.errors.InvalidInput, match="label_column"):
        repo.data.torch_dataset("day", label_column="nope")
    c = ok("--repo", repo.root, "data", "cache", "--clear")
    assert c["cleared"] is True and c["transforms"] >= 1 and c["bytes_freed"] > 0
    assert not any((Path(repo.dir) / "cache" / "pixels").iterdir())
    assert np.array_equal(loaded(repo, "night", size=(10, 20)), pil_pixels(repo, "night", (10, 20)))  # rebuilt on use


def test_gc_drops_the_pixels_of_samples_no_version_holds(tmp_path, driving_small, driving_night):
    """A segment holding a deleted version's images beside a surviving one's is rewritten with the survivors
    only; the cache shrinks by what gc reports, and the surviving version reads PIL's pixels without a decode."""
    import sqlalchemy as sa

    from veml.store.sql_graph import idsets_t

    root = tmp_path / "repo"
    with veml.init(root) as r:
        r.data.import_("coco", driving_small, "day", images=images_dir(driving_small))
        r.data.import_("coco", driving_night, "night", images=images_dir(driving_night))
        r.data.merge(["day", "night"], "both")
        built = r.data.cache_pixels("both", size=24)  # one segment: day's 40 images and night's 24
        space = Path(built.path)
        before = sum(p.stat().st_size for p in space.iterdir())
        old = json.loads((space / "manifest.json").read_text())["segments"]
        assert [s["rows"] for s in old] == [64]
        day = np.sort(digests_of(r.data.checkout("day").metadata()["content_hash"].to_pylist()))
        want = pil_pixels(r, "day", (24, 24))
        # VeML never deletes a version: drop "night" and "both" the way a deletion would, by their id sets
        gone = [r.data.get("night").id, r.data.get("both").id]
        with r.stores.graph.engine.begin() as conn:
            conn.execute(sa.delete(idsets_t).where(idsets_t.c.node_id.in_(gone)))
    with veml.open(root) as r, PixelCache(space.parent).space(space.name, (24, 24, 3), {})._locked():
        busy = r.gc(grace_s=0).to_json()  # a size being built meanwhile is left for the next gc
    assert busy["samples_reclaimed"] == 24 and busy["pixel_cache_bytes_freed"] == 0
    assert json.loads((space / "manifest.json").read_text())["segments"] == old
    res = run_cli("gc", "--grace", "0", "--json", "--repo", root)
    assert res.code == 0, res.err
    freed = res.json["pixel_cache_bytes_freed"]
    assert res.json["samples_reclaimed"] == 0 and freed >= 24 * 24 * 24 * 3
    assert sum(p.stat().st_size for p in space.iterdir()) == before - freed
    new = json.loads((space / "manifest.json").read_text())["segments"]
    assert [s["rows"] for s in new] == [40] and new[0]["name"] != old[0]["name"]
    assert sorted(p.name for p in space.iterdir() if p.name.startswith("seg-")) == [f"{new[0]['name']}.sha", f"{new[0]['name']}.u8"]
    with veml.open(root) as r:
        assert np.array_equal(np.sort(np.fromfile(space / f"{new[0]['name']}.sha", dtype="S32")), day)
        assert r.data.cache_pixels("day", size=24).decoded == 0  # served by the rewritten segment
        assert np.array_equal(loaded(r, "day", size=24), want)
    again = run_cli("gc", "--grace", "0", "--json", "--repo", root)
    assert again.code == 0 and again.json["pixel_cache_bytes_freed"] == 0
