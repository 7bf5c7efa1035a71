"""Sensor time series (METR-LA style: time × sensors), cut into fixed windows.

A sample is one window of ``window`` consecutive steps of every sensor, stored as a float32
tensor (steps × sensors), so windows are what versions select, embed and train on.  Missing
readings follow METR-LA's convention (a sentinel, 0.0 by default) and are counted; NaN or inf is
bad input, because downstream code could not tell it from a bug.  The road graph's adjacency
matrix, when given, is kept as a content-addressed artifact the version points at.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from veml.errors import InvalidInput
from veml.formats.batch import SAMPLE_SCHEMA, ImportBatch, annotation_schema, sha256, to_json_meta
from veml.formats.paths import ReadPolicy, check_unpacked, read_regular

DEFAULT_WINDOW = 288  # one day of 5-minute steps


def _real(values: np.ndarray, where: str) -> np.ndarray:
    """Refuse complex values: casting them to float would silently drop the imaginary part."""
    if np.iscomplexobj(values):
        raise InvalidInput(f"{where}: complex values ({values.dtype}) are not supported: store real numbers")
    return values


def _load_npz(raw: bytes, where: str, policy: ReadPolicy) -> np.lib.npyio.NpzFile:
    """An npz archive whose members together unpack to no more than the per-file cap (zip bombs).

    The sizes are the zip directory's, and ``zipfile`` never yields more bytes than they state.
    """
    z = np.load(io.BytesIO(raw), allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("not an npz archive")
    try:
        check_unpacked(sum(info.file_size for info in z.zip.infolist()), where, policy)
    except BaseException:
        z.close()
        raise
    return z


def _npz(path: Path, raw: bytes, policy: ReadPolicy) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, np.ndarray | None]:
    try:
        with _load_npz(raw, str(path), policy) as z:
            key = next((k for k in ("data", "speeds", "speed", "x") if k in z.files), None)
            if key is None:
                raise InvalidInput(f"{path}: npz has no 'data' array (found: {', '.join(z.files) or 'nothing'})")
            data = np.asarray(z[key])
            ts = np.asarray(z["timestamps"]) if "timestamps" in z.files else None
            ids = [str(s) for s in z["sensor_ids"]] if "sensor_ids" in z.files else None
            adj = np.asarray(z["adjacency"]) if "adjacency" in z.files else None
    except InvalidInput:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{path}: not a readable npz file ({exc})") from None
    return data, ts, ids, adj


def _csv(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    try:
        table = pacsv.read_csv(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{path}: cannot parse CSV: {str(exc).splitlines()[0]}") from None
    names = table.column_names
    ts = None
    if names and names[0].lower() in ("timestamp", "time", "date", "datetime", ""):
        col = table.column(0)
        if pa.types.is_timestamp(col.type):
            ts = col.cast(pa.timestamp("s")).cast(pa.int64()).to_numpy()
        elif pa.types.is_integer(col.type):
            ts = col.to_numpy().astype(np.int64)
        else:
            raise InvalidInput(f"{path}: first column {names[0]!r} is neither unix seconds nor a timestamp")
        table, names = table.drop_columns([names[0]]), names[1:]
    cols = []
    for name in names:
        c = table[name]
        if not (pa.types.is_integer(c.type) or pa.types.is_floating(c.type)):
            raise InvalidInput(f"{path}: sensor column {name!r} is not numeric ({c.type})")
        cols.append(c.to_numpy(zero_copy_only=False).astype(np.float64))
    if not cols:
        raise InvalidInput(f"{path}: no sensor columns")
    return np.stack(cols, axis=1), ts, names


def _h5_member(group, name: str, where: Path, policy: ReadPolicy, dataset: bool = True):
    """``group[name]`` if it is stored in this file: an external or soft link, external raw storage or a
    virtual dataset would read another file (anywhere on disk), so they are refused; a dataset is
    also refused if it unpacks past the per-file cap.  None if there is no such member."""
    import h5py

    if name not in list(group):  # link names only: nothing is resolved
        return None
    what = f"{where}: HDF5 member {group.name.rstrip('/')}/{name}"
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise InvalidInput(f"{what} is a {type(link).__name__}: only data stored in the file itself is read")
    obj = group[name]
    if not isinstance(obj, h5py.Dataset if dataset else h5py.Group):
        raise InvalidInput(f"{what} is not a {'dataset' if dataset else 'group'}")
    if dataset:
        if obj.external is not None or obj.is_virtual:
            raise InvalidInput(f"{what} uses {'external' if obj.external is not None else 'virtual'} storage "
                               f"(data in another file): only data stored in the file itself is read")
        check_unpacked(obj.size * obj.dtype.itemsize, what, policy)
    return obj


def _h5(path: Path, raw: bytes, policy: ReadPolicy) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    import h5py

    def get(group, name):
        obj = _h5_member(group, name, path, policy)
        return None if obj is None else np.asarray(obj)

    def names(values):
        return None if values is None else [s.decode() if isinstance(s, bytes) else str(s) for s in values]

    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            data = get(f, "data")
            if data is not None:
                ts = get(f, "timestamps")
                return data, None if ts is None else ts.astype(np.int64), names(get(f, "sensor_ids"))
            g = _h5_member(f, "df", path, policy, dataset=False)
            data = None if g is None else get(g, "block0_values")
            if data is not None:  # pandas HDFStore fixed format, as METR-LA ships
                ids = names(get(g, "axis0"))
                if ids is None:
                    raise InvalidInput(f"{path}: HDF5 group /df has no 'axis0' (sensor ids)")
                ts = get(g, "axis1")
                return data, None if ts is None else ts.astype(np.int64) // 1_000_000_000, ids
    except OSError as exc:
        raise InvalidInput(f"{path}: not a readable HDF5 file ({exc})") from None
    raise InvalidInput(f"{path}: HDF5 file has neither a 'data' dataset nor a pandas 'df' group")


def read_adjacency(path: Path, policy: ReadPolicy | None = None) -> np.ndarray:
    path = Path(path)
    policy = policy or ReadPolicy.from_options()
    raw = read_regular(path, f"{path} (adjacency)", policy)
    try:
        if path.suffix == ".npy":
            return _real(np.load(io.BytesIO(raw), allow_pickle=False), str(path))
        if path.suffix == ".npz":
            with _load_npz(raw, f"{path} (adjacency)", policy) as z:
                return _real(np.asarray(z["adjacency"] if "adjacency" in z.files else z[z.files[0]]), str(path))
        table = pacsv.read_csv(pa.BufferReader(raw))
        return np.stack([table[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in table.column_names], axis=1)
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException) as exc:
        raise InvalidInput(f"{path}: cannot read adjacency matrix ({str(exc).splitlines()[0]})") from None


def parse_timeseries(
    path: Path,
    adjacency: Path | None = None,
    window: int = DEFAULT_WINDOW,
    missing_value: float = 0.0,
    step_seconds: int = 300,
    policy: ReadPolicy | None = None,
) -> ImportBatch:
    path = Path(path)
    policy = policy or ReadPolicy.from_options()
    if window <= 0:
        raise InvalidInput("--window must be a positive number of steps")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv", ".h5", ".hdf5"):
        if not path.exists():
            raise InvalidInput(f"{path}: file not found")
        raise InvalidInput(f"{path}: unsupported time-series format {suffix or '(none)'}: use .npz, .csv or .h5")
    raw = read_regular(path, str(path), policy)
    adj = None
    if suffix == ".npz":
        data, ts, ids, adj = _npz(path, raw, policy)
    elif suffix == ".csv":
        data, ts, ids = _csv(path, raw)
    else:
        data, ts, ids = _h5(path, raw, policy)
    data = _real(data, str(path))
    if data.ndim != 2:
        raise InvalidInput(f"{path}: expected a 2-D array time × sensors, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise InvalidInput(f"{path}: series values are not numeric ({data.dtype})")
    data = data.astype(np.float32)
    bad = np.argwhere(~np.isfinite(data))
    if len(bad):
        t, s = bad[0]
        raise InvalidInput(f"{path}: NaN or infinite value at step {t}, sensor {s} ({len(bad)} such values)")
    n_steps, n_sensors = data.shape
    if ids is None:
        ids = [f"s{i}" for i in range(n_sensors)]
    if len(ids) != n_sensors:
        raise InvalidInput(f"{path}: {len(ids)} sensor ids for {n_sensors} sensor columns")
    if ts is None:
        ts = np.arange(n_steps, dtype=np.int64) * step_seconds
    if len(ts) != n_steps:
        raise InvalidInput(f"{path}: {len(ts)} timestamps for {n_steps} steps")
    if adjacency is not None:
        adj = read_adjacency(adjacency, policy)
    if adj is not None:
        adj = _real(np.asarray(adj), str(adjacency or path))
    artifacts: dict[str, bytes] = {}
    if adj is not None:
        adj = np.asarray(adj, dtype=np.float32)
        where = adjacency or path
        if adj.shape != (n_sensors, n_sensors):
            raise InvalidInput(f"{where}: adjacency is {adj.shape}, expected ({n_sensors}, {n_sensors}) for {n_sensors} sensors")
        if not np.all(np.isfinite(adj)):
            raise InvalidInput(f"{where}: adjacency has NaN or infinite values")
        buf = io.BytesIO()
        np.save(buf, adj, allow_pickle=False)
        artifacts["adjacency"] = buf.getvalue()
    n_windows = n_steps // window
    if n_windows == 0:
        raise InvalidInput(f"{path}: {n_steps} steps is shorter than one window of {window}")
    payloads, metas, hashes, names = [], [], [], []
    ann_idx, ann_sensor, ann_t0, ann_missing, ann_mean = [], [], [], [], []
    for w in range(n_windows):
        block = np.ascontiguousarray(data[w * window : (w + 1) * window])
        raw = block.astype("<f4").tobytes()
        payloads.append(raw)
        hashes.append(sha256(raw))
        t0 = int(ts[w * window])
        names.append(f"{path.name}#{t0}")
        missing = (block == missing_value).sum(axis=0)
        valid = np.where(block == missing_value, np.nan, block)
        with np.errstate(all="ignore"):
            means = np.nanmean(valid, axis=0)
        metas.append(to_json_meta({"window_start": t0, "window_steps": window, "window_missing": int(missing.sum())}))
        ann_idx.extend([w] * n_sensors)
        ann_sensor.extend(ids)
        ann_t0.extend([t0] * n_sensors)
        ann_missing.extend(missing.tolist())
        ann_mean.extend(np.where(np.isnan(means), None, means).tolist())
    samples = pa.table(
        {
            "modality": ["series"] * n_windows,
            "format": ["f32"] * n_windows,
            "payload": pa.array(payloads, pa.large_binary()),
            "width": pa.array([n_sensors] * n_windows, pa.int32()),
            "height": pa.array([window] * n_windows, pa.int32()),
            "channels": pa.array([1] * n_windows, pa.int32()),
            "shape": pa.array([[window, n_sensors]] * n_windows, pa.list_(pa.int32())),
            "file_name": names,
            "content_hash": hashes,
            "meta": metas,
        },
        schema=SAMPLE_SCHEMA,
    )
    series = pa.table(
        {
            "sample_index": ann_idx,
            "sensor": ann_sensor,
            "t0": ann_t0,
            "steps": pa.array([window] * len(ann_idx), pa.int32()),
            "missing": pa.array(ann_missing, pa.int32()),
            "mean": pa.array(ann_mean, pa.float64()),
        },
        schema=annotation_schema("series"),
    )
    return ImportBatch(
        modality="series",
        samples=samples,
        annotations={"series": series},
        columns={"window_start": "BIGINT", "window_steps": "BIGINT", "window_missing": "BIGINT"},
        source={"format": "timeseries", "path": str(path.resolve()), "dropped_steps": int(n_steps - n_windows * window)},
        artifacts=artifacts,
        extra_props={"sensors": list(ids), "window": window, "missing_value": missing_value, "step_seconds": int(np.median(np.diff(ts))) if n_steps > 1 else step_seconds},
    )
