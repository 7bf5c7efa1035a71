"""Samples, embeddings and artifacts in ``s3://bucket/prefix``, against a real S3 server on loopback.

``moto`` runs in server mode in a child process (tests/s3_server.py); clients reach it through a
small forwarding proxy that logs every request and can inject ``503 SlowDown`` replies or dropped
connections.  Nothing under test is mocked: Lance's Rust object store and s3fs/botocore speak real
HTTP, so these tests fail if the URL plumbing, the storage options, the retry configuration or the
error translation break.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tomli_w

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from conftest import assert_failed_cleanly, images_dir, run_cli, write_table  # noqa: E402
from s3_server import FaultProxy, MotoServer, free_port, s3_env  # noqa: E402

from veml.errors import InvalidInput, MissingExtra, NotFound, StorageError  # noqa: E402
from veml.schemas import SCHEMAS  # noqa: E402
from veml.store import open_artifact_store, open_embedding_store, open_sample_store  # noqa: E402
from veml.store.idsets import from_array  # noqa: E402
from veml.store.object_store import S3Settings  # noqa: E402


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(moto_server):
    p = FaultProxy(moto_server.port)
    yield p
    p.stop()


class S3:
    """One fresh bucket per test, every client pointed at it through the proxy by the AWS variables."""

    def __init__(self, server: MotoServer, proxy: FaultProxy) -> None:
        self.server, self.proxy = server, proxy
        self.bucket = server.create_bucket(f"veml-{uuid.uuid4().hex[:12]}")

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.bucket, prefix)


@pytest.fixture
def s3(moto_server, proxy, monkeypatch):
    for k, v in s3_env(proxy.endpoint).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    proxy.reset()
    yield S3(moto_server, proxy)
    proxy.reset()


NOWHERE = Path("/nonexistent-base")  # s3:// stores must never resolve anything against the local base


def _labels(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n)
    return pa.table({"ann_id": ids, "data_id": ids, "category": [f"c{i % 7}" for i in ids], "value": ids * 0.5},
                    schema=SCHEMAS["labels"])


def _images(ids: np.ndarray, payloads: list[bytes]) -> pa.Table:
    n = len(ids)
    cols = {f.name: pa.nulls(n, f.type) for f in SCHEMAS["samples"]}
    cols.update(data_id=pa.array(ids), modality=pa.array(["image"] * n), payload=pa.array(payloads, pa.large_binary()))
    return pa.table(cols, schema=SCHEMAS["samples"])


# ------------------------------------------------------------------------------ sample store


def test_sample_store_on_s3_appends_reads_and_reclaims(s3):
    store = open_sample_store(s3.url("repo/data"), NOWHERE)
    store.create()
    assert {k.split("/")[2] for k in s3.keys("repo/data/")} >= {f"{t}.lance" for t in SCHEMAS}
    for start in (0, 3000, 5000):  # three appends, three fragments, a gap in the ids
        store.append("labels", _labels(start, 2000))
    present = np.concatenate([np.arange(0, 2000), np.arange(3000, 7000)])
    rng = np.random.default_rng(1)
    for wanted in (np.arange(3100, 3900),  # one range: pushed down as a filter
                   np.concatenate([np.arange(10, 20), np.arange(4000, 4100)]),  # few ranges
                   present[rng.random(len(present)) < 0.3]):  # scattered: keys scanned, rows taken by position
        out = store.read("labels", from_array(np.concatenate([wanted, [2500, 99999]])))
        assert out["ann_id"].to_pylist() == sorted(wanted.tolist())
        assert out["value"].to_pylist() == [v * 0.5 for v in sorted(wanted.tolist())]
    only = store.read("labels", from_array(np.arange(5, 9)), columns=["category"])
    assert only.column_names == ["ann_id", "category"] and only.num_rows == 4
    assert len(store.keys("labels")) == 6000
    assert store.keys("boxes") == from_array(np.zeros(0, np.int64))

    size_before = store.size_bytes()
    assert size_before > 0
    gone = from_array(np.arange(3000, 5000, 3))
    assert store.reclaim("labels", gone) == len(gone)
    assert len(store.keys("labels")) == 6000 - len(gone)
    assert store.read("labels", from_array(np.arange(3000, 3007)))["ann_id"].to_pylist() == [3001, 3002, 3004, 3005]
    # a fresh store object (another process) sees the same, from the bucket alone
    again = open_sample_store(s3.url("repo/data"), NOWHERE)
    assert len(again.keys("labels")) == 6000 - len(gone)
    assert again.size_bytes() == store.size_bytes()


def test_lance_reads_only_the_byte_ranges_a_read_needs(s3):
    """Five 40 kB images out of 300 (12 MB): a few ranged GETs, not the data file."""
    store = open_sample_store(s3.url("r/data"), NOWHERE)
    rng = np.random.default_rng(0)
    payloads = [rng.bytes(40_000) for _ in range(300)]
    store.append("samples", _images(np.arange(300), payloads))
    total = store.size_bytes()
    assert total > 300 * 40_000
    s3.proxy.reset()
    out = store.read("samples", from_array(np.arange(100, 105)), columns=["payload"])
    assert out["payload"].to_pylist() == payloads[100:105]
    data_gets = [r for r in s3.proxy.requests() if r.method == "GET" and ".lance/data/" in r.path]
    assert data_gets and all(r.range for r in data_gets), data_gets
    fetched = sum(r.body_bytes for r in data_gets)
    assert 5 * 40_000 <= fetched < total / 20, (fetched, total)


def test_embeddings_on_s3(s3):
    store = open_embedding_store(s3.url("repo/embeddings"), NOWHERE)
    assert store.keys() == [] and store.size_bytes() == 0
    vec = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    store.put("lite0@1", np.arange(6), vec)
    store.put("lite0@1", np.array([4, 5, 6]), np.ones((3, 4), np.float32))  # 4, 5 again: the first rows win
    ids, vectors = store.get("lite0@1", np.array([6, 0, 5, 42]))
    assert ids.tolist() == [0, 5, 6]
    np.testing.assert_array_equal(np.stack(vectors), np.stack([vec[0], vec[5], np.ones(4, np.float32)]))
    assert store.get("other", np.arange(3))[0].tolist() == []
    assert len(store.keys()) == 1 and store.keys()[0].startswith("lite0-1")
    assert store.size_bytes() > 0
    assert s3.keys("repo/embeddings/")


# ------------------------------------------------------------------------------ artifacts


def test_artifacts_on_s3(s3):
    store = open_artifact_store(s3.url("repo/artifacts"), NOWHERE)
    assert list(store.digests()) == []
    blobs = [b"checkpoint-%d" % i * 1000 for i in range(3)]
    digests = [store.put_bytes(b) for b in blobs]
    assert store.put_bytes(blobs[0]) == digests[0]  # idempotent
    assert list(store.digests()) == sorted(digests)
    for d, b in zip(digests, blobs):
        assert store.exists(d) and store.verify(d) and store.get_bytes(d) == b
    assert sorted(s3.keys("repo/artifacts/")) == sorted(f"repo/artifacts/{d[:2]}/{d}" for d in digests)
    # writes are create-only: the upload carries If-None-Match: *
    puts = [r for r in s3.proxy.requests() if r.method == "PUT"]
    assert len(puts) == 3 and all(r.if_none_match == "*" for r in puts)

    missing = "0" * 64
    assert not store.exists(missing) and not store.verify(missing)
    with pytest.raises(NotFound):
        store.get_bytes(missing)
    with pytest.raises(InvalidInput):
        store.get_bytes("not-a-digest")
    # damage one behind the store's back: verify notices
    s3.server.client().put_object(Bucket=s3.bucket, Key=f"repo/artifacts/{digests[1][:2]}/{digests[1]}", Body=b"rot")
    assert not store.verify(digests[1]) and store.verify(digests[2])


def test_artifact_range_read_fetches_only_the_slice(s3):
    store = open_artifact_store(s3.url("a"), NOWHERE)
    big = np.random.default_rng(3).bytes(3 << 20)
    d = store.put_bytes(big)
    s3.proxy.reset()
    assert store.read_range(d, 1_000_000, 100) == big[1_000_000:1_000_100]
    gets = [r for r in s3.proxy.requests() if r.method == "GET"]
    assert [(r.range, r.body_bytes) for r in gets] == [("bytes=1000000-1000099", 100)]
    assert store.read_range(d, len(big) - 10, 100) == big[-10:]


# ------------------------------------------------------------------------------ retries


def test_lance_retries_transient_errors(s3):
    store = open_sample_store(s3.url("retry/data"), NOWHERE)
    store.append("labels", _labels(0, 100))
    s3.proxy.fail_next(3, "503")
    store.append("labels", _labels(100, 100))
    assert s3.proxy.injected == 3
    s3.proxy.fail_next(2, "drop")
    assert len(store.keys("labels")) == 200
    assert s3.proxy.injected == 2


def test_s3fs_retries_transient_errors(s3):
    store = open_artifact_store(s3.url("retry/artifacts"), NOWHERE)
    s3.proxy.fail_next(2, "503")
    d = store.put_bytes(b"weights" * 100)
    assert s3.proxy.injected == 2
    s3.proxy.fail_next(2, "drop")
    assert store.get_bytes(d) == b"weights" * 100
    assert s3.proxy.injected == 2


def test_exhausted_retries_give_one_clean_storage_error(s3):
    retries = 1
    cfg = {"max_retries": retries, "retry_timeout_s": 5}
    samples = open_sample_store(s3.url("x/data"), NOWHERE, s3=cfg)
    samples.append("labels", _labels(0, 10))
    artifacts = open_artifact_store(s3.url("x/artifacts"), NOWHERE, s3=cfg)
    d = artifacts.put_bytes(b"abc")

    s3.proxy.fail_next(10**6, "503")
    with pytest.raises(StorageError) as err:
        artifacts.get_bytes(d)
    msg = str(err.value)
    assert "\n" not in msg and "kept failing (HTTP 503" in msg and "after 1 retry" in msg, msg
    # bounded: botocore's 1 + max_retries attempts of each request, s3fs's outer loop at most doubling that
    assert 1 + retries <= s3.proxy.injected <= 2 * (1 + retries)

    s3.proxy.fail_next(10**6, "503")
    with pytest.raises(StorageError) as err:
        samples.keys("labels")
    msg = str(err.value)
    assert "\n" not in msg and "kept failing" in msg and "x/data" in msg, msg
    assert 1 + retries <= s3.proxy.injected <= 6 * (1 + retries)  # Lance lists versions up to 6 times

    s3.proxy.reset()  # the outage ends: the same store objects work again
    assert len(samples.keys("labels")) == 10 and artifacts.get_bytes(d) == b"abc"


# ------------------------------------------------------------------------------ commits and concurrency


def test_racing_commits_meet_a_conditional_put_and_neither_is_lost(s3):
    """Two writers commit the same version number: the server refuses the second manifest PUT
    (``If-None-Match: *`` → 412) and Lance re-commits it as the next version.

    The proxy parks writer A's manifest PUT until writer B has committed, so the race happens
    every time instead of by luck.
    """
    import threading

    import lance

    store = open_sample_store(s3.url("race/data"), NOWHERE)
    store.create()
    s3.proxy.reset()
    arrived, release = s3.proxy.hold_next(lambda method, path: method == "PUT" and "/_versions/" in path)
    failed: list[BaseException] = []

    def writer_a() -> None:
        try:
            open_sample_store(s3.url("race/data"), NOWHERE).append("labels", _labels(0, 10))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    a = threading.Thread(target=writer_a)
    a.start()
    try:
        assert arrived.wait(60), "writer A never tried to commit"
        store.append("labels", _labels(100, 10))  # writer B commits the version A is about to write
    finally:
        release.set()
        a.join(120)
    assert not failed, failed
    manifests = [(r.path.rsplit("/", 1)[1], r.status, r.if_none_match) for r in s3.proxy.requests()
                 if r.method == "PUT" and "/_versions/" in r.path]
    assert [m[2] for m in manifests] == ["*", "*", "*"], manifests
    (b_key, b_status, _), (a_key, a_status, _), (retry_key, retry_status, _) = manifests
    assert (b_status, a_status, retry_status) == (200, 412, 200) and a_key == b_key != retry_key, manifests
    assert sorted(store.keys("labels")) == list(range(10)) + list(range(100, 110))
    ds = lance.dataset(s3.url("race/data/labels.lance"), storage_options=S3Settings.resolve().lance_options())
    assert ds.version == 3  # empty table, B's append, A's append


_WRITER = """
import sys
import numpy as np, pyarrow as pa
from veml.schemas import SCHEMAS
from veml.store.lance_samples import LanceSampleStore

store = LanceSampleStore(sys.argv[1])
w, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    ids = np.arange(20) + (w * 1000 + i) * 20
    store.append("labels", pa.table({"ann_id": ids, "data_id": ids, "category": ["c"] * 20, "value": ids * 1.0},
                                    schema=SCHEMAS["labels"]))
"""


def test_concurrent_appends_from_two_processes_lose_no_commit(s3, moto_server):
    url = s3.url("conc/data")
    open_sample_store(url, NOWHERE).create()
    env = {**os.environ, **s3_env(moto_server.endpoint)}
    n = 10
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(w), str(n)], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    store = open_sample_store(url, NOWHERE)
    assert len(store.keys("labels")) == 2 * n * 20
    import lance

    ds = lance.dataset(f"{url}/labels.lance", storage_options=S3Settings.resolve().lance_options())
    assert ds.version == 1 + 2 * n  # the empty table, then every append its own version


# ------------------------------------------------------------------------------ configuration and bad input


def test_s3_table_endpoint_is_used_by_lance_and_s3fs_alike(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = open_sample_store(s3.url("cfg/data"), NOWHERE, s3={"endpoint_url": s3.proxy.endpoint})
    store.create()  # s3fs probes the bucket, Lance writes the tables
    store.append("labels", _labels(0, 5))
    assert len(store.keys("labels")) == 5
    agents = {r.agent.split("/")[0].lower() for r in s3.proxy.requests()}
    assert any("botocore" in a for a in agents) and "object_store" in agents, agents


def test_settings_resolve_env_and_table():
    env = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}
    st = S3Settings.resolve(None, env)
    lo = st.lance_options()
    assert lo["aws_endpoint"] == "http://minio:9000" and lo["allow_http"] == "true" and lo["aws_region"] == "eu-west-1"
    assert lo["aws_access_key_id"] == "k" and lo["client_max_retries"] == "3" and lo["lance_aimd_max_retries"] == "0"
    kw = st.s3fs_kwargs()
    assert kw["client_kwargs"]["endpoint_url"] == "http://minio:9000" and kw["key"] == "k"
    assert kw["config_kwargs"]["retries"] == {"total_max_attempts": 4, "mode": "standard"}
    st = S3Settings.resolve({"endpoint_url": "https://s3.example.com", "region": "x", "anon": True}, env)
    assert "allow_http" not in st.lance_options() and st.lance_options()["aws_skip_signature"] == "true"
    assert "aws_access_key_id" not in st.lance_options() and st.s3fs_kwargs()["anon"] is True
    for bad in ({"endpoint": "x"}, {"allow_http": "maybe"}, {"max_retries": -1}, {"endpoint_url": "minio:9000"}):
        with pytest.raises(InvalidInput):
            S3Settings.resolve(bad, env)


def test_bad_urls_missing_bucket_unreachable_endpoint_and_missing_extra(s3, monkeypatch):
    for url in ("s3://", "s3://A_B/x", "s3://bucket/a//b", "s3://bucket/../x", "gs://bucket/x"):
        with pytest.raises(InvalidInput):
            open_sample_store(url, NOWHERE)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        open_sample_store("s3://no-such-bucket/data", NOWHERE).create()
    with pytest.raises(StorageError, match="does not exist"):
        open_artifact_store("s3://no-such-bucket/a", NOWHERE).get_bytes("a" * 64)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match=f"cannot reach the object store at {dead}"):
        open_sample_store(s3.url("d"), NOWHERE, s3={"endpoint_url": dead, "max_retries": 0}).create()
    with pytest.raises(StorageError, match=f"cannot reach the object store at {dead}"):
        open_artifact_store(s3.url("d"), NOWHERE, s3={"endpoint_url": dead, "max_retries": 0}).put_bytes(b"x")
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the [s3] extra were not installed
    with pytest.raises(MissingExtra, match=r"veml\[s3\]"):
        open_sample_store(s3.url("d"), NOWHERE)
    with pytest.raises(MissingExtra):
        open_artifact_store(s3.url("d"), NOWHERE)


def test_bad_credentials_give_access_denied(monkeypatch):
    server = MotoServer(authenticate_after=1)  # the bucket is made anonymously; then moto checks every signature
    try:
        server.create_bucket("locked")
        for k, v in s3_env(server.endpoint).items():  # keys moto's IAM does not know
            monkeypatch.setenv(k, v)
        checks = [lambda: open_sample_store("s3://locked/d", NOWHERE).create(),  # s3fs's probe
                  lambda: open_sample_store("s3://locked/d", NOWHERE).append("labels", _labels(0, 3)),  # Lance
                  lambda: open_artifact_store("s3://locked/a", NOWHERE).put_bytes(b"x")]  # s3fs
        for check in checks:
            with pytest.raises(StorageError) as err:
                check()
            assert "access denied" in str(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value), err.value
    finally:
        server.stop()


# ------------------------------------------------------------------------------ the whole repository, through the CLI


def _quiet_ok(*args):
    """``ok`` and, as the CLI contract asks of --json, nothing at all on stderr (no library log lines)."""
    res = run_cli(*args, "--json")
    assert res.code == 0 and res.err == "", (args, res.err)
    return res.json


def test_repository_round_trip_on_s3_through_the_cli(s3, tmp_path, driving_small):
    root = tmp_path / "repo"
    _quiet_ok("init", root, "--storage-url", s3.url("team/data"), "--artifacts-url", s3.url("team/artifacts"))
    cfg_path = root / ".veml" / "config.toml"
    cfg = tomllib.loads(cfg_path.read_text())
    assert (cfg["storage_url"], cfg["artifacts_url"]) == (s3.url("team/data"), s3.url("team/artifacts"))
    cfg["embeddings_url"] = s3.url("team/embeddings")  # veml init has no flag for it: set in config.toml
    cfg_path.write_text(tomli_w.dumps(cfg))

    day = _quiet_ok("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "day",
                    "--repo", root)
    peds = _quiet_ok("data", "filter", "day", "--where", "category = 'pedestrian'", "--name", "peds", "--repo", root)
    assert 0 < peds["samples"] < day["samples"] == 40
    assert _quiet_ok("data", "show", "peds", "--repo", root)["stats"]["samples"] == peds["samples"]
    out = tmp_path / "checkout"
    _quiet_ok("data", "export", "peds", "--format", "coco", "--out", out, "--repo", root)
    images = [p for p in out.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg")]
    assert len(images) == peds["samples"]
    table = write_table(tmp_path / "t.csv", rows=60)
    _quiet_ok("data", "import", "table", table, "--label", "y", "--name", "tab", "--repo", root)
    _quiet_ok("coreset", "tab", "--embedder", "columns", "--k", "8", "--repo", root)  # embeddings + a matrix artifact
    report = _quiet_ok("verify", "--repo", root)
    assert report["ok"] and report["artifacts"] >= 1 and report["samples"] == 100, report
    gc = _quiet_ok("gc", "--grace", "0", "--repo", root)
    assert gc["bytes_before"] > 0 and gc["bytes_after"] > 0
    assert _quiet_ok("verify", "--repo", root)["ok"]

    # everything lives in the bucket; locally only the config and the metadata database
    local = {p.name for p in (root / ".veml").iterdir()}
    assert not local & {"data", "artifacts", "embeddings"}, local
    assert {k.split("/")[1] for k in s3.keys("team/")} == {"data", "artifacts", "embeddings"}

    # verify really reads the bucket: an artifact deleted there is reported
    artifact = s3.keys("team/artifacts/")[0]
    s3.server.client().delete_object(Bucket=s3.bucket, Key=artifact)
    res = run_cli("verify", "--repo", root)
    assert res.code == 1 and artifact.rsplit("/", 1)[1][:12] in res.out, res.out


def test_init_with_an_unknown_bucket_fails_cleanly(s3, tmp_path):
    root = tmp_path / "repo"
    res = run_cli("init", root, "--storage-url", "s3://no-such-bucket-here/data", "--json")
    assert_failed_cleanly(res, "no-such-bucket-here", "does not exist")
    assert not (root / ".veml" / "config.toml").exists()
    assert_failed_cleanly(run_cli("data", "list", "--repo", root, "--json"), "no VeML repository")
