"""The model registry (issue 16): ``veml --version``, aliases, ``veml model register`` and ``veml export onnx``.

Real data throughout: scikit-learn's handwritten digits as small image folders (and as a table for
scikit-learn models); tiny models trained in seconds.  The repository and its runs are built once
per module and read back through the CLI, the way a user would.
"""

from __future__ import annotations

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
