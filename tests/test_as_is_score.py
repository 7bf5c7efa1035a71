"""Model scores for forecasters' lifecycles (issue 14, sensor series).

``as_is``: a stored lifecycle's model scored, unchanged, by its own metric on the target.  ``finetune_probe``: the
model fine-tuned on the target in memory by transfer's recipe, then scored there.  Real DCRNN forecasters trained on
generated traffic networks and deployed to ONNX; each score is checked against the same computation done through
the public API (the deployment's masked MAE; a recorded ``veml transfer``'s deployment, evaluated on the target), and ``veml similar`` / ``veml transfer`` rank forecasters' lifecycles by ``finetune_probe`` when no method
is named.
"""

from __future__ import annotations

import pytest

import veml
from conftest import ok
from veml.datasets import generate_traffic, write_npz
from veml.metrics import forecasting_report

FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 6, "horizon": 3, "hidden": 8, "layers": 1, "diffusion_steps": 1}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("as-is")
    repo = veml.init(base / "repo")
    nets = {"src-calm": dict(network="grid", n_sensors=4, noise=0.5), "src-heavy": dict(network="ring", n_sensors=4, demand=1.8, noise=4.0),
            "src-wide": dict(network="grid", n_sensors=6), "target": dict(network="grid", n_sensors=4, noise=0.5, demand=1.1)}
    for seed, (name, kw) in enumerate(nets.items()):
        npz = write_npz(generate_traffic(n_steps=288 * 6, seed=seed, **kw), base / f"{name}.npz")
        repo.data.import_("timeseries", npz, name)
    repo.models.add("forecaster", FORECASTER)
    for name in ("src-calm", "src-heavy", "src-wide"):
        run = repo.training.train(name, "forecaster", sets={"epochs": 1, "seed": 0}, name=f"train-{name}")
        repo.inference.deploy(run["id"], "onnx", "none", name=f"{name}-onnx")
    repo.close()
    return base / "repo"


def test_as_is_ranks_forecasters_lifecycles_by_their_own_error_on_the_target(root):
    out = ok("similar", "target", "--with-lifecycle", "--method", "as_is", "--repo", root)
    assert out["method"] == "as_is"
    ranked = {r["name"]: r for r in out["ranking"]}
    assert set(ranked) == {"src-calm", "src-heavy"}  # the 6-sensor forecaster cannot run on 4 sensors
    assert [s["name"] for s in out["skipped"]] == ["src-wide"]
    with veml.open(root) as repo:
        for name, row in ranked.items():
            _, _, td, preds = repo.inference.run(f"{name}-onnx", "target")
            mae = forecasting_report(preds.forecast_targets, preds.forecasts, td.missing_value)["mae"]
            assert row["score"] == pytest.approx(-mae, rel=1e-6) and row["distance"] == pytest.approx(mae, rel=1e-6)
    distances = [r["distance"] for r in out["ranking"]]
    assert distances == sorted(distances)
    named = ok("similar", "target", "--method", "as_is", "--repo", root)  # a model score implies --with-lifecycle
    assert [r["name"] for r in named["ranking"]] == [r["name"] for r in out["ranking"]]
    data_only = ok("similar", "target", "--repo", root)  # ranking data versions alone keeps the series distance
    assert data_only["method"] == "gromov_wasserstein"


def test_finetune_probe_is_the_default_and_scores_what_transfer_would_fine_tune(root):
    with veml.open(root) as repo:
        before = (len(repo.training.list()), len(repo.inference.list()))
    out = ok("similar", "target", "--with-lifecycle", "--repo", root)
    assert out["method"] == "finetune_probe"
    ranked = {r["name"]: r for r in out["ranking"]}
    # the diffusion convolution's weights do not depend on the sensor count: a 6-sensor forecaster fine-tunes on a
    # 4-sensor network (as veml transfer does), where its deployment as it is cannot run (as_is skips it)
    assert set(ranked) == {"src-calm", "src-heavy", "src-wide"} and out["skipped"] == []
    with veml.open(root) as repo:
        assert (len(repo.training.list()), len(repo.inference.list())) == before  # the probe records no training
    # the same fine-tuning, recorded: veml transfer from each source (its recipe, split and keep-better), its
    # deployment then evaluated on the target's days
    for name, row in ranked.items():
        t = ok("transfer", "target", "--from", name, "--name", f"probe-check-{name}", "--repo", root)
        with veml.open(root) as repo:
            mae = repo.inference.predict(t["inference"], "target").props["key_metric"]
        assert mae["name"] == "mae"
        assert row["score"] == pytest.approx(-mae["value"], rel=1e-3)
        assert row["distance"] == pytest.approx(mae["value"], rel=1e-3)
    distances = [r["distance"] for r in out["ranking"]]
    assert distances == sorted(distances)


def test_transfer_without_a_source_starts_from_the_lifecycle_the_probe_ranks_first(root):
    best = ok("similar", "target", "--with-lifecycle", "--repo", root)["ranking"][0]["name"]
    out = ok("transfer", "target", "--set", "epochs=1", "--repo", root)
    assert out["method"] == "finetune_probe" and out["source_name"] == best
