"""Ray as the compute back-end: embeddings, core sets, batch prediction and DDP training on a real cluster.

One local Ray cluster (2 CPUs) serves the whole module.  The repository under test says
``compute_url = "ray"`` in its config, with partitions of 16 samples so the 64-image version is
split into 4 tasks; the same data is imported into a second, local repository, so every Ray result
is compared with what the local path computes on its own — nothing here is mocked.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import veml
from veml.adapters import get_adapter
from conftest import assert_failed_cleanly, images_dir, ok, run_cli
from veml.coreset.kcenter import k_center_partitioned

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")

from veml.compute import LocalExecutor, RayExecutor, partition  # noqa: E402
from veml.compute import coreset_tasks  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning", "ignore::DeprecationWarning",
                                        "ignore:lance is not fork-safe:UserWarning")

PART = 16
MB_YAML = """\
adapter: torch
task: classification
architecture: mobilenet_v3_small
parameters:
  image_size: 32
  label_column: time_of_day
"""


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster for the module; shut down after its last test."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _repo(root: Path, driving_small: Path, driving_night: Path, compute: str | None) -> Path:
    """day (40) + night (24) merged as ``both`` (two classes), model ``mb``; ``compute_url`` as given."""
    ok("init", root)
    if compute is not None:
        cfg = root / ".veml" / "config.toml"
        cfg.write_text(cfg.read_text() + f'compute_url = "{compute}"\ncompute_partition_size = {PART}\n')
    for ann, name in ((driving_small, "day"), (driving_night, "night")):
        ok("data", "import", "coco", ann, "--images", images_dir(ann), "--name", name, "--repo", root)
    ok("data", "merge", "day", "night", "--name", "both", "--repo", root)
    (root.parent / "mb.yaml").write_text(MB_YAML)
    ok("model", "add", "--name", "mb", "--config", root.parent / "mb.yaml", "--repo", root)
    return root


@pytest.fixture(scope="module")
def ray_repo(tmp_path_factory, driving_small, driving_night, cluster) -> Path:
    return _repo(tmp_path_factory.mktemp("ray") / "repo", driving_small, driving_night, "ray")


@pytest.fixture(scope="module")
def local_repo(tmp_path_factory, driving_small, driving_night) -> Path:
    return _repo(tmp_path_factory.mktemp("local") / "repo", driving_small, driving_night, None)


@pytest.fixture(scope="module")
def ddp_training(ray_repo) -> dict:
    """One Ray Train run (2 gloo workers, 1 epoch) through the CLI, deployed as ONNX."""
    t = ok("train", "--data", "both", "--model", "mb", "--set", "distributed=ray", "--set", "workers=2",
           "--set", "epochs=1", "--set", "batch_size=8", "--set", "seed=1", "--name", "ddp", "--repo", ray_repo)
    ok("deploy", "ddp", "--format", "onnx", "--quantize", "none", "--name", "ddp-onnx", "--repo", ray_repo)
    return t


def _count(root: Path, kind: str | None = None) -> int:
    with veml.open(root) as r:
        return len(r.stores.graph.list(kinds=[kind] if kind else None))


# ------------------------------------------------------------------------------- configuration


def test_config_and_env_choose_the_executor(ray_repo, local_repo, monkeypatch):
    monkeypatch.delenv("VEML_COMPUTE", raising=False)
    with veml.open(ray_repo) as r:
        assert isinstance(r.stores.compute, RayExecutor) and r.stores.compute.partition_size == PART
        assert r.stores.distributed
    with veml.open(local_repo) as r:
        assert isinstance(r.stores.compute, LocalExecutor) and not r.stores.distributed
    monkeypatch.setenv("VEML_COMPUTE", "local")  # the environment beats the config file
    with veml.open(ray_repo) as r:
        assert isinstance(r.stores.compute, LocalExecutor)
    monkeypatch.setenv("VEML_COMPUTE", "ray://head.example:10001")
    with veml.open(local_repo) as r:
        assert r.stores.compute.address == "ray://head.example:10001"  # connects only when work is sent
    monkeypatch.setenv("VEML_COMPUTE", "ray:auto")
    with veml.open(local_repo) as r:
        assert r.stores.compute.address == "auto"


def test_partitions_are_contiguous_and_cover_everything():
    ids = np.arange(100, 164)
    parts = partition(ids, 16)
    assert [len(p) for p in parts] == [16, 16, 16, 16]
    assert np.array_equal(np.concatenate(parts), ids)
    assert [len(p) for p in partition(np.arange(37), 16)] == [13, 12, 12]
    assert partition(np.arange(0), 16) == []


# ---------------------------------------------------------------------------------- embeddings


def test_embeddings_through_ray_equal_local(ray_repo, local_repo):
    calls_ray: list[int] = []
    with veml.open(ray_repo) as r:
        ids_r, x_r = r.coresets.embeddings("both", progress=calls_ray.append)
        again_ids, again = r.coresets.embeddings("both")  # now from the cache the driver wrote
    calls_local: list[int] = []
    with veml.open(local_repo) as r:
        ids_l, x_l = r.coresets.embeddings("both", progress=calls_local.append)
    # one progress tick per Ray task (4 partitions of 16), one per batch of 64 locally
    assert calls_ray == [0, PART, PART, PART, PART] and calls_local == [0, 64]
    assert np.array_equal(ids_r, ids_l) and x_r.shape == x_l.shape == (64, 1280)
    np.testing.assert_allclose(x_r, x_l, rtol=1e-4, atol=1e-5)
    assert np.array_equal(again_ids, ids_r) and np.array_equal(again, x_r)


# ----------------------------------------------------------------------------------- core sets


def test_ray_core_set_equals_partitioned_k_center(ray_repo):
    core = ok("coreset", "both", "--k", "6", "--seed", "3", "--repo", ray_repo)
    assert core["method"] == "k-center-partitioned" and core["partitions"] == 4 and core["k"] == 6 and core["n"] == 64
    with veml.open(ray_repo) as r:
        ids, x = r.coresets.embeddings("both")
        matrix = r.coresets.matrix(r.get(core["id"]))
    positions = partition(np.arange(len(ids)), PART)
    local = k_center_partitioned([x[p] for p in positions], 6, seed=3)
    assert core["ids"] == ids[local.indices].tolist()
    assert math.isclose(core["radius"], local.radius, rel_tol=1e-5)
    assert np.array_equal(matrix, x[local.indices])
    # the executor-level function on the local executor gives the same answer as on Ray
    with veml.open(ray_repo) as r:
        here = coreset_tasks.k_center(LocalExecutor(), r.stores.location, core["embedder"],
                                      [ids[p] for p in positions], 6, seed=3)
    assert here.ids.tolist() == core["ids"] and math.isclose(here.radius, core["radius"], rel_tol=1e-6)


# ------------------------------------------------------------------------------------ training


def test_ray_train_ddp_records_a_training_that_deploys(ray_repo, ddp_training):
    t = ddp_training
    assert t["status"] == "finished" and t["distributed"] == {"backend": "ray", "workers": 2}
    assert "distributed" not in t["params"] and "workers" not in t["params"]  # a recipe others may reuse
    assert t["profile"]["backend"] == "ray" and t["profile"]["workers"] == 2
    # 51 training samples over 2 workers: 26 each (the sampler pads), 4 steps of 8 in one epoch
    per_worker = math.ceil(t["train_samples"] / 2)
    assert t["profile"]["steps"] == math.ceil(per_worker / 8)
    assert t["metrics"]["accuracy"] is not None and math.isfinite(t["metrics"]["final_loss"])
    log = ok("train", "log", "ddp", "--repo", ray_repo)
    assert log["training"] == t["id"] and log["status"] == "finished"
    losses = [row for row in log["logs"] if row["key"] == "loss"]  # one row per step, as a local run logs
    assert [row["step"] for row in losses] == list(range(1, t["profile"]["steps"] + 1))
    assert all(math.isfinite(row["value"]) and row["epoch"] == 0 for row in losses)
    assert losses[-1]["value"] == pytest.approx(t["metrics"]["final_loss"])
    with veml.open(ray_repo) as r:  # the checkpoint is stored as a local run's is: digest-checked, weights-only
        meta = get_adapter("torch").checkpoint_meta(r.training.checkpoint(r.training.get("ddp")))
        deployed = r.inference.get("ddp-onnx")
    assert meta["class_names"] == t["class_names"] == ["day", "night"]
    assert deployed.props["training"] == t["id"] and deployed.props["agreement"] == 1.0


# ---------------------------------------------------------------------------------- prediction


def test_ray_batch_prediction_equals_local(ray_repo, ddp_training, monkeypatch):
    monkeypatch.delenv("VEML_COMPUTE", raising=False)
    p_ray = ok("predict", "ddp-onnx", "--data", "both", "--name", "p-ray", "--repo", ray_repo)
    monkeypatch.setenv("VEML_COMPUTE", "local")
    p_local = ok("predict", "ddp-onnx", "--data", "both", "--name", "p-local", "--repo", ray_repo)
    assert p_ray["samples"] == p_local["samples"] == 64 and p_ray["predictions"] == p_local["predictions"] == 64
    assert p_ray["metrics"]["confusion_matrix"] == p_local["metrics"]["confusion_matrix"]
    assert p_ray["metrics"]["accuracy"] == pytest.approx(p_local["metrics"]["accuracy"])
    assert p_ray["key_metric"]["value"] == pytest.approx(p_local["key_metric"]["value"])
    # the worst samples: same scores (their order among near-ties may differ with the batch sizes)
    assert sorted(w["p_true"] for w in p_ray["worst"]) == pytest.approx(sorted(w["p_true"] for w in p_local["worst"]), abs=1e-5)
    with veml.open(ray_repo) as r:
        a, b = r.inference.predictions("p-ray"), r.inference.predictions("p-local")
    assert a["data_id"].to_pylist() == b["data_id"].to_pylist() and a["category"].to_pylist() == b["category"].to_pylist()
    np.testing.assert_allclose(np.array(a["values"].to_pylist()), np.array(b["values"].to_pylist()), atol=1e-5)
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-5)
    # an explicit cluster address (what a multi-node set-up gives) reaches the same cluster
    monkeypatch.setenv("VEML_COMPUTE", f"ray:{ray.get_runtime_context().gcs_address}")
    p_addr = ok("predict", "ddp-onnx", "--data", "both", "--name", "p-addr", "--repo", ray_repo)
    assert p_addr["metrics"]["confusion_matrix"] == p_local["metrics"]["confusion_matrix"]


# ----------------------------------------------------------------------------------- bad input


def test_unreachable_cluster_is_one_clean_error_and_writes_nothing(ray_repo, ddp_training, monkeypatch):
    before = _count(ray_repo)
    monkeypatch.setenv("VEML_COMPUTE", "ray://127.0.0.1:1")
    res = run_cli("predict", "ddp-onnx", "--data", "both", "--name", "nowhere", "--json", "--repo", ray_repo)
    assert_failed_cleanly(res, "cannot reach the Ray cluster at ray://127.0.0.1:1")
    res = run_cli("train", "--data", "both", "--model", "mb", "--set", "distributed=ray", "--name", "nowhere-train",
                  "--json", "--repo", ray_repo)
    assert_failed_cleanly(res, "cannot reach the Ray cluster")
    res = run_cli("coreset", "night", "--k", "3", "--json", "--repo", ray_repo)
    assert_failed_cleanly(res, "cannot reach the Ray cluster")
    monkeypatch.setenv("VEML_COMPUTE", "spark://x")
    assert_failed_cleanly(run_cli("data", "list", "--json", "--repo", ray_repo), "unsupported $VEML_COMPUTE 'spark://x'")
    monkeypatch.delenv("VEML_COMPUTE")
    assert _count(ray_repo) == before


def test_ray_not_installed_names_the_extra_and_writes_nothing(ray_repo, ddp_training, monkeypatch):
    before = _count(ray_repo)
    monkeypatch.delenv("VEML_COMPUTE", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is not installed
    res = run_cli("coreset", "day", "--k", "4", "--json", "--repo", ray_repo)
    assert_failed_cleanly(res, "ray is not installed", "pip install 'veml[ray]'")
    res = run_cli("train", "--data", "both", "--model", "mb", "--set", "distributed=ray", "--json", "--repo", ray_repo)
    assert_failed_cleanly(res, "pip install 'veml[ray]'")
    assert _count(ray_repo) == before


def test_bad_distributed_settings_are_refused_before_a_run_exists(ray_repo, monkeypatch):
    before = _count(ray_repo, "TrainingVersion")
    for sets, needle in ((["distributed=horovod"], "distributed='horovod' must be one of none, ray"),
                         (["distributed=ray", "workers=0"], "workers=0 must be at least 1"),
                         (["workers=two"], "workers='two' is not an int"),
                         (["distributed=none", "workers=2"], "workers=N needs distributed=ray"),
                         (["workers=3"], "workers=3 needs 3 CPUs but the Ray cluster has 2")):
        args = [a for s in sets for a in ("--set", s)]
        res = run_cli("train", "--data", "both", "--model", "mb", *args, "--json", "--repo", ray_repo)
        assert_failed_cleanly(res, needle)
    assert _count(ray_repo, "TrainingVersion") == before
