"""The remaining hostile input classes of issue 13 (point 6), through the real CLI.

YAML alias bombs and oversized configs, names that differ only by case or spaces, tags with the
prefixes of shared model-part nodes, model and training parameters of the wrong type, a loss that
becomes NaN, a repository on a read-only file system, and a command that used to fail after
creating a node.  Each refusal is checked the way tests/test_bad_input.py checks one: exit 1, one
``error:`` line naming what is wrong, no traceback, and the repository unchanged (same versions and
node count, ``verify`` ok, nothing for ``gc`` to reclaim).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import veml
from conftest import PARSER_LEVEL, VEML_BIN, assert_failed_cleanly, images_dir, run_cli

MB = {"adapter": "torch", "task": "classification", "architecture": "mobilenet_v3_small",
      "parameters": {"image_size": 32, "label_column": "time_of_day"}}


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def template(tmp_path_factory, driving_small) -> Path:
    """data version ``day`` tagged ``golden``; model ``mb`` (mobilenet_v3_small, 32x32)."""
    base = tmp_path_factory.mktemp("input_classes")
    root = base / "repo"
    cfg = base / "mb.json"
    cfg.write_text(json.dumps(MB))
    for args in (("init", root),
                 ("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "day"),
                 ("data", "tag", "day", "golden"),
                 ("model", "add", "--name", "mb", "--config", cfg)):
        res = run_cli(*args, *(("--repo", root) if args[0] != "init" else ()))
        assert res.code == 0, (args, res.err)
    return root


@pytest.fixture
def repo(template, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(template, root)
    return root


def snapshot(cli, root: Path) -> tuple[list, int]:
    res = cli("data", "list", "--json", "--repo", root)
    assert res.code == 0, res.err
    with veml.open(root) as r:
        return res.json, r.versions()[1]


def assert_unchanged(cli, root: Path, before: tuple[list, int]) -> None:
    assert snapshot(cli, root) == before  # the same data versions, and no node of any kind added
    v = cli("verify", "--json", "--repo", root)
    assert v.code == 0 and v.json["ok"] is True, v.out + v.err
    gc = cli("gc", "--grace", "0", "--json", "--repo", root)
    assert gc.code == 0, gc.err
    assert gc.json["samples_reclaimed"] == 0 and gc.json["annotations_reclaimed"] == 0, gc.json


def model_add(cli, root: Path, config: Path, name: str = "m2"):
    return cli("model", "add", "--name", name, "--config", config, "--json", "--repo", root)


# ----------------------------------------------------------------------- configs: bombs and size


def _bomb(levels: int, width: int = 10) -> str:
    """A "billion laughs" config: its description a list of anchors, each a list of ``width`` aliases
    of the one before, so the last one stands for ``width ** levels`` strings."""
    lines = [f"{k}: {json.dumps(v)}" for k, v in MB.items()] + ["description:", "  - &l0 [lol]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("levels", [6, 9], ids=["million", "billion"])
def test_yaml_alias_bomb(cli, repo, tmp_path, levels):
    """A config that expands to 10**levels values is refused before anything serialises it."""
    before = snapshot(cli, repo)
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_bomb(levels))
    assert len(cfg.read_bytes()) < 1000
    assert_failed_cleanly(model_add(cli, repo, cfg), str(cfg), "expands to more than 10000 values")
    assert_unchanged(cli, repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_recursive_yaml_alias(cli, repo, tmp_path):
    before = snapshot(cli, repo)
    cfg = tmp_path / "loop.yaml"
    cfg.write_text("adapter: torch\ntask: classification\narchitecture: mobilenet_v3_small\n"
                   "parameters: {image_size: 32}\ndescription: &d [*d]\n")
    assert_failed_cleanly(model_add(cli, repo, cfg), str(cfg), "refers to itself")
    assert_unchanged(cli, repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("suffix", ["yaml", "json", "toml"])
def test_oversized_config(cli, repo, tmp_path, suffix):
    before = snapshot(cli, repo)
    doc = {**MB, "description": "x" * (1 << 20)}
    cfg = tmp_path / f"big.{suffix}"
    if suffix == "toml":
        import tomli_w

        cfg.write_text(tomli_w.dumps(doc))
    else:
        cfg.write_text(json.dumps(doc))  # JSON is YAML too
    assert_failed_cleanly(model_add(cli, repo, cfg), str(cfg), "larger than 1048576 bytes")
    assert_unchanged(cli, repo, before)


# ------------------------------------------------------------------------------- names and tags


@pytest.mark.parametrize("name", ["Day", "DAY", "Golden"])
@pytest.mark.parametrize("what", ["data", "model", "tag"])
def test_name_differing_only_by_case(cli, repo, tmp_path, driving_small, what, name):
    before = snapshot(cli, repo)
    existing = "golden" if name == "Golden" else "day"
    if what == "data":
        res = cli("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", name,
                  "--json", "--repo", repo)
    elif what == "model":
        cfg = tmp_path / "m.json"
        cfg.write_text(json.dumps(MB))
        res = model_add(cli, repo, cfg, name)
    else:
        res = cli("data", "tag", "day", name, "--json", "--repo", repo)
    line = assert_failed_cleanly(res, repr(name), repr(existing))
    assert "differs only by case" in line
    assert_unchanged(cli, repo, before)


@pytest.mark.parametrize("name", [" day", "day ", "new\t", "da\ny"])
def test_name_with_surrounding_spaces_or_control_characters(cli, repo, tmp_path, name):
    before = snapshot(cli, repo)
    cfg = tmp_path / "m.json"
    cfg.write_text(json.dumps(MB))
    assert_failed_cleanly(model_add(cli, repo, cfg, name), "name")
    assert_failed_cleanly(cli("data", "tag", "day", name, "--json", "--repo", repo), "tag")
    assert_unchanged(cli, repo, before)


def test_names_differing_inside_by_spaces_clash(cli, repo):
    assert cli("data", "tag", "day", "my  release", "--repo", repo).code == 0
    line = assert_failed_cleanly(cli("data", "tag", "day", "My Release", "--json", "--repo", repo))
    assert "'my  release'" in line


@pytest.mark.parametrize("tag", ["architecture:resnet18", "Backbone:resnet18", "neck:fpn", "head:x"])
def test_tag_with_reserved_prefix_is_refused_and_blocks_nothing(cli, repo, tmp_path, tag):
    """A tag ``architecture:resnet18`` once made every later resnet18 model fail: tags and the shared
    Architecture/Backbone nodes share one namespace.  Those prefixes are now refused."""
    before = snapshot(cli, repo)
    assert_failed_cleanly(cli("data", "tag", "day", tag, "--json", "--repo", repo), repr(tag), "reserved")
    assert_unchanged(cli, repo, before)
    cfg = tmp_path / "rn.json"
    cfg.write_text(json.dumps({**MB, "architecture": "resnet18"}))
    # a name of its own per case: on VEML_TEST_STORES=postgres the copied repositories share one schema
    res = model_add(cli, repo, cfg, "rn-" + tag.split(":")[0].lower())
    assert res.code == 0, res.err
    assert res.json["architecture"] == "resnet18"


def test_version_name_with_reserved_prefix(cli, repo, driving_small):
    before = snapshot(cli, repo)
    res = cli("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name",
              "architecture:resnet18", "--json", "--repo", repo)
    assert_failed_cleanly(res, "architecture:", "reserved")
    assert_unchanged(cli, repo, before)


# ---------------------------------------------------------------------------- parameter types


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("key,value,expected", [
    ("image_size", "big", "an integer"),
    ("image_size", 1.5, "an integer"),
    ("image_size", [32], "an integer"),
    ("image_size", True, "an integer"),
    ("pretrained", "yes", "a boolean"),
    ("label_column", 3, "a string or null"),
])
def test_model_parameter_of_wrong_type(cli, repo, tmp_path, key, value, expected):
    before = snapshot(cli, repo)
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({**MB, "parameters": {**MB["parameters"], key: value}}))
    line = assert_failed_cleanly(model_add(cli, repo, cfg), f"parameter '{key}'", expected)
    assert repr(value) in line
    assert_unchanged(cli, repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("item,expected", [
    ("lr=fast", "a finite number"), ("lr=inf", "a finite number"), ("lr=nan", "a finite number"),
    ("epochs=1.5", "an integer"), ("epochs=abc", "an integer"), ("precise_bn=maybe", "a boolean"),
])
def test_training_parameter_of_wrong_type(cli, repo, item, expected):
    before = snapshot(cli, repo)
    res = cli("train", "--data", "day", "--model", "mb", "--set", item, "--json", "--repo", repo)
    assert_failed_cleanly(res, f"training parameter '{item.split('=')[0]}'", expected, repr(item.split("=")[1]))
    assert_unchanged(cli, repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("sets", [{"epochs": 1.5}, {"epochs": [1]}, {"lr": "fast"}, {"max_steps": True}])
def test_training_parameter_of_wrong_type_from_python(repo, sets):
    from veml.errors import InvalidInput

    with veml.open(repo) as r:
        n = r.versions()[1]
        with pytest.raises(InvalidInput, match=f"training parameter '{next(iter(sets))}'"):
            r.training.train("day", "mb", sets=sets)
        assert r.versions()[1] == n


# ------------------------------------------------------------------------------------ NaN loss


def test_nan_loss_fails_the_run_with_its_reason(cli, repo):
    res = cli("train", "--data", "day", "--model", "mb", "--set", "lr=1e30", "--set", "epochs=1", "--set", "batch_size=8",
              "--set", "optimizer=sgd", "--name", "boom", "--json", "--repo", repo)
    line = assert_failed_cleanly(res, "'boom'", "loss became")
    assert "IntegrityError" not in line
    show = cli("train", "show", "boom", "--json", "--repo", repo)
    assert show.code == 0, show.err
    assert show.json["status"] == "failed"
    assert "loss became" in show.json["error"] and "at epoch 0 step" in show.json["error"], show.json
    v = cli("verify", "--json", "--repo", repo)
    assert v.code == 0 and v.json["ok"] is True, v.out + v.err


# -------------------------------------------------------------------------- read-only repository


def _read_only_run(root: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Each command run by the real ``veml`` with ``root`` bind-mounted read-only over itself, in a
    private mount namespace (``unshare -rm``: no privileges needed where user namespaces are on)."""
    script = f"mount --bind -o ro {root} {root} || exit 97\n" + "\n".join(
        " ".join(f"'{a}'" for a in [VEML_BIN, "--repo", str(root), *cmd]) + " > out$i.json 2> err$i.txt; echo $? > rc$i; i=$((i+1))"
        for cmd in commands)
    work = root.parent / "ro-out"
    work.mkdir()
    try:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", "i=0\n" + script], cwd=work, capture_output=True, text=True,
                              timeout=300)
    except FileNotFoundError:
        pytest.skip("no unshare(1) here: cannot make a read-only mount")
    if done.returncode == 97 or (done.returncode != 0 and not (work / "rc0").exists()):
        pytest.skip(f"cannot make a read-only bind mount here (unshare -rm / mount -o ro): {done.stderr.strip()[:200]}")
    return [subprocess.CompletedProcess(cmd, int((work / f"rc{i}").read_text()), (work / f"out{i}.json").read_text(),
                                        (work / f"err{i}.txt").read_text()) for i, cmd in enumerate(commands)]


@pytest.mark.embedded_only("the repository's files themselves are mounted read-only")
def test_read_only_repository_opens_for_reading(cli, repo):
    expected = cli("data", "list", "--json", "--repo", repo).json
    runs = _read_only_run(repo, ["data", "list", "--json"], ["data", "show", "day", "--json"],
                          ["lineage", "day", "--json"], ["verify", "--json"], ["data", "tag", "day", "later", "--json"])
    for run in runs[:4]:
        assert run.returncode == 0, (run.args, run.stderr)
        assert run.stderr == "", run.stderr
    assert json.loads(runs[0].stdout) == expected
    assert json.loads(runs[1].stdout)["name"] == "day"
    assert json.loads(runs[3].stdout)["ok"] is True
    write = runs[4]
    assert write.returncode == 1 and "Traceback" not in write.stderr, write.stderr
    assert write.stderr.count("\n") == 1 and write.stderr.startswith("error: ") and "read-only" in write.stderr
    assert write.stdout == ""
    assert cli("data", "tag", "day", "later", "--repo", repo).code == 0  # writable again outside the namespace


# -------------------------------------------------------------------------------- orphan nodes


@pytest.mark.parametrize("name", ["12345", "x" * 300, "architecture:mine"])
def test_failed_model_add_leaves_no_shared_node(cli, repo, tmp_path, name):
    """The shared Architecture/Backbone nodes of a new model were created before the model's name
    was checked; a refused name left them behind, each an orphan with no model."""
    before = snapshot(cli, repo)
    cfg = tmp_path / "rn.json"
    cfg.write_text(json.dumps({**MB, "architecture": "resnet18"}))  # no model uses resnet18 yet
    assert_failed_cleanly(model_add(cli, repo, cfg, name), "name")
    assert_unchanged(cli, repo, before)
