"""The CLI contract of DESIGN.md section 8, for the commands that exist now.

A module-scoped scenario builds one repository through the CLI with every data command (each
run with ``--json``) and keeps each command's exit code, stdout and stderr; the tests then check
those outputs against the contract, and run read-only commands against the same repository.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import VEML_BIN, Result, images_dir
from veml.cli.main import main

VERSION_KEYS = {"id", "kind", "name", "parents", "created_at"}
DATA_KEYS = VERSION_KEYS | {"samples", "annotations"}


def _run(*args) -> Result:
    """The CLI in-process, for module-scoped fixtures (the ``cli`` fixture is per test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def _coco_counts(ann: Path) -> tuple[dict, Counter]:
    doc = json.loads(ann.read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    return doc, Counter(cats[a["category_id"]] for a in doc["annotations"])


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, driving_small, driving_night, traffic_npz):
    """Every data command run once with --json against one repository; results by step name."""
    base = tmp_path_factory.mktemp("contract")
    root = base / "repo"
    day_doc, _ = _coco_counts(driving_small)
    relabel = base / "relabel.json"
    cars = [a for a in day_doc["annotations"] if a["category_id"] == 1][:7]
    relabel.write_text(json.dumps({**day_doc, "annotations": cars}))
    table = base / "t.csv"
    table.write_text("a,b,kind,y\n1,2.5,x,yes\n2,,z,no\n3,4.5,x,yes\n4,1.0,z,no\n")
    folder = base / "pets"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 6), (i * 90, 40, 0)).save(folder / cls / f"{i}.png")

    steps: list[tuple[str, list]] = [
        ("init", ["init", root]),
        ("import", ["data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "day"]),
        ("import_night", ["data", "import", "coco", driving_night, "--images", images_dir(driving_night),
                          "--name", "night"]),
        ("import_table", ["data", "import", "table", table, "--label", "y", "--name", "tab"]),
        ("import_series", ["data", "import", "timeseries", traffic_npz, "--name", "traffic", "--role", "test"]),
        ("import_images", ["data", "import", "images", folder, "--name", "pets", "--role", "unlabeled"]),
        ("add", ["data", "add", "day", "coco", driving_night, "--images", images_dir(driving_night),
                 "--name", "day+night"]),
        ("filter", ["data", "filter", "day", "--where", "category = 'pedestrian'", "--name", "peds"]),
        ("filter_matching", ["data", "filter", "day", "--where", "category = 'pedestrian'", "--name", "peds-only",
                             "--keep-annotations", "matching"]),
        ("filter_chain", ["data", "filter", "peds", "--where", "category = 'car'", "--name", "peds-cars"]),
        ("merge", ["data", "merge", "day", "night", "--name", "both"]),
        ("update", ["data", "update", "day", "--coco", relabel, "--name", "day-relabelled"]),
        ("prepare", ["data", "prepare", "day", "--name", "day-32", "--resize", "32x32"]),
        ("tag", ["data", "tag", "day", "baseline"]),
        ("diff", ["data", "diff", "day", "both"]),
        ("list", ["data", "list"]),
        ("show", ["data", "show", "day"]),
        ("show_matching", ["data", "show", "peds-only"]),
        ("show_update", ["data", "show", "day-relabelled"]),
        ("export", ["data", "export", "peds", "--format", "coco", "--out", base / "export"]),
        ("export_images", ["data", "export", "pets", "--format", "images", "--out", base / "export-pets"]),
        ("lineage", ["lineage", "both"]),
        ("lineage_json", ["lineage", "both", "--format", "json"]),
        ("lineage_dot_json", ["lineage", "both", "--format", "dot"]),
        ("lineage_cypher_json", ["lineage", "both", "--format", "cypher"]),
        ("verify", ["verify"]),
        ("gc", ["gc", "--grace", "0"]),
    ]
    results: dict[str, Result] = {}
    for name, args in steps:
        extra = [] if name == "init" else ["--repo", root]
        results[name] = _run(*args, *extra, "--json")
        assert results[name].code == 0, (name, results[name].err)
    return {"root": root.resolve(), "base": base, "results": results, "relabel": relabel, "table": table}


def _ids(scenario) -> dict[str, int]:
    return {v["name"]: v["id"] for v in scenario["results"]["list"].json}


# ------------------------------------------------------------------------------ --json output

JSON_STEPS = ["init", "import", "import_night", "import_table", "import_series", "import_images", "add", "filter",
              "filter_matching", "filter_chain", "merge", "update", "prepare", "tag", "diff", "list", "show",
              "show_matching", "show_update", "export", "export_images", "lineage", "lineage_json",
              "lineage_dot_json", "lineage_cypher_json", "verify", "gc"]


@pytest.mark.parametrize("step", JSON_STEPS)
def test_json_is_one_document_and_nothing_else(scenario, step):
    r = scenario["results"][step]
    assert r.code == 0
    assert r.err == ""  # no progress bar, no warnings: not a TTY and --json
    assert r.out.strip()
    json.loads(r.out)  # the whole of stdout is one document, nothing printed around it


VERSION_STEPS = ["import", "import_night", "import_table", "import_series", "import_images", "add", "filter",
                 "filter_matching", "filter_chain", "merge", "update", "prepare", "tag", "show"]


@pytest.mark.parametrize("step", VERSION_STEPS)
def test_data_version_objects_have_the_contract_keys(scenario, step):
    v = scenario["results"][step].json
    assert isinstance(v, dict)
    assert DATA_KEYS <= set(v), DATA_KEYS - set(v)
    assert v["kind"] == "data"
    assert isinstance(v["id"], int) and isinstance(v["name"], str)
    assert isinstance(v["parents"], list) and all(isinstance(p, int) for p in v["parents"])
    assert isinstance(v["samples"], int) and isinstance(v["annotations"], int)
    created = dt.datetime.fromisoformat(v["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None


def test_version_objects_count_and_parents(scenario, driving_small, driving_night):
    res = scenario["results"]
    day_doc, day_counts = _coco_counts(driving_small)
    night_doc, _ = _coco_counts(driving_night)
    day, night = res["import"].json, res["import_night"].json
    assert (day["name"], day["parents"]) == ("day", [])
    assert day["samples"] == len(day_doc["images"]) and day["annotations"] == len(day_doc["annotations"])
    assert night["samples"] == len(night_doc["images"])
    assert res["add"].json["parents"] == [day["id"]]
    assert res["add"].json["samples"] == day["samples"] + night["samples"]
    assert res["filter"].json["parents"] == [day["id"]]
    assert res["filter_chain"].json["parents"] == [res["filter"].json["id"]]
    assert sorted(res["merge"].json["parents"]) == sorted([day["id"], night["id"]])
    assert res["merge"].json["samples"] == day["samples"] + night["samples"]
    assert res["update"].json["parents"] == [day["id"]]
    assert (res["update"].json["samples"], res["update"].json["annotations"]) == (day["samples"], 7)
    assert res["prepare"].json["parents"] == [day["id"]]
    assert res["filter_matching"].json["annotations"] == day_counts["pedestrian"]
    assert res["import_table"].json["samples"] == 4
    assert res["import_series"].json["role"] == "test"
    assert (res["import_images"].json["samples"], res["import_images"].json["role"]) == (4, "unlabeled")
    assert "baseline" in res["tag"].json["tags"] and res["tag"].json["id"] == day["id"]


def test_init_json_is_path(scenario):
    assert scenario["results"]["init"].json == {"path": str(scenario["root"])}


def test_init_defaults_to_current_directory(cli, tmp_path):
    here = tmp_path / "fresh"
    here.mkdir()
    r = cli("init", "--json", cwd=here)
    assert r.code == 0, r.err
    assert r.json == {"path": str(here.resolve())}
    assert (here / ".veml" / "config.toml").is_file()


def test_diff_json_has_exactly_added_removed_common(scenario, driving_night):
    night_doc, _ = _coco_counts(driving_night)
    d = scenario["results"]["diff"].json
    assert set(d) == {"added", "removed", "common"}
    day_samples = scenario["results"]["import"].json["samples"]
    assert d == {"added": len(night_doc["images"]), "removed": 0, "common": day_samples}


def test_show_categories_count_annotations(scenario, driving_small):
    _, counts = _coco_counts(driving_small)
    res = scenario["results"]
    assert res["show"].json["categories"] == dict(counts)
    assert res["show_matching"].json["categories"] == {"pedestrian": counts["pedestrian"]}
    _, relabel_counts = _coco_counts(scenario["relabel"])
    assert res["show_update"].json["categories"] == dict(relabel_counts) == {"car": 7}


def test_list_json_is_an_array_of_version_objects(scenario):
    listed = scenario["results"]["list"].json
    assert isinstance(listed, list)
    names = [v["name"] for v in listed]
    assert names == ["day", "night", "tab", "traffic", "pets", "day+night", "peds", "peds-only", "peds-cars", "both",
                     "day-relabelled", "day-32"]
    for v in listed:
        assert DATA_KEYS <= set(v)
    created = {scenario["results"][s].json["id"] for s in VERSION_STEPS if s not in ("tag", "show")}
    assert {v["id"] for v in listed} == created


def test_list_role_filter(cli, scenario):
    r = cli("data", "list", "--role", "test", "--json", "--repo", scenario["root"])
    assert r.code == 0 and [v["name"] for v in r.json] == ["traffic"]


def test_export_json_is_path(scenario):
    out = scenario["results"]["export"].json
    assert set(out) == {"path"}
    path = Path(out["path"])
    assert path.resolve() == (scenario["base"] / "export").resolve()
    doc = json.loads((path / "annotations.json").read_text())
    assert len(doc["images"]) == scenario["results"]["filter"].json["samples"]
    assert len(doc["annotations"]) == scenario["results"]["filter"].json["annotations"]
    pets = scenario["results"]["export_images"].json
    assert set(pets) == {"path"}
    assert sorted(p.parent.name for p in Path(pets["path"]).rglob("*.png")) == ["cat", "cat", "dog", "dog"]


# ------------------------------------------------------------------------------------ lineage


def test_lineage_json_has_nodes_and_edges(scenario):
    ids = _ids(scenario)
    for step in ("lineage", "lineage_json"):
        lin = scenario["results"][step].json
        assert {"nodes", "edges"} <= set(lin)
        assert {n["name"] for n in lin["nodes"]} == {"day", "night", "both"}
        for n in lin["nodes"]:
            assert VERSION_KEYS <= set(n)
        assert sorted((e["src"], e["dst"], e["kind"]) for e in lin["edges"]) == sorted(
            [(ids["day"], ids["both"], "MERGE_DATA"), (ids["night"], ids["both"], "MERGE_DATA")]
        )


def test_lineage_dot_is_graphviz(cli, scenario):
    ids = _ids(scenario)
    r = cli("lineage", "both", "--format", "dot", "--repo", scenario["root"])
    assert r.code == 0 and r.err == ""
    text = r.out.strip()
    assert text.startswith("digraph")
    assert text.endswith("}") and text.count("{") == text.count("}")
    for name in ("day", "night", "both"):
        assert re.search(rf'n{ids[name]} \[label="[^"]*\\n{re.escape(name)}"', text), name
    edges = set(re.findall(r"n(\d+) -> n(\d+)", text))
    assert edges == {(str(ids["day"]), str(ids["both"])), (str(ids["night"]), str(ids["both"]))}
    # with --json the same text arrives inside one document
    doc = scenario["results"]["lineage_dot_json"].json
    assert doc["text"].strip() == text


def test_lineage_cypher_is_merge_statements(cli, scenario):
    r = cli("lineage", "both", "--format", "cypher", "--repo", scenario["root"])
    assert r.code == 0 and r.err == ""
    lines = [ln for ln in r.out.splitlines() if ln.strip()]
    merges = [ln for ln in lines if ln.startswith("MERGE (n:VemlVersion ")]  # the versions; edges merge their ends
    assert len(merges) == 3
    for name in ("day", "night", "both"):
        assert any(f"`name`: '{name}'" in ln for ln in merges), name
    assert sum("MERGE (a)-[r:MERGE_DATA]->(b)" in ln for ln in lines) == 2
    for ln in lines:
        assert ln.startswith(("MERGE", "MATCH")) and ln.endswith(";"), ln
    assert scenario["results"]["lineage_cypher_json"].json["text"] == r.out


@pytest.mark.parametrize(
    "args,expected",
    [
        (["peds-cars"], {"peds-cars", "peds", "day"}),
        (["peds-cars", "--up"], {"peds-cars", "peds", "day"}),
        (["peds-cars", "--up", "--hops", "1"], {"peds-cars", "peds"}),
        (["day", "--down", "--hops", "0"], {"day"}),
        (["peds", "--down"], {"peds", "peds-cars"}),
        (["day", "--down"], {"day", "day+night", "peds", "peds-only", "peds-cars", "both", "day-relabelled", "day-32"}),
        (["day", "--down", "--hops", "1"],
         {"day", "day+night", "peds", "peds-only", "both", "day-relabelled", "day-32"}),
        (["peds", "--both"], {"day", "peds", "peds-cars"}),
    ],
)
def test_lineage_direction_and_hops(cli, scenario, args, expected):
    r = cli("lineage", *args, "--json", "--repo", scenario["root"])
    assert r.code == 0, r.err
    assert {n["name"] for n in r.json["nodes"]} == expected
    ids = {n["id"] for n in r.json["nodes"]}
    assert all(e["src"] in ids and e["dst"] in ids for e in r.json["edges"])


# -------------------------------------------------------------------- finding the repository


def _names(r: Result) -> list[str]:
    assert r.code == 0, r.err
    return [v["name"] for v in r.json]


@pytest.mark.parametrize(
    "argv",
    [
        ["--repo", "{root}", "data", "list", "--json"],
        ["data", "--repo", "{root}", "list", "--json"],
        ["data", "list", "--repo", "{root}", "--json"],
        ["--json", "data", "list", "--repo", "{root}"],
        ["--repo", "{root}", "--json", "data", "list"],
    ],
    ids=["before", "between", "after", "json-before", "both-before"],
)
def test_repo_option_anywhere(cli, scenario, tmp_path, argv):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli(*[a.format(root=scenario["root"]) for a in argv], cwd=elsewhere)
    assert _names(r) == [v["name"] for v in scenario["results"]["list"].json]


def test_repo_option_relative_path(cli, scenario):
    r = cli("data", "list", "--json", "--repo", scenario["root"].name, cwd=scenario["root"].parent)
    assert _names(r) == [v["name"] for v in scenario["results"]["list"].json]


def test_veml_repo_environment_variable(cli, scenario, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("VEML_REPO", str(scenario["root"]))
    assert _names(cli("data", "list", "--json", cwd=elsewhere))[0] == "day"
    assert cli("data", "show", "day", "--json", cwd=elsewhere).json["name"] == "day"


def test_repo_option_wins_over_environment(cli, scenario, tmp_path, monkeypatch):
    other = tmp_path / "other"
    assert cli("init", other).code == 0
    monkeypatch.setenv("VEML_REPO", str(other))
    assert _names(cli("data", "list", "--json", cwd=tmp_path)) == []
    assert _names(cli("data", "list", "--json", "--repo", scenario["root"], cwd=tmp_path))[0] == "day"


def test_nearest_repository_upward(cli, tmp_path, driving_small):
    outer = tmp_path / "outer"
    assert cli("init", outer).code == 0
    r = cli("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "outer-v",
            "--json", "--repo", outer)
    assert r.code == 0, r.err
    deep = outer / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert _names(cli("data", "list", "--json", cwd=deep)) == ["outer-v"]
    # a repository nested inside another one is the nearer one
    inner = outer / "a" / "inner"
    assert cli("init", inner).code == 0
    (inner / "sub").mkdir()
    assert _names(cli("data", "list", "--json", cwd=inner / "sub")) == []
    assert _names(cli("data", "list", "--json", cwd=outer / "a" / "b")) == ["outer-v"]


# --------------------------------------------------------------------- referring to versions


@pytest.mark.parametrize("how", ["id", "name", "tag"])
def test_versions_by_id_name_and_tag(cli, scenario, how):
    ids = _ids(scenario)
    ref = {"id": str(ids["day"]), "name": "day", "tag": "baseline"}[how]
    root = scenario["root"]
    show = cli("data", "show", ref, "--json", "--repo", root)
    assert show.code == 0, show.err
    assert (show.json["id"], show.json["name"]) == (ids["day"], "day")
    diff = cli("data", "diff", ref, "both", "--json", "--repo", root)
    assert diff.json == scenario["results"]["diff"].json
    lin = cli("lineage", ref, "--down", "--hops", "1", "--json", "--repo", root)
    assert lin.code == 0 and lin.json["root"] == ids["day"]
    assert cli("data", "diff", "night", ref, "--json", "--repo", root).json["common"] == 0


def test_tag_delete(cli, scenario, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(scenario["root"], root)
    r = cli("data", "tag", "--delete", "baseline", "--json", "--repo", root)
    assert r.code == 0, r.err
    assert r.json == {"tag": "baseline", "deleted": True}
    gone = cli("data", "show", "baseline", "--json", "--repo", root)
    assert gone.code == 1 and gone.out == "" and "baseline" in gone.err


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["frobnicate"], "invalid choice"),
        (["data", "frobnicate"], "invalid choice"),
        ([], "required"),
        (["data", "import", "coco", "ANN", "--images", "IMG"], "--name"),
        (["data", "import", "coco", "ANN", "--images", "IMG", "--name", "x", "--role", "validation"], "--role"),
        (["data", "import", "parquetish", "ANN", "--name", "x"], "invalid choice"),
        (["data", "filter", "day", "--name", "x"], "--where"),
        (["data", "merge", "--name", "x"], "versions"),
        (["data", "export", "day", "--format", "tiff", "--out", "OUT"], "--format"),
        (["lineage", "day", "--up", "--down"], "not allowed with"),
        (["lineage", "day", "--hops", "many"], "--hops"),
    ],
    ids=["unknown-command", "unknown-data-command", "no-command", "missing-name", "bad-role", "bad-format",
         "missing-where", "merge-nothing", "bad-export-format", "up-and-down", "bad-hops"],
)
def test_bad_usage_exits_2_with_usage(cli, scenario, tmp_path, driving_small, argv, needle):
    subs = {"ANN": str(driving_small), "IMG": str(images_dir(driving_small)), "OUT": str(tmp_path / "out")}
    args = [subs.get(a, a) for a in argv]
    if args:
        args += ["--repo", str(scenario["root"]), "--json"]
    r = cli(*args)
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    assert r.err.startswith("usage: veml"), r.err
    assert needle in r.err.splitlines()[-1], r.err
    assert "Traceback" not in r.err
    assert _names(cli("data", "list", "--json", "--repo", scenario["root"])) == [
        v["name"] for v in scenario["results"]["list"].json
    ]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- verify and gc


def test_verify_healthy_repository(cli, scenario):
    v = scenario["results"]["verify"].json
    listed = scenario["results"]["list"].json
    assert v["ok"] is True and v["problems"] == []
    assert v["versions"] == len(listed)
    res = scenario["results"]
    distinct_samples = sum(res[s].json["samples"]
                           for s in ("import", "import_night", "import_table", "import_series", "import_images"))
    distinct_samples += res["import_night"].json["samples"]  # `add` stored the night images again, as new rows
    assert v["samples"] == distinct_samples
    assert v["annotations"] > 0
    human = cli("verify", "--repo", scenario["root"])
    assert human.code == 0 and human.err == ""
    assert f"checked {len(listed)} versions, {distinct_samples} samples" in human.out


def test_gc_on_clean_repository_reclaims_nothing(cli, scenario):
    g = scenario["results"]["gc"].json
    assert g["samples_reclaimed"] == 0 and g["annotations_reclaimed"] == 0
    assert g["bytes_after"] <= g["bytes_before"]  # only superseded table versions' files may go
    again = cli("gc", "--json", "--repo", scenario["root"])
    assert again.code == 0 and again.json["samples_reclaimed"] == 0 and again.json["annotations_reclaimed"] == 0
    assert cli("verify", "--json", "--repo", scenario["root"]).json["ok"] is True


# ---------------------------------------------------------------------------- show pictures


def test_show_grid_and_plot_write_pngs(cli, scenario, tmp_path):
    grid, plot = tmp_path / "g.png", tmp_path / "sub" / "p.png"
    r = cli("data", "show", "day", "--grid", grid, "--grid-size", 8, "--plot", plot,
            "--json", "--repo", scenario["root"])
    assert r.code == 0, r.err
    assert r.err == ""
    assert Path(r.json["grid"]).resolve() == grid.resolve() and Path(r.json["plot"]).resolve() == plot.resolve()
    for path in (grid, plot):
        assert path.stat().st_size > 0
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.width > 0 and im.height > 0
            im.load()  # decodes completely


def test_show_human_output(cli, scenario, driving_small):
    _, counts = _coco_counts(driving_small)
    r = cli("data", "show", "day", "--repo", scenario["root"])
    assert r.code == 0 and r.err == ""
    for name, n in counts.items():
        assert f"{name}={n}" in r.out


# --------------------------------------------------------------------- a real process, no TTY


def test_entry_point_subprocess_is_quiet_when_not_a_tty(tmp_path, driving_small):
    env = {k: v for k, v in os.environ.items() if k != "VEML_REPO"}
    root = tmp_path / "proc-repo"

    def run(*args):
        return subprocess.run([VEML_BIN, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=60, stdin=subprocess.DEVNULL)

    init = run("init", root, "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout) == {"path": str(root.resolve())} and init.stderr == ""
    # no --json here: quiet because stderr is not a terminal
    imp = run("data", "import", "coco", driving_small, "--images", images_dir(driving_small),
              "--name", "v1", "--repo", root)
    assert imp.returncode == 0, imp.stderr
    assert imp.stderr == ""
    assert "v1" in imp.stdout
    listed = run("data", "list", "--json", "--repo", root)
    assert listed.returncode == 0 and listed.stderr == ""
    doc = json.loads(listed.stdout)
    assert [v["name"] for v in doc] == ["v1"] and doc[0]["samples"] == 40
    bad = run("data", "show", "nope", "--json", "--repo", root)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    debug = run("data", "show", "nope", "--debug", "--repo", root)  # the traceback only with --debug
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "nope" in debug.stderr
    usage = run("data", "frobnicate", "--repo", root)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: veml")
