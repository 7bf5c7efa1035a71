"""No code runs from stored artifacts (issue 13, point 1).

An artifact is loaded from the very bytes whose sha256 was checked (read once, hashed, loaded from
memory), so a file swapped on disk between a check and a read never reaches a loader.  Scikit-learn
models are stored with skops and loaded only if every type in them is one VeML itself writes;
pickles (older repositories, ``--format pickle``) load only with ``--trust-pickle`` /
``VEML_TRUST_PICKLE=1``.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import veml
from conftest import assert_failed_cleanly, overwrite_artifact, write_table
from veml.adapters import get_adapter, sklearn_adapter
from veml.errors import VemlError

SRC = Path(__file__).resolve().parents[1] / "src" / "veml"
LR = {"adapter": "sklearn", "task": "tabular-classification", "architecture": "logistic_regression"}
RACE_SECONDS = 20.0  # the demand: a writer against repeated loads for 20 s


class _Payload:
    """Unpickling this creates ``marker``: proof that a planted pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "a"))


def _evil(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _lifecycle(repo, tmp_path: Path) -> None:
    """A table ``tab``, a logistic regression ``lr`` and its finished training ``lr-run``."""
    repo.data.import_("table", write_table(tmp_path / "t.csv", rows=60), "tab", label="y")
    repo.models.add("lr", LR)
    repo.training.train("tab", "lr", name="lr-run")


def _checkpoint(repo, name: str) -> str:
    return repo.training.describe(repo.training.get(name))["checkpoint"]


def _as_legacy_pickle(est, meta) -> bytes:
    """A checkpoint as VeML wrote it before skops: a pickle."""
    return pickle.dumps({"estimator": est, "meta": dict(meta)})


# ------------------------------------------------------------------------- the race of issue 13

_SWAPPER = r"""
import os, sys, time
path, evil, good, stop, deadline = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read(), sys.argv[4], float(sys.argv[5])
tmp = path + ".swap"
n = 0
while not os.path.exists(stop) and time.time() < deadline:
    for data in (evil, good):
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # an atomic swap: a reader sees either file whole
    n += 1
print(n)
"""


@pytest.mark.embedded_only("the race is against an artifact file on a local disk")
def test_a_pickle_swapped_in_while_loading_never_runs(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("VEML_TRUST_PICKLE", "1")  # the pickle path is live: only verification stands in the way
    _lifecycle(repo, tmp_path)
    inode = repo.inference.deploy("lr-run", "pickle", "none", name="lr-pkl")
    digest = inode.props["artifact"]
    path = repo.stores.artifacts._path(digest)
    good = path.read_bytes()
    marker, stop = tmp_path / "PWNED", tmp_path / "stop"
    (tmp_path / "evil.bin").write_bytes(_evil(marker))
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "swap.py").write_text(_SWAPPER)
    path.chmod(0o644)
    writer = subprocess.Popen([sys.executable, str(tmp_path / "swap.py"), str(path), str(tmp_path / "evil.bin"),
                               str(tmp_path / "good.bin"), str(stop), str(time.time() + RACE_SECONDS + 60)],
                              stdout=subprocess.PIPE, text=True)
    adapter = get_adapter("sklearn")
    loads = refused = 0
    others: list[str] = []
    try:
        end = time.monotonic() + RACE_SECONDS
        while time.monotonic() < end and not marker.exists():
            try:
                if loads % 50 == 0:  # now and then the whole path: checkpoint, data, deployment, predictions
                    repo.inference.run("lr-pkl", "tab")
                else:  # mostly the load itself, as the server's runner cache does it
                    adapter.checkpoint_meta(repo.inference.artifact(inode))
            except VemlError as exc:
                if "damaged (digest mismatch)" not in str(exc):
                    others.append(str(exc))
                refused += 1
            except Exception as exc:  # noqa: BLE001 - what a payload's return value does to a loader after it ran
                others.append(f"{type(exc).__name__}: {exc}")
            loads += 1
    finally:
        stop.touch()
        swaps = writer.communicate(timeout=60)[0].strip()
        path.write_bytes(good)
    assert not marker.exists(), f"a planted pickle ran ({loads} loads, {refused} refused, {swaps} swaps): {others[:3]}"
    assert others == [], others[:5]
    assert refused > 0, f"the writer never won a read: the race was not exercised ({loads} loads, {swaps} swaps)"
    assert repo.verify().ok


# ------------------------------------------------------------------------ a replaced file, no race

@pytest.mark.parametrize("trust", [False, True])
def test_a_replaced_artifact_is_refused_with_an_integrity_error(cli, repo, tmp_path, trust):
    _lifecycle(repo, tmp_path)
    root = repo.root
    res = cli("deploy", "lr-run", "--name", "lr-skops", "--json", "--repo", root)
    assert res.code == 0 and res.json["format"] == "skops", res.err
    deployed, ckpt = res.json["artifact"], _checkpoint(repo, "lr-run")
    marker = tmp_path / "PWNED"
    flag = ["--trust-pickle"] if trust else []  # trusted or not, a damaged artifact is never loaded
    overwrite_artifact(root, deployed, _evil(marker))
    line = assert_failed_cleanly(cli(*flag, "predict", "lr-skops", "--data", "tab", "--json", "--repo", root),
                                 deployed[:12], "'lr-skops'", "damaged (digest mismatch)")
    assert "pickle" not in line
    overwrite_artifact(root, ckpt, _evil(marker))
    assert_failed_cleanly(cli(*flag, "deploy", "lr-run", "--json", "--repo", root),
                          ckpt[:12], "'lr-run'", "damaged (digest mismatch)")
    assert not marker.exists()
    assert _deployments(root) == ["lr-skops"] and _predictions(root) == []


@pytest.mark.embedded_only("removes an artifact file from the local disk")
def test_a_missing_artifact_is_reported_as_missing(cli, repo, tmp_path):
    _lifecycle(repo, tmp_path)
    ckpt = _checkpoint(repo, "lr-run")
    repo.stores.artifacts._path(ckpt).unlink()
    assert_failed_cleanly(cli("deploy", "lr-run", "--json", "--repo", repo.root), ckpt[:12], "'lr-run'", "is missing")


# --------------------------------------------------------------------------- legacy pickles

def test_a_legacy_pickle_checkpoint_loads_only_when_trusted(cli, repo, tmp_path, monkeypatch):
    monkeypatch.delenv("VEML_TRUST_PICKLE", raising=False)
    with monkeypatch.context() as m:  # an older VeML wrote this repository's checkpoint
        m.setattr(sklearn_adapter, "_dump", _as_legacy_pickle)
        m.setenv("VEML_TRUST_PICKLE", "1")
        _lifecycle(repo, tmp_path)
    root = repo.root
    assert repo.stores.artifacts.get_verified(_checkpoint(repo, "lr-run"))[:1] == b"\x80"
    line = assert_failed_cleanly(cli("deploy", "lr-run", "--json", "--repo", root), "pickle", "--trust-pickle",
                                 "VEML_TRUST_PICKLE=1")
    assert "can run code" in line
    assert _deployments(root) == []
    # opted in: the legacy checkpoint deploys, as a skops artifact
    res = cli("--trust-pickle", "deploy", "lr-run", "--name", "lr-skops", "--json", "--repo", root)
    assert res.code == 0 and res.json["format"] == "skops" and res.json["agreement"] == 1.0, res.err
    # running it still reads the pickled checkpoint's metadata: refused again without the option
    assert_failed_cleanly(cli("predict", "lr-skops", "--data", "tab", "--json", "--repo", root), "--trust-pickle")
    monkeypatch.setenv("VEML_TRUST_PICKLE", "1")
    res = cli("predict", "lr-skops", "--data", "tab", "--json", "--repo", root)
    assert res.code == 0 and res.json["predictions"] == 60, res.err


def test_a_pickle_deployment_needs_the_trust_option(cli, repo, tmp_path, monkeypatch):
    monkeypatch.delenv("VEML_TRUST_PICKLE", raising=False)
    _lifecycle(repo, tmp_path)
    root = repo.root
    assert_failed_cleanly(cli("deploy", "lr-run", "--format", "pickle", "--json", "--repo", root),
                          "--format pickle", "--trust-pickle", "VEML_TRUST_PICKLE=1")
    assert_failed_cleanly(cli("deploy", "lr-run", "--target", "triton", "--out", tmp_path / "triton", "--json",
                              "--repo", root), "--target triton", "onnx or torchscript", "skops")
    assert _deployments(root) == []
    res = cli("deploy", "lr-run", "--format", "pickle", "--name", "lr-pkl", "--trust-pickle", "--json", "--repo", root)
    assert res.code == 0 and res.json["format"] == "pickle", res.err
    assert os.environ.get("VEML_TRUST_PICKLE") is None  # the flag trusts pickles for that one command only
    assert_failed_cleanly(cli("predict", "lr-pkl", "--data", "tab", "--json", "--repo", root),
                          "pickle", "--trust-pickle", "VEML_TRUST_PICKLE=1")
    assert _predictions(root) == []
    res = cli("--trust-pickle", "predict", "lr-pkl", "--data", "tab", "--json", "--repo", root)
    assert res.code == 0 and res.json["predictions"] == 60, res.err


def _deployments(root: Path) -> list[str]:
    with veml.open(root) as r:
        return [n.name for n in r.stores.graph.list(kinds=["InferenceVersion"])]


def _predictions(root: Path) -> list[str]:
    with veml.open(root) as r:
        return [n.name for n in r.stores.graph.list(kinds=["PredictionVersion"])]


# ---------------------------------------------------------------------------------- skops types

def _system_call():
    return os.system  # a function: skops stores it by name and imports it on load


def _svc():
    from sklearn.svm import SVC  # trusted by skops' own defaults, but not a type VeML writes

    return SVC()


@pytest.mark.parametrize("extra, kind, loader", [(_system_call, f"{os.name}.system", "FunctionNode"),
                                                 (_svc, "sklearn.svm._classes.SVC", "ObjectNode")])
def test_a_skops_checkpoint_with_an_untrusted_type_is_refused(cli, repo, tmp_path, monkeypatch, extra, kind, loader):
    real = sklearn_adapter._dump
    with monkeypatch.context() as m:  # written by a VeML that trusted one more type (or planted by hand)
        m.setattr(sklearn_adapter, "_dump", lambda est, meta: real(est, {**meta, "extra": extra()}))
        m.setattr(sklearn_adapter, "TRUSTED_TYPES", sklearn_adapter.TRUSTED_TYPES | {kind})
        m.setattr(sklearn_adapter, "_LOADERS", sklearn_adapter._LOADERS | {loader})
        _lifecycle(repo, tmp_path)
    root = repo.root
    for flag in ([], ["--trust-pickle"]):  # trusting pickles does not widen what a skops file may hold
        line = assert_failed_cleanly(cli(*flag, "deploy", "lr-run", "--json", "--repo", root),
                                     "skops model", "does not trust", kind)
        assert "pickle" not in line
    assert _deployments(root) == []


def test_veml_writes_only_types_it_trusts(repo, tmp_path):
    """Every architecture's checkpoint passes the trusted-type check (the list is not too short)."""
    repo.data.import_("table", write_table(tmp_path / "t.csv", rows=60), "tab", label="y")
    csv = tmp_path / "r.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i % 7}.0,{i % 5}.0,{(i % 7) * 2 - (i % 5)}.5\n" for i in range(40)))
    repo.data.import_("table", csv, "reg", label="y")
    for task, archs, data in (("tabular-classification", sklearn_adapter._ARCHS["tabular-classification"], "tab"),
                              ("tabular-regression", sklearn_adapter._ARCHS["tabular-regression"], "reg")):
        for arch in archs:
            name = f"{arch}-{task}"
            repo.models.add(name, {"adapter": "sklearn", "task": task, "architecture": arch,
                                   **({"parameters": {"n_estimators": 3}} if arch in ("random_forest", "gradient_boosting") else {})})
            repo.training.train(data, name, name=f"{name}-run")
            node = repo.inference.deploy(f"{name}-run", "skops", "none")
            assert node.props["agreement"] == 1.0


# ------------------------------------------------------------------------ nothing else unpickles

def test_no_other_code_path_unpickles():
    """pickle.load(s) only in the sklearn adapter (behind the trust option); every torch.load is
    ``weights_only=True``; numpy never allows pickles; no joblib/dill/cloudpickle/marshal loads."""
    hits = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(SRC).as_posix()
        for m in re.finditer(r"pickle\.loads?\(|joblib|cloudpickle|\bdill\b|marshal\.loads?\(|shelve\.open", text):
            if not (rel == "adapters/sklearn_adapter.py" and m.group(0) == "pickle.loads("):
                hits.append(f"{rel}: {m.group(0)}")
        for m in re.finditer(r"torch\.load\(([^\n]*)", text):
            if "weights_only=True" not in m.group(1):
                hits.append(f"{rel}: torch.load without weights_only=True")
        if "allow_pickle=True" in text:
            hits.append(f"{rel}: allow_pickle=True")
        for m in re.finditer(r"np\.load\(([^\n]*)", text):
            if "allow_pickle=False" not in m.group(1):
                hits.append(f"{rel}: np.load without allow_pickle=False")
    assert hits == [], hits
    guarded = (SRC / "adapters" / "sklearn_adapter.py").read_text()
    assert guarded.count("pickle.loads(") == 1 and "if not is_skops and not pickle_trusted()" in guarded
