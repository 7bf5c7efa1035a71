"""The Lance sample store: reads by id set in every layout (ranges, dense and sparse scatter, after gc)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from veml.schemas import SCHEMAS
from veml.store.idsets import from_array
from veml.store.lance_samples import LanceSampleStore


def _labels(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n)
    return pa.table({"ann_id": ids, "data_id": ids, "category": [f"c{i % 7}" for i in ids], "value": ids * 0.5},
                    schema=SCHEMAS["labels"])


@pytest.fixture
def store(tmp_path):
    s = LanceSampleStore(tmp_path / "data")
    s.create()
    for start in (0, 3000, 5000):  # three appends, three fragments, one gap in the ids
        s.append("labels", _labels(start, 2000))
    return s


@pytest.mark.parametrize("pattern", ["one-range", "few-ranges", "dense-scatter", "sparse-scatter", "mixed"])
def test_read_returns_exactly_the_wanted_rows_in_key_order(store, pattern):
    rng = np.random.default_rng(0)
    present = np.concatenate([np.arange(0, 2000), np.arange(3000, 5000), np.arange(5000, 7000)])
    wanted = {
        "one-range": np.arange(3100, 3900),
        "few-ranges": np.concatenate([np.arange(10, 20), np.arange(4000, 4100), np.arange(6990, 7000)]),
        "dense-scatter": present[rng.random(len(present)) < 0.6],
        "sparse-scatter": present[rng.random(len(present)) < 0.02],
        "mixed": np.concatenate([np.arange(0, 2000)[::2], np.arange(5000, 7000)[::97]]),
    }[pattern]
    wanted_plus_absent = np.concatenate([wanted, [2500, 9999]])  # ids no row has are simply not returned
    out = store.read("labels", from_array(wanted_plus_absent))
    assert out["ann_id"].to_pylist() == sorted(wanted.tolist())
    assert out["value"].to_pylist() == [v * 0.5 for v in sorted(wanted.tolist())]
    only = store.read("labels", from_array(wanted), columns=["category"])
    assert only.column_names == ["ann_id", "category"] and only.num_rows == len(wanted)


def test_read_after_reclaim_skips_deleted_rows(store):
    gone = from_array(np.arange(3000, 5000, 3))
    assert store.reclaim("labels", gone) == len(gone)
    wanted = np.arange(2900, 5200, 2)
    out = store.read("labels", from_array(wanted))
    expect = [i for i in wanted.tolist() if (2000 > i or i >= 3000) and not (3000 <= i < 5000 and (i - 3000) % 3 == 0)]
    assert out["ann_id"].to_pylist() == expect
    assert len(store.keys("labels")) == 6000 - len(gone)


def test_a_reader_whose_version_gc_removed_rereads_the_latest(store):
    """gc compacts and drops old table versions while other processes read: a scan on a handle
    opened before that finds a data file gone, and the store retries on the latest version."""
    import lance

    stale = lance.dataset(store._uri("labels"))  # what a concurrent reader opened before gc ran
    assert store.reclaim("labels", from_array(np.arange(0, 2000))) == 2000  # compaction + clean-up
    with pytest.raises(Exception, match="(?i)not found"):
        stale.to_table(filter="data_id >= 3000")  # the old version's files are gone
    handles = []

    def scan(ds):
        handles.append(ds)
        return (stale if len(handles) == 1 else ds).to_table(filter="data_id >= 3000")

    out = store._on_latest("labels", scan)
    assert len(handles) == 2 and out.num_rows == 4000
    assert sorted(out["data_id"].to_pylist()) == list(range(3000, 7000))
