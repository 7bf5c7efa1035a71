"""The model registry (issue 16): ``veml --version``, aliases, ``veml model register`` and ``veml export onnx``.

Real data throughout: scikit-learn's handwritten digits as small image folders (and as a table for
scikit-learn models); tiny models trained in seconds.  The repository and its runs are built once
per module and read back through the CLI, the way a user would.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import veml
from veml.errors import Conflict
from conftest import assert_failed_cleanly, ok, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

TINY = ["--set", "batch_size=8", "--set", "max_steps=3", "--set", "seed=1"]
NET = "adapter: torch\ntask: classification\narchitecture: resnet18\nparameters: {image_size: 32}\n"


def digits_folder(out: Path, classes=(0, 1, 2), per_class: int = 10, offset: int = 0) -> Path:
    """Real handwriting: scikit-learn's bundled 8x8 digits as 32x32 RGB PNGs, one sub-folder per class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        (out / f"digit{c}").mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(d.target == c)[offset:offset + per_class]:
            img = Image.fromarray((d.images[i] / 16 * 255).astype(np.uint8)).resize((32, 32))
            img.convert("RGB").save(out / f"digit{c}" / f"{i}.png")
    return out


def snapshot(root: Path) -> dict:
    """Everything a failed command must leave as it was: every version and every alias."""
    with veml.open(root) as repo:
        nodes, _ = repo.versions()
        return {"versions": [(n.id, n.kind, n.name) for n in nodes], "aliases": [a.to_json() for a in repo.aliases.list()]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """digits (3 classes x 10) to train on, digits-test (3 x 8) to predict on, model ``net``, runs ``run-a``/``run-b``."""
    base = tmp_path_factory.mktemp("registry")
    root = base / "repo"
    ok("init", root)
    ok("data", "import", "images", digits_folder(base / "train"), "--name", "digits", "--repo", root)
    ok("data", "import", "images", digits_folder(base / "test", per_class=8, offset=20), "--name", "digits-test",
       "--role", "test", "--repo", root)
    (base / "net.yaml").write_text(NET)
    ok("model", "add", "--name", "net", "--config", base / "net.yaml", "--repo", root)
    for name in ("run-a", "run-b"):
        ok("train", "--data", "digits", "--model", "net", *TINY, "--name", name, "--repo", root)
    return root


# ------------------------------------------------------------------------------ --version


def test_version_prints_the_package_version():
    from importlib.metadata import version

    res = run_cli("--version")
    assert res.code == 0 and res.err == ""
    assert res.out == f"veml {version('veml')}\n"


# -------------------------------------------------------------------------------- aliases

ALIAS_KEYS = {"alias", "version", "version_id", "kind", "set_at"}


def test_alias_set_move_list_history_delete(root):
    a = ok("alias", "set", "staging", "run-a", "--repo", root)
    assert set(a) == ALIAS_KEYS and (a["alias"], a["version"], a["kind"]) == ("staging", "run-a", "training")
    b = ok("alias", "set", "staging", "run-b", "--repo", root)
    assert b["version"] == "run-b" and b["set_at"] >= a["set_at"]
    assert ok("alias", "set", "staging", "run-b", "--repo", root) == b  # pointing it where it is changes nothing
    assert [x for x in ok("alias", "list", "--repo", root) if x["alias"] == "staging"] == [b]
    assert ok("train", "show", "staging", "--repo", root)["name"] == "run-b"
    gone = ok("alias", "delete", "staging", "--repo", root)
    assert gone == b
    history = ok("alias", "history", "staging", "--repo", root)
    assert [h["version"] for h in history] == ["run-a", "run-b", None]
    assert all(set(h) == ALIAS_KEYS for h in history) and history[-1]["version_id"] is None
    assert_failed_cleanly(run_cli("train", "show", "staging", "--json", "--repo", root), "unknown training version 'staging'")
    # a deleted alias may be set again; its history goes on
    ok("alias", "set", "staging", "run-a", "--repo", root)
    assert [h["version"] for h in ok("alias", "history", "staging", "--repo", root)] == ["run-a", "run-b", None, "run-a"]
    human = run_cli("alias", "list", "--repo", root)
    assert human.code == 0 and "staging -> training" in human.out


def test_an_alias_is_accepted_wherever_a_version_is(root):
    ok("alias", "set", "champion", "run-a", "--repo", root)
    inf = ok("deploy", "champion", "--name", "champ-onnx", "--repo", root)
    assert inf["training"] == ok("train", "show", "run-a", "--repo", root)["id"]
    ok("alias", "set", "champion-onnx", "champ-onnx", "--repo", root)
    pred = ok("predict", "champion-onnx", "--data", "digits-test", "--repo", root)
    assert pred["inference"] == inf["id"] and pred["predictions"] == 24
    lin = ok("lineage", "champion", "--repo", root)
    assert lin["root"] == inf["training"] and {"digits", "net", "run-a"} <= {n["name"] for n in lin["nodes"]}
    # an alias of an alias takes the version it names now, not the alias
    ok("alias", "set", "previous-champion", "champion", "--repo", root)
    ok("alias", "set", "champion", "run-b", "--repo", root)
    assert ok("train", "show", "previous-champion", "--repo", root)["name"] == "run-a"
    assert ok("train", "show", "champion", "--repo", root)["name"] == "run-b"
    with veml.open(root) as repo:
        assert repo.get("champion").name == "run-b"


@pytest.mark.parametrize("args, needle", [
    (("set", "run-a", "run-b"), "already taken by a version"),
    (("set", "RUN-A", "run-b"), "differs only by case or spaces from the existing version 'run-a'"),
    (("set", "12", "run-b"), "all digits"),
    (("set", " padded", "run-b"), "starts or ends with spaces"),
    (("set", "architecture:x", "run-b"), "reserved"),
    (("set", "fresh", "no-such-version"), "unknown version 'no-such-version'"),
    (("set", "fresh", "architecture:resnet18"), "shared model part"),
    (("delete", "no-such-alias"), "unknown alias 'no-such-alias'"),
    (("history", "no-such-alias"), "unknown alias 'no-such-alias'"),
])
def test_bad_alias_commands_fail_cleanly_and_change_nothing(root, args, needle):
    ok("alias", "set", "keeper", "run-a", "--repo", root)
    before = snapshot(root)
    assert_failed_cleanly(run_cli("alias", *args, "--json", "--repo", root), needle)
    assert snapshot(root) == before


def test_names_of_new_versions_and_tags_cannot_take_an_alias(root, tmp_path):
    ok("alias", "set", "blessed", "run-a", "--repo", root)
    before = snapshot(root)
    assert_failed_cleanly(run_cli("train", "--data", "digits", "--model", "net", *TINY, "--name", "Blessed", "--json",
                                  "--repo", root), "existing alias 'blessed'")
    with veml.open(root) as repo, pytest.raises(Conflict, match="alias"):
        repo.stores.graph.tag(repo.get("run-b").id, "blessed")
    assert snapshot(root) == before


def test_a_repository_upgraded_from_0_1_takes_aliases(tmp_path):
    import tarfile

    with tarfile.open(Path(__file__).parent / "fixtures" / "repo-v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    ok("--repo", tmp_path, "upgrade")
    ok("alias", "set", "latest", "mixed", "--repo", tmp_path)
    assert ok("data", "show", "latest", "--repo", tmp_path)["name"] == "mixed"
    assert ok("data", "show", "v1-release", "--repo", tmp_path)["name"] == "mixed"  # tags still resolve


# ------------------------------------------------------------------------ model register


def _weights(root: Path, training: str) -> dict:
    import io

    import torch

    with veml.open(root) as repo:
        blob = repo.training.checkpoint(repo.training.get(training))
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def files(root, tmp_path_factory) -> dict[str, Path]:
    """run-a's weights as a user outside VeML would have saved them: a state dict, TorchScript, ONNX
    (other input/output names than VeML's), and a scikit-learn model fitted on the digits as a table."""
    import torch

    from veml.adapters import torch_models as tm

    out = tmp_path_factory.mktemp("files")
    state = _weights(root, "run-a")
    torch.save(state, out / "digits.pt")
    net = tm.build_classifier("resnet18", 3, {})
    net.load_state_dict(state)
    net.eval()
    example = torch.randn(2, 3, 32, 32)
    torch.jit.save(torch.jit.trace(net, example), out / "digits.ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(net, (example,), str(out / "digits.onnx"), dynamo=False, input_names=["pixels"],
                          output_names=["scores"], dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})
    return {"torch": out / "digits.pt", "torchscript": out / "digits.ts", "onnx": out / "digits.onnx"}


@pytest.fixture(scope="module")
def reference(root) -> list:
    """What run-a, deployed by VeML itself, predicts on digits-test: registered copies must say the same."""
    ok("deploy", "run-a", "--name", "run-a-onnx", "--repo", root)
    ok("predict", "run-a-onnx", "--data", "digits-test", "--name", "run-a-pred", "--repo", root)
    return _predicted(root, "run-a-pred")


def _predicted(root: Path, prediction: str) -> list:
    with veml.open(root) as repo:
        return repo.inference.predictions(prediction)["category"].to_pylist()


@pytest.mark.parametrize("framework", ["torch", "torchscript"])
def test_register_torch_weights_then_deploy_and_predict(root, files, reference, framework):
    t = ok("model", "register", files[framework], "--name", f"reg-{framework}", "--data", "digits", "--training", "run-a",
           "--repo", root)
    assert (t["kind"], t["status"], t["metrics"]) == ("training", "finished", None)
    reg = t["registered"]
    assert reg["framework"] == framework and reg["file"] == files[framework].name
    assert reg["sha256"] == hashlib.sha256(files[framework].read_bytes()).hexdigest()
    assert t["class_names"] == ["digit0", "digit1", "digit2"]
    run_a = ok("train", "show", "run-a", "--repo", root)
    assert t["model"] == run_a["model"]  # the weights fit run-a's model version: no new one
    assert {(e["src"], e["kind"]) for e in ok("lineage", t["name"], "--hops", "1", "--repo", root)["edges"]} == {
        (run_a["data"], "DATA_TRAINING"), (run_a["model"], "MODEL_TRAINING"), (run_a["id"], "FINETUNE_FROM")}
    inf = ok("deploy", t["name"], "--name", f"reg-{framework}-onnx", "--repo", root)
    assert inf["max_abs_diff"] < 1e-3
    ok("predict", inf["name"], "--data", "digits-test", "--name", f"reg-{framework}-pred", "--repo", root)
    assert _predicted(root, f"reg-{framework}-pred") == reference
    if framework == "torch":  # drift takes a registered model's deployment as it takes a trained one's
        d = ok("drift", "--reference", "digits", "--test", "digits-test", "--inference", inf["name"], "--repo", root)
        assert d["inference"] == inf["id"] and isinstance(d["drift"], bool) and 0.0 <= d["p_value"] <= 1.0
        assert t["params"] == ok("train", "show", "run-a", "--repo", root)["params"] | {"batch_size": 32, "max_steps": 0,
                                                                                        "seed": 0}  # defaults: the recipe is unknown


def test_register_an_onnx_file_then_deploy_int8_under_an_alias(root, files, reference):
    t = ok("model", "register", files["onnx"], "--name", "reg-onnx", "--data", "digits", "--repo", root)
    assert t["registered"]["framework"] == "onnx" and t["init_from"] is None
    model = ok("model", "show", t["model"], "--repo", root)
    assert (model["name"], model["adapter"], model["architecture"], model["parameters"]) == (
        "reg-onnx-model", "graph", "onnx", {"image_size": 32})
    ok("deploy", "reg-onnx", "--name", "reg-onnx-fp32", "--repo", root)
    ok("predict", "reg-onnx-fp32", "--data", "digits-test", "--name", "reg-onnx-pred", "--repo", root)
    assert _predicted(root, "reg-onnx-pred") == reference
    int8 = ok("deploy", "reg-onnx", "--quantize", "int8", "--name", "reg-onnx-int8", "--repo", root)
    assert int8["quantize"] == "int8"
    ok("alias", "set", "champion-int8", "reg-onnx-int8", "--repo", root)
    pred = ok("predict", "champion-int8", "--data", "digits-test", "--repo", root)
    assert pred["inference"] == int8["id"] and pred["metrics"]["accuracy"] >= 0.5
    # a graph runs, it does not learn
    assert_failed_cleanly(run_cli("train", "--data", "digits", "--model", "reg-onnx-model", "--json", "--repo", root),
                          "cannot be trained")


def test_register_a_skops_scikit_learn_model(tmp_path):
    import skops.io as sio
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x, y = d.data[:300], d.target[:300]
    cols = [f"p{i}" for i in range(64)]
    (tmp_path / "digits.csv").write_text(",".join(cols + ["digit"]) + "\n" + "".join(
        ",".join(str(int(v)) for v in row) + f",{label}\n" for row, label in zip(x, y)))
    est = LogisticRegression(max_iter=300).fit(x[:200], y[:200])
    sio.dump(est, tmp_path / "digits.skops")
    root = tmp_path / "repo"
    ok("init", root)
    ok("data", "import", "table", tmp_path / "digits.csv", "--label", "digit", "--name", "digits-table", "--repo", root)
    t = ok("model", "register", tmp_path / "digits.skops", "--name", "logreg", "--data", "digits-table", "--repo", root)
    assert t["registered"]["framework"] == "sklearn" and t["class_names"] == [str(c) for c in range(10)]
    model = ok("model", "show", "logreg-model", "--repo", root)
    assert (model["adapter"], model["task"], model["architecture"]) == ("sklearn", "tabular-classification", "logistic_regression")
    assert model["parameters"] == {"C": 1.0, "max_iter": 300}
    ok("deploy", "logreg", "--name", "logreg-skops", "--repo", root)
    pred = ok("predict", "logreg-skops", "--data", "digits-table", "--name", "logreg-pred", "--repo", root)
    with veml.open(root) as repo:
        got = repo.inference.predictions("logreg-pred")["category"].to_pylist()
    assert got == [str(c) for c in est.predict(x)]  # exactly what the estimator says, row for row
    assert pred["metrics"]["accuracy"] > 0.9


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/veml-registry-pwned", "w"))


def _bad_file(kind: str, tmp_path: Path, files: dict[str, Path]) -> Path:
    import io
    import pickle
    import zipfile

    path = tmp_path / f"bad-{kind}"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"fc.weight": _Exploit()}))
    elif kind == "truncated-onnx":
        raw = files["onnx"].read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "zip-bomb":  # a member declaring 4 GB unpacked (its central directory entry says so)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl", b"x" * 100)
        raw = bytearray(buf.getvalue())
        at = raw.rindex(b"PK\x01\x02")
        raw[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")
        path.write_bytes(bytes(raw))
    elif kind == "directory":
        path.mkdir()
    elif kind == "wrong-architecture":
        import torch

        torch.save({"layer.weight": torch.zeros(3, 5), "layer.bias": torch.zeros(3)}, path)
    return path  # "missing": never written


@pytest.mark.parametrize("kind, needle", [
    ("garbage", "not a model file VeML can read"),
    ("pickle", "weights_only"),
    ("truncated-onnx", "not a model file VeML can read"),
    ("zip-bomb", "refused before unpacking"),
    ("missing", "file not found"),
    ("directory", "is a directory"),
    ("wrong-architecture", "do not fit any of VeML's classifiers"),
])
def test_bad_model_files_fail_cleanly_and_change_nothing(root, files, tmp_path, kind, needle):
    from conftest import artifact_digests

    bad = _bad_file(kind, tmp_path, files)
    before, digests = snapshot(root), artifact_digests(root)
    res = run_cli("model", "register", bad, "--name", f"bad-{kind}", "--data", "digits", "--json", "--repo", root)
    assert_failed_cleanly(res, needle)
    assert snapshot(root) == before and artifact_digests(root) == digests
    assert not Path("/tmp/veml-registry-pwned").exists()  # the pickle was never unpickled


@pytest.mark.parametrize("args, needle", [
    (("--framework", "onnx"), "not an ONNX model"),
    (("--data", "no-such-data"), "unknown data version"),
    (("--name", "run-a"), "already taken"),
])
def test_bad_register_arguments_fail_cleanly(root, files, args, needle):
    before = snapshot(root)
    name = [] if "--name" in args else ["--name", "reg-bad-args"]
    assert_failed_cleanly(run_cli("model", "register", files["torch"], *name, *args, "--json", "--repo", root), needle)
    assert snapshot(root) == before


def test_registered_without_data_needs_data_to_deploy(root, files):
    t = ok("model", "register", files["torch"], "--name", "reg-nodata", "--repo", root)
    assert t["class_names"] == ["0", "1", "2"] and t["data"] is None
    assert_failed_cleanly(run_cli("deploy", "reg-nodata", "--json", "--repo", root), "registered without --data")


# ---------------------------------------------------------------------------- export onnx


def test_export_onnx_writes_a_file_onnxruntime_runs_like_torch(root, tmp_path):
    import onnxruntime as ort
    import torch

    from veml.adapters import efficientnet_lite as effl
    from veml.adapters import torch_models as tm

    before = snapshot(root)
    e = ok("export", "onnx", "run-b", "--out", tmp_path / "run-b.onnx", "--repo", root)
    assert e["path"] == str((tmp_path / "run-b.onnx").resolve()) and e["format"] == "onnx"
    raw = (tmp_path / "run-b.onnx").read_bytes()
    assert e["size_bytes"] == len(raw) and e["sha256"] == hashlib.sha256(raw).hexdigest()
    assert e["input_names"] == ["images"] and e["output_names"] == ["logits"] and e["input_shape"] == [3, 32, 32]
    assert e["class_names"] == ["digit0", "digit1", "digit2"] and e["check_samples"] == 16
    assert snapshot(root) == before  # a plain step: no version recorded
    # real inputs, prepared as VeML's classifiers take them: the test digits, RGB in [0, 1], ImageNet-normalised
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(_test_pngs(root))[:8]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(effl.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(effl.IMAGENET_STD).view(1, 3, 1, 1)
    net = tm.build_classifier("resnet18", 3, {})
    net.load_state_dict(_weights(root, "run-b"))
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    got = ort.InferenceSession(raw, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert got.shape == (8, 3) and np.abs(got - expected).max() < 1e-3
    assert (got.argmax(1) == expected.argmax(1)).all()


def _test_pngs(root: Path) -> list[Path]:
    return list((root.parent / "test").glob("*/*.png"))


def test_export_onnx_refuses_what_it_cannot_write(root, tmp_path):
    assert_failed_cleanly(run_cli("export", "onnx", "run-a", "--out", tmp_path / "no" / "m.onnx", "--json", "--repo", root),
                          "no such directory")
    assert_failed_cleanly(run_cli("export", "onnx", "run-a", "--out", tmp_path, "--json", "--repo", root), "is a directory")
    assert_failed_cleanly(run_cli("export", "onnx", "no-such-run", "--out", tmp_path / "m.onnx", "--json", "--repo", root),
                          "unknown training version")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- README


def test_readme_registry_section_runs_as_written(tmp_path, monkeypatch):
    """Every line of the README's "Registering models and aliases" block, in order, as a user would type it
    (``veml`` lines in-process, ``python -c`` lines as Python, ``cd`` as a change of directory)."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Registering models and aliases"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in block.splitlines():
        for command in line.split(" && "):
            words = shlex.split(command, comments=True)
            if words[0] == "cd":
                monkeypatch.chdir(words[1])
            elif words[0] == "python":
                assert words[1] == "-c"
                exec(compile(words[2], "README", "exec"), {})
            else:
                assert words[0] == "veml", command
                res = run_cli(*words[1:])
                assert res.code == 0, (command, res.err)
                outputs.append(res.out)
    assert "champion -> training" in outputs[-2] and "champion-skops -> inference" in outputs[-2]
    assert len(outputs[-1].splitlines()) == 1
    with veml.open(tmp_path / "registry-demo") as repo:
        [pred] = repo.stores.graph.list(kinds=["PredictionVersion"])
    assert pred.props["metrics"]["accuracy"] > 0.95
