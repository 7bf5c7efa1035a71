"""Drift detection, rebuild (full / transfer / active / adapt) and monitoring (issue 5), through the CLI.

The reference is daytime and dusk Amsterdam; a same-distribution batch must pass and a night /
fog batch must drift.  Trainings are tiny (a few steps): what is checked is the versioning — the
reports, the REBUILD edges, the shared held-back slice, the two-step active-learning loop and
that every refused request leaves the repository as it was.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import veml
from conftest import assert_failed_cleanly, images_dir, ok, run_cli
from veml.datasets import Domain, generate_driving_coco, generate_traffic, write_npz

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
TINY = ["--set", "batch_size=8", "--set", "max_steps=3", "--set", "epochs=1"]
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}
DETECTOR = {"adapter": "torch", "task": "detection", "architecture": "fasterrcnn", "backbone": "efficientnet_lite0",
            "parameters": {"image_size": 64, "pretrained_backbone": True, "freeze_backbone": True}}
FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 6, "horizon": 3, "hidden": 4, "layers": 1, "diffusion_steps": 1}}


def _coco(base, name, n, seed, dom):
    return generate_driving_coco(base / name, n, seed=seed, domain=dom, file_prefix=name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("drift")
    root = base / "repo"
    repo = veml.init(root)
    raw = {}
    parts = []
    for seed, tod in enumerate(("day", "dusk")):
        for split, n in (("ref", 50), ("same", 20)):
            raw[f"{split}-{tod}"] = _coco(base, f"{split}-{tod}", n, seed * 10 + len(split), Domain(city="amsterdam", time_of_day=tod))
            repo.data.import_("coco", raw[f"{split}-{tod}"], f"{split}-{tod}", role="train" if split == "ref" else "test",
                              images=images_dir(raw[f"{split}-{tod}"]))
        parts.append(tod)
    repo.data.merge(["ref-day", "ref-dusk"], "reference")
    repo.data.merge(["same-day", "same-dusk"], "same")
    raw["shifted"] = _coco(base, "shifted", 40, 77, Domain(city="tokyo", time_of_day="dusk", weather="fog", camera="wide"))
    repo.data.import_("coco", raw["shifted"], "shifted", role="test", images=images_dir(raw["shifted"]))
    npz = write_npz(generate_traffic(n_sensors=6, n_steps=288 * 3, seed=1), base / "traffic.npz")
    repo.data.import_("timeseries", npz, "traffic")
    for name, cfg in (("tod", CLASSIFIER), ("det", DETECTOR), ("fc", FORECASTER)):
        repo.models.add(name, cfg)
    repo.close()
    cls = ok("train", "--data", "reference", "--model", "tod", *TINY, "--name", "tod-run", "--repo", root)
    ok("deploy", cls["id"], "--name", "tod-onnx", "--repo", root)
    det = ok("train", "--data", "reference", "--model", "det", *TINY, "--name", "det-run", "--repo", root)
    ok("deploy", det["id"], "--name", "det-onnx", "--repo", root)
    fc = ok("train", "--data", "traffic", "--model", "fc", *TINY, "--name", "fc-run", "--repo", root)
    ok("deploy", fc["id"], "--name", "fc-onnx", "--repo", root)
    return {"root": root, "base": base, "raw": raw}


def count(root) -> int:
    with veml.open(root) as r:
        return r.stores.graph.count()


def edges_into(root, node_id, hops=1):
    return ok("lineage", node_id, "--up", "--hops", str(hops), "--repo", root)["edges"]


# --- drift ----------------------------------------------------------------------------------------------
def test_same_distribution_passes_and_a_shift_drifts(world):
    root = world["root"]
    same = ok("drift", "--reference", "reference", "--test", "same", "--repo", root)
    shifted = ok("drift", "--reference", "reference", "--test", "shifted", "--repo", root)
    assert set(same) >= {"drift", "p_value", "statistic", "method", "threshold"}
    assert same["method"] == "mmd" and same["drift"] is False and same["p_value"] >= 0.05
    assert shifted["drift"] is True and shifted["p_value"] < 0.05 and shifted["statistic"] > shifted["threshold"]
    kinds = {(e["src"], e["kind"], e["props"].get("role")) for e in edges_into(root, shifted["report"])}
    assert (shifted["reference"], "DRIFT_CHECK", "reference") in kinds and (shifted["test"], "DRIFT_CHECK", "test") in kinds


@pytest.mark.parametrize("method", ["ks", "cvm", "bbsd", "mmd"])
def test_every_method_with_the_deployed_model(world, method):
    root = world["root"]
    out = ok("drift", "--test", "shifted", "--inference", "tod-onnx", "--method", method, "--repo", root)
    assert out["method"] == method and out["inference"] and out["reference_name"] == "reference"
    assert 0 <= out["p_value"] <= 1
    if method == "bbsd":  # a classifier: one permutation test over label-shift and covariate-shift statistics
        d = out["details"]
        assert d["test"] == "combined" and d["permutations"] >= 200 and out["embedder"] is None
        families = {f["name"]: f for f in d["families"]}
        n = d["test_rows"]  # on images the label family's share grows with the batch: 0.8 n / (n + 5)
        assert families["label shift"]["weight"] == pytest.approx(0.8 * n / (n + 5))
        assert families["covariate shift"]["weight"] == pytest.approx(1 - 0.8 * n / (n + 5))
        assert [s["name"] for s in families["covariate shift"]["statistics"]] == ["pixel mmd"]
        assert all(0 < f["p_value"] <= 1 for f in d["families"]) and out["n_test"] == d["test_rows"]
    else:
        assert out["embedder"].startswith("training-")  # the deployed model's own features


def test_agreement_estimate_is_the_share_agreeing_with_the_nearest_training_thumbnail(world):
    """The image classifier's label-free estimate, recomputed by hand: scikit-learn's cosine 1-NN over the
    training split's pixel thumbnails (validation samples excluded), agreement on the batch times
    accuracy / agreement on the validation split."""
    from sklearn.neighbors import NearestNeighbors

    from veml.lifecycle.estimate import REFERENCE_ROTATIONS, FittedAgreement, with_rotations

    before = count(world["root"])
    with veml.open(world["root"]) as repo:
        inode = repo.inference.get("tod-onnx")
        tnode = repo.training.get(inode.props["training"])
        fitted = repo.drift.estimates.fitted(inode, method="agreement")
        assert isinstance(fitted, FittedAgreement)
        data, held, split = repo.training.held_out(tnode)
        assert split == "validation" and len(fitted.agree) == len(held)
        ids, labels = repo.inference.class_labels(inode.id, data.id)
        _, _, td, _ = repo.inference.run(inode.id, data.id)  # the labels a prediction run reads: the same
        assert (td.data_ids == ids).all() and (td.labels == labels).all()
        train = ~np.isin(ids, held)
        copies = 1 + len(REFERENCE_ROTATIONS)  # each training thumbnail, and it rotated by each angle
        assert len(fitted.labels) == copies * train.sum() == copies * int(tnode.props["train_samples"])
        got, thumbs = repo.coresets.embeddings(data, "pixels")
        thumbs = thumbs[np.searchsorted(got, ids)]
        reference, reference_labels = with_rotations(thumbs[train], labels[train])
        nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(reference)

        def agreement(version):
            _, _, vtd, preds = repo.inference.run(inode.id, version)
            vgot, vthumbs = repo.coresets.embeddings(version, "pixels", ids=vtd.data_ids)
            vthumbs = vthumbs[np.searchsorted(vgot, vtd.data_ids)]
            neighbour = reference_labels[nn.kneighbors(vthumbs, return_distance=False)[:, 0]]
            return np.asarray(preds.scores).argmax(1) == neighbour

        est, why = repo.drift.estimates.estimate(inode.id, "shifted", method="agreement")
        assert why is None and est["method"] == "agreement-1nn-pixels"
        assert est["value"] == pytest.approx(min(1.0, agreement("shifted").mean() * fitted.ratio))
        assert 0 <= est["low"] <= est["value"] <= est["high"] <= 1
        auto = repo.drift.estimates.fitted(inode)  # agreement only where the validation split supports it
        assert isinstance(auto, FittedAgreement) == (fitted.ratio <= 1.1)
    assert count(world["root"]) == before  # estimating records nothing
    out = ok("drift", "--test", "shifted", "--inference", "tod-onnx", "--repo", world["root"])
    assert out["estimate"]["method"] == ("agreement-1nn-pixels" if fitted.ratio <= 1.1 else "atc-entropy")


def test_agreement_calibrates_on_the_test_version_when_no_validation_split_was_held_out(world):
    """A training evaluated on a test version holds out no validation split: the neighbours are then every training
    sample, and accuracy / agreement is measured on the test version."""
    from veml.lifecycle.estimate import FittedAgreement

    root = world["root"]
    run = ok("train", "--data", "reference", "--model", "tod", "--test", "same", *TINY, "--name", "tod-tested", "--repo", root)
    ok("deploy", run["id"], "--name", "tod-tested-onnx", "--repo", root)
    with veml.open(root) as repo:
        inode = repo.inference.get("tod-tested-onnx")
        assert repo.training.held_out(repo.training.get(run["id"]))[2] == "test"
        fitted = repo.drift.estimates.fitted(inode, method="agreement")
        assert isinstance(fitted, FittedAgreement)
        assert len(fitted.labels) == 3 * repo.data.get("reference").props["samples"] and len(fitted.agree) == 40


def test_detector_outputs_feed_black_box_shift_detection(world):
    out = ok("drift", "--test", "shifted", "--inference", "det-onnx", "--repo", world["root"])
    assert out["method"] == "bbsd" and out["details"]["features"] == 1 + 2 * 3


@pytest.mark.parametrize("args, needle", [
    (("--reference", "reference", "--test", "traffic"), "different modalities"),
    (("--reference", "reference", "--test", "nope"), "nope"),
    (("--test", "same"), "--reference"),
    (("--reference", "reference", "--test", "same", "--method", "bbsd"), "--inference"),
    (("--reference", "reference", "--test", "same", "--alpha", "1.5"), "alpha"),
])
def test_bad_drift_requests(world, args, needle):
    before = count(world["root"])
    assert_failed_cleanly(run_cli("drift", *args, "--repo", world["root"], "--json"), needle)
    assert count(world["root"]) == before


def test_a_test_version_too_small_names_the_minimum(world):
    root = world["root"]
    ok("data", "filter", "same", "--where", "file_name LIKE 'same-day_00000%'", "--name", "tiny", "--repo", root)
    before = count(root)
    assert_failed_cleanly(run_cli("drift", "--reference", "reference", "--test", "tiny", "--repo", root, "--json"),
                          "needs at least 10")
    assert count(root) == before


# --- rebuild ----------------------------------------------------------------------------------------------
def test_transfer_full_and_adapt_rebuilds_share_one_held_back_slice(world):
    root = world["root"]
    outs = {m: ok("rebuild", "--inference", "tod-onnx", "--test", "shifted", "--method", m, *TINY, "--repo", root)
            for m in ("transfer", "full", "adapt")}
    slices = {o["evaluated_on"] for o in outs.values()}
    assert len(slices) == 1 and None not in slices
    held = ok("data", "show", slices.pop(), "--repo", root)
    assert held["samples"] == 12 and held["role"] == "test"  # 30 % of 40
    for method, out in outs.items():
        assert out["status"] == "finished" and out["previous"]["metric"]["name"] == "accuracy"
        assert out["metric"]["value"] is not None and out["previous"]["metric"]["value"] is not None
        up = edges_into(root, out["inference"])
        assert any(e["kind"] == "REBUILD" and e["props"]["method"] == method and e["src"] == out["previous"]["inference"] for e in up)
        t_up = edges_into(root, out["training"])
        assert any(e["kind"] == "REBUILD" and e["src"] == out["previous"]["training"] for e in t_up)
    assert outs["adapt"]["labels_used"] == 0 and outs["transfer"]["labels_used"] == 28
    full_training = ok("train", "show", outs["full"]["training"], "--repo", root)
    # old + new data, from the previous weights
    assert full_training["train_samples"] > 28 and full_training["init_from"] == outs["full"]["previous"]["training"]
    assert outs["full"]["warm_start"] is True and outs["adapt"]["warm_start"] is False
    assert ok("train", "show", outs["adapt"]["training"], "--repo", root)["adapt"] == "adabn"


def test_active_learning_exports_then_accepts_labels(world, tmp_path):
    root, raw = world["root"], world["raw"]
    before = count(root)
    assert_failed_cleanly(run_cli("rebuild", "--inference", "det-onnx", "--test", "shifted", "--method", "active", "--repo", root,
                                  "--json"), "--export")
    labels = tmp_path / "labels.json"
    labels.write_text(raw["shifted"].read_text())
    assert_failed_cleanly(run_cli("rebuild", "--inference", "det-onnx", "--test", "shifted", "--method", "active", "--labels",
                                  labels, "--repo", root, "--json"), "--export DIR first")
    assert count(root) == before
    out_dir = tmp_path / "to-label"
    step1 = ok("rebuild", "--inference", "det-onnx", "--test", "shifted", "--method", "active", "--budget", "5",
               "--export", out_dir, "--repo", root)
    assert step1["status"] == "awaiting_labels" and step1["samples"] == 5
    exported = json.loads((out_dir / "annotations.json").read_text())
    assert len(exported["images"]) == 5 and exported["annotations"] == []
    assert len(list((out_dir / "images").iterdir())) == 5
    chosen = {im["file_name"] for im in exported["images"]}
    full = json.loads(raw["shifted"].read_text())
    ids = {im["id"] for im in full["images"] if im["file_name"] in chosen}
    partial = {**full, "images": [im for im in full["images"] if im["id"] in sorted(ids)[:3]]}
    partial["annotations"] = [a for a in full["annotations"] if a["image_id"] in {im["id"] for im in partial["images"]}]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    mid = count(root)
    assert_failed_cleanly(run_cli("rebuild", "--inference", "det-onnx", "--test", "shifted", "--method", "active", "--labels",
                                  tmp_path / "partial.json", "--repo", root, "--json"), "3 of the 5")
    assert count(root) == mid
    done = {**full, "images": [im for im in full["images"] if im["id"] in ids]}
    done["annotations"] = [a for a in full["annotations"] if a["image_id"] in ids]
    (tmp_path / "done.json").write_text(json.dumps(done))
    step2 = ok("rebuild", "--inference", "det-onnx", "--test", "shifted", "--method", "active", "--labels", tmp_path / "done.json",
               *TINY, "--repo", root)
    assert step2["status"] == "finished" and step2["labels_used"] == 5 and step2["metric"]["name"] == "map50"
    training = ok("train", "show", step2["training"], "--repo", root)
    trained_on = ok("data", "show", training["data"], "--repo", root)
    assert trained_on["samples"] == 5 and trained_on["annotations"] > 0
    assert any(e["kind"] == "UPDATE_ANNOTATION" for e in edges_into(root, trained_on["id"]))


def test_active_picks_samples_far_from_the_training_data(world):
    with veml.open(world["root"]) as r:
        rest = r.data.get("shifted-rest")
        pick = [n for n in r.lineage.query(rest.id, "down", 1).nodes if n.name.endswith("to-label")][0]
        _, pool = r.coresets.embeddings(rest)
        _, known = r.coresets.embeddings("reference")
        ids = r.data.checkout(rest).data_ids
        chosen = np.isin(ids, r.data.checkout(pick).data_ids)
        d = np.sqrt(((pool[:, None, :] - known[None, :, :]) ** 2).sum(-1)).min(1)
        assert d[chosen].mean() > d[~chosen].mean()  # the picks lie farther from what the model has seen


@pytest.mark.parametrize("args, needle", [
    (("--inference", "fc-onnx", "--test", "traffic", "--method", "adapt"), "batch-norm"),
    (("--inference", "det-onnx", "--test", "shifted", "--method", "adapt", "--adapt", "tent"), "use --adapt adabn"),
    (("--inference", "tod-onnx", "--test", "traffic", "--method", "full"), "image data"),
    (("--inference", "tod-onnx", "--test", "shifted", "--method", "active", "--export", "x"), "column 'time_of_day'"),
    (("--inference", "tod-onnx", "--test", "shifted", "--method", "transfer", "--holdout", "1.5"), "--holdout"),
    (("--inference", "nope", "--test", "shifted", "--method", "adapt"), "nope"),
])
def test_bad_rebuild_requests(world, args, needle):
    before = count(world["root"])
    assert_failed_cleanly(run_cli("rebuild", *args, "--repo", world["root"], "--json"), needle)
    assert count(world["root"]) == before


def test_full_rebuild_needs_labelled_new_data(world, tmp_path):
    root, raw = world["root"], world["raw"]
    doc = json.loads(raw["shifted"].read_text())
    for im in doc["images"]:
        im.pop("time_of_day", None)
    doc.pop("annotations")
    unlabelled = raw["shifted"].parent / "unlabelled.json"
    unlabelled.write_text(json.dumps(doc))
    ok("data", "import", "coco", unlabelled, "--images", images_dir(raw["shifted"]), "--name", "unlabelled", "--role", "test",
       "--repo", root)
    before = count(root)
    assert_failed_cleanly(run_cli("rebuild", "--inference", "tod-onnx", "--test", "unlabelled", "--method", "full", "--repo", root,
                                  "--json"), "no labels")
    assert count(root) == before
    adapted = ok("rebuild", "--inference", "tod-onnx", "--test", "unlabelled", "--method", "adapt", "--repo", root)
    assert adapted["evaluated_on"] is None and adapted["labels_used"] == 0  # nothing labelled to evaluate on


# --- monitoring -------------------------------------------------------------------------------------------
def _merged_batch(dest, *cocos):
    """One COCO batch directory from several generated ones (ids renumbered, images copied)."""
    (dest / "images").mkdir(parents=True)
    out = {"images": [], "annotations": [], "categories": None}
    for coco in cocos:
        doc = json.loads(coco.read_text())
        offset = len(out["images"]) * 1000
        out["categories"] = doc["categories"]
        out["images"] += [{**im, "id": im["id"] + offset} for im in doc["images"]]
        out["annotations"] += [{**a, "id": a["id"] + offset * 100, "image_id": a["image_id"] + offset} for a in doc["annotations"]]
        for f in images_dir(coco).iterdir():
            shutil.copy(f, dest / "images" / f.name)
    (dest / "annotations.json").write_text(json.dumps(out))

def test_monitor_checks_each_batch_and_rebuilds_once_per_cooldown(world, tmp_path):
    root, raw = world["root"], world["raw"]
    watch = tmp_path / "incoming"
    watch.mkdir()
    for name, src in (("b2-fog", raw["shifted"]), ("b3-fog", raw["shifted"])):
        shutil.copytree(src.parent, watch / name)
    _merged_batch(watch / "b1-same", raw["same-day"], raw["same-dusk"])  # day and dusk, like the reference
    (watch / "b4-partial").mkdir()  # no annotations.json yet: not ready
    out = ok("monitor", "--inference", "tod-onnx", "--watch", watch, "--reference", "reference", "--method", "mmd",
             "--rebuild", "adapt", "--once", "--repo", root)["batches"]
    assert [b["drift"] for b in out] == [False, True, True]
    assert [b["decision"] for b in out] == [None, "drift", "drift"]
    assert "rebuild" not in out[0]
    assert out[1]["rebuild"]["status"] == "finished" and out[1]["rebuild"]["method"] == "adapt"
    assert "cooldown" in out[2]["rebuild"]["skipped"]
    assert out[2]["inference"] == out[1]["rebuild"]["inference"]  # later batches go against the rebuilt deployment
    again = ok("monitor", "--inference", "tod-onnx", "--watch", watch, "--once", "--repo", root)
    assert again["batches"] == []  # a restarted monitor skips what it has seen
    assert_failed_cleanly(run_cli("monitor", "--inference", "tod-onnx", "--watch", tmp_path / "none", "--once", "--repo", root,
                                  "--json"), "not a directory")


# --- calibration on real digits (issue 15): the model's outputs are compared with held-out outputs ------
def _digits_csv(path, rows, images, labels):
    cols = [f"p{i}" for i in range(images.shape[1])]
    lines = [",".join(cols + ["digit"])] + [",".join(f"{v:g}" for v in images[r]) + f",{labels[r]}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Real handwritten digits (scikit-learn's bundled set) as a table; a logistic regression deployed twice:
    trained with a validation split, and with none (what every training recorded before issue 15)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    base = tmp_path_factory.mktemp("digits")
    root = base / "repo"
    repo = veml.init(root)
    repo.data.import_("table", _digits_csv(base / "train.csv", order[:900], d.data, d.target), "digits", label="digit")
    for b in range(6):  # unshifted batches of 100 the model never saw
        rows = order[900 + 100 * b: 1000 + 100 * b]
        repo.data.import_("table", _digits_csv(base / f"b{b}.csv", rows, d.data, d.target), f"batch{b}", label="digit",
                          role="test")
    faded = d.data * (np.random.default_rng(1).random(d.data.shape) > 0.5)  # a shift that harms: half the ink lost
    repo.data.import_("table", _digits_csv(base / "faded.csv", order[1500:1600], faded, d.target), "faded",
                      label="digit", role="test")
    repo.models.add("lr", {"adapter": "sklearn", "task": "tabular-classification", "architecture": "logistic_regression"})
    held = repo.training.train("digits", "lr", name="lr-held")
    seen = repo.training.train("digits", "lr", sets={"val_fraction": 0.0}, name="lr-seen")
    repo.inference.deploy(held["id"], "skops", name="lr-held-skops")
    repo.inference.deploy(seen["id"], "skops", name="lr-seen-skops")
    repo.close()
    return {"root": root, "validation": held["validation_samples"]}


def test_black_box_reference_is_the_validation_split(digits):
    root = digits["root"]
    reports = [ok("drift", "--inference", "lr-held-skops", "--test", f"batch{b}", "--repo", root) for b in range(2)]
    for r in reports:
        assert r["method"] == "bbsd" and r["reference_split"] == "validation" and "warning" not in r
        assert r["n_reference"] == digits["validation"] == 180  # 20 % of 900, not the 720 samples it trained on
    text = run_cli("drift", "--inference", "lr-held-skops", "--test", "batch0", "--repo", root)
    assert text.code == 0 and "validation split, 180 samples" in text.out


def test_a_training_without_a_held_out_split_falls_back_and_says_so(digits):
    out = ok("drift", "--inference", "lr-seen-skops", "--test", "batch0", "--repo", digits["root"])
    assert out["reference_split"] == "training" and out["n_reference"] == 900
    assert "lr-seen" in out["warning"] and "too often" in out["warning"]
    assert out["estimate"] is None and "no held-out split" in out["estimate_reason"]


def test_drift_estimates_the_deployed_models_accuracy_without_labels(digits):
    root = digits["root"]
    same = ok("drift", "--inference", "lr-held-skops", "--test", "batch0", "--repo", root)
    faded = ok("drift", "--inference", "lr-held-skops", "--test", "faded", "--repo", root)
    assert {"drift", "p_value", "statistic", "method"} <= set(same)  # the existing keys stay
    for r in (same, faded):
        e = r["estimate"]
        assert e["metric"] == "accuracy" and 0 <= e["low"] <= e["value"] <= e["high"] <= 1
    assert faded["drift"] and faded["estimate"]["value"] < same["estimate"]["value"]
    text = run_cli("drift", "--inference", "lr-held-skops", "--test", "batch0", "--repo", root)
    assert "estimated accuracy on the batch" in text.out
    assert_failed_cleanly(run_cli("drift", "--inference", "lr-held-skops", "--test", "nope", "--repo", root, "--json"), "nope")


def test_monitor_decides_on_drift_or_a_confident_estimated_drop():
    from veml.lifecycle.monitor import decide

    est = {"metric": "accuracy", "value": 0.80, "low": 0.74, "high": 0.86, "reference_value": 0.95}
    assert decide(True, None, 0.05) == "drift"
    assert decide(False, est, 0.05) == "estimated drop"  # 0.95 - 0.86 >= 0.05: harm the test did not see
    assert decide(False, {**est, "high": 0.93}, 0.05) is None  # within the interval: no evidence of harm
    # a held-out accuracy of 0.70 on 20 samples (95 % lower bound 0.46) is no yardstick for a drop to 0.625
    assert decide(False, {**est, "high": 0.625, "reference_value": 0.70, "reference_low": 0.457}, 0.05) is None
    assert decide(False, {**est, "reference_low": 0.92}, 0.05) == "estimated drop"
    assert decide(False, None, 0.05) is None
