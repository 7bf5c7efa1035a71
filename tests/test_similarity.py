"""Core-set versions, similarity search and lifecycle transfer (issue 4), through the CLI.

One module-scoped repository holds four small driving domains (two of them the same domain,
generated with different seeds), two traffic networks of different sizes and a table; rankings
must put the same-domain dataset first, reuse core sets and cached embeddings, and record
their reports and transfer edges in the graph.
"""

from __future__ import annotations

import sys

import lance
import numpy as np
import pytest

import veml
from conftest import artifact_bytes, assert_failed_cleanly, images_dir, ok, overwrite_artifact, run_cli
from veml.datasets import Domain, generate_driving_coco, generate_traffic, write_npz

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
DOMAINS = {"day-a": Domain(city="amsterdam"), "day-b": Domain(city="amsterdam"),
           "night": Domain(city="tokyo", time_of_day="night", weather="rain"),
           "fog": Domain(city="phoenix", weather="fog", camera="wide"),
           "night-b": Domain(city="tokyo", time_of_day="night", weather="rain"),
           "dusk-snow": Domain(city="mumbai", time_of_day="dusk", weather="snow", camera="tele")}
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("similarity")
    repo = veml.init(base / "repo")
    for seed, (name, dom) in enumerate(DOMAINS.items()):
        ann = generate_driving_coco(base / name, 30, seed=seed, domain=dom, file_prefix=name)
        repo.data.import_("coco", ann, name, images=images_dir(ann))
    for seed, (network, sensors) in enumerate((("grid", 12), ("ring", 9), ("corridor", 12))):
        npz = write_npz(generate_traffic(n_sensors=sensors, n_steps=288 * 6, seed=seed, network=network), base / f"{network}.npz")
        repo.data.import_("timeseries", npz, f"traffic-{network}")
    rng = np.random.default_rng(0)
    for name, shift in (("table-a", 0.0), ("table-b", 0.1), ("table-c", 3.0)):
        csv = base / f"{name}.csv"
        rows = rng.standard_normal((60, 3)) + shift
        csv.write_text("x,y,z\n" + "\n".join(",".join(f"{v:.4f}" for v in r) for r in rows))
        repo.data.import_("table", csv, name)
    repo.close()
    return base / "repo"


def cache_rows(root) -> int:
    """Rows in the embedding cache, wherever it lives (a folder, S3)."""
    with veml.open(root) as repo:
        store = repo.stores.embeddings
        tables = store.loc.list_children(".lance")
        return sum(lance.dataset(store.loc.child(t), storage_options=store._opts).count_rows() for t in tables)


def test_coreset_is_a_version_computed_once(root):
    first = ok("coreset", "day-a", "--k", "8", "--repo", root)
    assert first["kind"] == "coreset" and first["k"] == 8 and first["n"] == 30 and first["dim"] == 1280
    assert first["parents"] == [ok("data", "show", "day-a", "--repo", root)["id"]]
    assert len(set(first["ids"])) == 8 and first["radius"] > 0
    rows = cache_rows(root)
    again = ok("coreset", "day-a", "--k", "8", "--repo", root)
    assert again["id"] == first["id"] and cache_rows(root) == rows
    edges = ok("lineage", first["id"], "--up", "--repo", root)["edges"]
    assert any(e["kind"] == "CORESET_OF" for e in edges)
    other_seed = ok("coreset", "day-a", "--k", "8", "--seed", "1", "--repo", root)
    assert other_seed["id"] != first["id"] and cache_rows(root) == rows  # same embeddings, new core set


def test_embeddings_are_cached_per_sample_across_versions(root):
    ok("coreset", "night", "--k", "4", "--repo", root)
    rows = cache_rows(root)
    ok("data", "filter", "night", "--where", "category = 'car'", "--name", "night-cars", "--repo", root)
    ok("data", "merge", "night", "day-a", "--name", "night+day", "--repo", root)
    ok("coreset", "night-cars", "--k", "3", "--repo", root)
    ok("coreset", "night+day", "--k", "5", "--repo", root)
    assert cache_rows(root) == rows  # every sample of both derived versions was embedded before


def test_similar_ranks_the_same_domain_first_and_records_a_report(root):
    out = ok("similar", "day-a", "--repo", root)
    names = [r["name"] for r in out["ranking"]]
    assert names[0] == "day-b"
    assert set(names) >= {"day-b", "night", "fog"} and "traffic-grid" not in names and "day-a" not in names
    assert "night+day" not in names and out["related_left_out"] >= 1  # shares day-a's samples
    related = ok("similar", "day-a", "--include-related", "--repo", root)
    assert "night+day" in [r["name"] for r in related["ranking"]]
    distances = [r["distance"] for r in out["ranking"]]
    assert distances == sorted(distances) and set(out) >= {"target", "ranking"}
    report = ok("lineage", out["report"], "--up", "--hops", "1", "--repo", root)
    kinds = {(e["src"], e["kind"]) for e in report["edges"]}
    assert (out["target"], "SIMILARITY_CHECK") in kinds
    top = ok("similar", "day-a", "--top", "2", "--method", "mmd", "--repo", root)
    assert len(top["ranking"]) == 2 and top["ranking"][0]["name"] == "day-b" and top["method"] == "mmd"


@pytest.mark.parametrize("method", ["mean_pairwise", "mmd", "gromov_wasserstein", "label_ot"])
def test_every_method_ranks_images(root, method):
    out = ok("similar", "day-a", "--method", method, "--k", "20", "--repo", root)
    assert out["method"] == method and out["ranking"]
    assert all(np.isfinite(r["distance"]) for r in out["ranking"])


def test_series_of_different_sizes_compare_by_gromov_wasserstein(root):
    out = ok("similar", "traffic-grid", "--repo", root)
    assert out["method"] == "gromov_wasserstein"
    assert {r["name"] for r in out["ranking"]} == {"traffic-ring", "traffic-corridor"}
    mmd = ok("similar", "traffic-grid", "--method", "mmd", "--repo", root)
    assert [r["name"] for r in mmd["ranking"]] == ["traffic-corridor"]  # same sensor count only
    assert [s["name"] for s in mmd["skipped"]] == ["traffic-ring"] and "dimension" in mmd["skipped"][0]["reason"]


def test_tables_compare_on_standardised_columns(root):
    out = ok("similar", "table-a", "--repo", root)
    assert out["method"] == "mmd" and [r["name"] for r in out["ranking"]] == ["table-b", "table-c"]


def test_transfer_reuses_the_nearest_lifecycle(root, tmp_path):
    cfg = tmp_path / "m.json"
    cfg.write_text(__import__("json").dumps(CLASSIFIER))
    ok("data", "merge", "day-b", "night-b", "--name", "src-mixed", "--repo", root)
    ok("data", "merge", "dusk-snow", "fog", "--name", "far-mixed", "--repo", root)
    ok("model", "add", "--name", "tod", "--config", cfg, "--repo", root)
    for data in ("src-mixed", "far-mixed"):
        run = ok("train", "--data", data, "--model", "tod", "--set", "epochs=3", "--set", "batch_size=16", "--repo", root)
        ok("deploy", run["id"], "--quantize", "int8", "--repo", root)
    ok("data", "merge", "day-a", "night", "--name", "new-mixed", "--repo", root)
    ranking = ok("similar", "new-mixed", "--with-lifecycle", "--repo", root)["ranking"]
    assert [r["name"] for r in ranking] == ["src-mixed", "far-mixed"] and "lifecycle" in ranking[0]
    out = ok("transfer", "new-mixed", "--repo", root)
    assert set(out) >= {"source", "model", "training", "inference"}
    assert out["source_name"] == "src-mixed" and out["params"]["epochs"] == 1 and out["source_lifecycle"]["epochs"] == 3
    training = ok("train", "show", out["training"], "--repo", root)
    src = ok("data", "show", "src-mixed", "--repo", root)
    assert training["init_from"] == out["source_lifecycle"]["training"] and training["status"] == "finished"
    assert training["params"]["batch_size"] == 16  # the source recipe
    assert training["params"]["precise_bn"] is True and training["profile"]["precise_bn_s"] > 0
    inference = ok("lineage", out["inference"], "--up", "--hops", "1", "--repo", root)
    assert inference["nodes"] and any(e["kind"] == "TRANSFER_FROM" and e["src"] == out["source_lifecycle"]["inference"]
                                      for e in inference["edges"])
    dep = [n for n in inference["nodes"] if n["id"] == out["inference"]][0]
    assert dep["quantize"] == "int8"  # the source's deployment settings
    up = ok("lineage", out["training"], "--up", "--hops", "1", "--repo", root)["edges"]
    assert any(e["kind"] == "TRANSFER_FROM" and e["src"] == src["id"] for e in up)
    assert any(e["kind"] == "FINETUNE_FROM" for e in up)
    explicit = ok("transfer", "new-mixed", "--from", "far-mixed", "--set", "epochs=2", "--repo", root)
    assert explicit["source_name"] == "far-mixed" and explicit["params"]["epochs"] == 2 and explicit["report"] is None


# --- bad input: one error line, nothing recorded -------------------------------------------------------
def _count(root) -> int:
    with veml.open(root) as r:
        return r.stores.graph.count()


@pytest.mark.parametrize("args, needle", [
    (("similar", "nope"), "nope"),
    (("coreset", "day-a", "--k", "31"), "larger than"),
    (("coreset", "day-a", "--k", "0"), "at least 1"),
    (("similar", "day-a", "--k", "500"), "larger than"),
    (("coreset", "traffic-grid", "--embedder", "lite0"), "does not apply"),
    (("coreset", "day-a", "--embedder", "training:nope"), "nope"),
    (("similar", "day-a", "--top", "0"), "at least 1"),
    (("transfer", "traffic-grid"), "no other series data version with a complete lifecycle"),
    (("transfer", "day-a", "--from", "night"), "no complete lifecycle"),
])
def test_bad_requests_fail_cleanly_and_record_nothing(root, args, needle):
    before = _count(root)
    assert_failed_cleanly(run_cli(*args, "--repo", root, "--json"), needle)
    assert _count(root) == before


def test_an_empty_version_and_a_wrong_modality_have_no_distance(root):
    ok("data", "filter", "day-a", "--where", "width < 0", "--name", "nothing", "--repo", root)
    before = _count(root)
    assert_failed_cleanly(run_cli("similar", "nothing", "--repo", root, "--json"), "empty")
    assert_failed_cleanly(run_cli("coreset", "nothing", "--repo", root, "--json"), "empty")
    with veml.open(root) as r:
        from veml.errors import InvalidInput

        with pytest.raises(InvalidInput, match="different modalities"):
            r.similarity.distance("day-a", "traffic-grid")
    assert _count(root) == before


def test_an_embedder_without_its_extra_names_the_extra(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if veml[torch] were not installed
    before = _count(root)
    line = assert_failed_cleanly(run_cli("coreset", "fog", "--k", "3", "--repo", root, "--json"), "veml[torch]")
    assert "torch" in line and _count(root) == before


def test_a_damaged_core_set_matrix_is_found_by_verify(root):
    core = ok("coreset", "fog", "--k", "6", "--repo", root)
    original = artifact_bytes(root, core["matrix"])
    try:
        overwrite_artifact(root, core["matrix"], original[:-8] + b"\0" * 8)
        res = run_cli("verify", "--repo", root, "--json")
        assert res.code == 1 and any("core-set matrix" in p for p in res.json["problems"])
        assert_failed_cleanly(run_cli("similar", "fog", "--k", "6", "--repo", root, "--json"), "damaged")
    finally:
        overwrite_artifact(root, core["matrix"], original)
    assert run_cli("verify", "--repo", root, "--json").code == 0


def test_label_ot_treats_scenes_without_boxes_as_a_class(root):
    doc = __import__("json").loads((root.parent / "fog" / "annotations.json").read_text())
    half = {im["id"] for im in doc["images"][::2]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in half]
    path = root.parent / "fog-half.json"
    path.write_text(__import__("json").dumps(doc))
    ok("data", "update", "fog", "--coco", path, "--name", "fog-half-boxed", "--repo", root)
    core = ok("coreset", "fog-half-boxed", "--k", "10", "--repo", root)
    assert "(no objects)" in core["labels"] and None not in core["labels"]
    out = ok("similar", "fog-half-boxed", "--method", "label_ot", "--k", "10", "--include-related", "--repo", root)
    assert out["ranking"] and all(np.isfinite(r["distance"]) for r in out["ranking"])


def test_transfer_across_sensor_counts_when_the_source_cannot_run_on_the_target(root, tmp_path):
    cfg = tmp_path / "fc.json"
    cfg.write_text(__import__("json").dumps({"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
                                             "parameters": {"history": 6, "horizon": 3, "hidden": 4, "layers": 1}}))
    ok("model", "add", "--name", "fc", "--config", cfg, "--repo", root)
    run = ok("train", "--data", "traffic-ring", "--model", "fc", "--set", "max_steps=3", "--repo", root)
    ok("deploy", run["id"], "--repo", root)
    out = ok("transfer", "traffic-grid", "--from", "traffic-ring", "--test", "traffic-corridor", "--set", "max_steps=3",
             "--repo", root)
    assert out["metric"]["name"] == "mae" and out["metric"]["value"] > 0  # the new 12-sensor model ran on the test
    src = out["source_lifecycle"]
    assert src["on_test"] is None and "9 sensors" in src["on_test_error"]  # the 9-sensor source cannot
    # forecasters' lifecycles rank by finetune_probe, which fine-tunes the 9-sensor model on the 12-sensor target
    # as transfer does: its distance is that model's MAE there
    assert out["method"] == "finetune_probe" and out["distance"] > 0
    as_is = ok("transfer", "traffic-grid", "--from", "traffic-ring", "--method", "as_is", "--set", "max_steps=3",
               "--repo", root)  # the unchanged 9-sensor model cannot run on 12 sensors: no distance, no method
    assert as_is["distance"] is None and as_is["method"] is None
    named = ok("transfer", "traffic-grid", "--from", "traffic-ring", "--method", "gromov_wasserstein", "--set", "max_steps=3",
               "--repo", root)
    assert named["distance"] is not None and named["method"] == "gromov_wasserstein"  # compares networks of any size


def test_every_similarity_method_is_offered_by_the_cli_and_the_server():
    from typing import get_args

    from veml.cli.lifecycle import METHODS as CLI
    from veml.coreset.distance import METHODS as DISTANCES
    from veml.lifecycle.model_scores import METHODS as MODEL_SCORES
    from veml.server.models import SimilarIn

    server = set(get_args(get_args(SimilarIn.model_fields["method"].annotation)[0]))
    assert set(CLI) == server == set(DISTANCES) | set(MODEL_SCORES)
