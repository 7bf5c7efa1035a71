"""Transfer's own fine-tuning recipe (issue 14): head first, warm-up, keep the better, heads matched by class name.

Real handwriting (scikit-learn's bundled digits) as small image folders; resnet18 from scratch at 32x32.
Each test reads the stored checkpoints back and checks what the recipe promises about them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import veml
from conftest import assert_failed_cleanly, images_dir, ok, run_cli
from veml.coreset.typical import typical_clusters
from veml.datasets import Domain, generate_driving_coco
from veml.lifecycle import rebuild as rebuild_module
from veml.versions.keep_better import SCRATCH_REASON, SCRATCH_REASON_UNCOMPARED, beats_chance, chance_rate

MODEL = {"adapter": "torch", "task": "classification", "architecture": "resnet18",
         "parameters": {"image_size": 32, "pretrained": False}}


def _folder(out, classes, per_class, offset, rotate=0.0, relabel=None):
    """Digits ``classes`` as an image folder; ``relabel`` files each digit's images under another class's name."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        name = f"digit{(relabel or {}).get(c, c)}"
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(d.target == c)[offset:offset + per_class]:
            img = Image.fromarray((d.images[i] / 16 * 255).astype(np.uint8)).resize((32, 32)).rotate(rotate)
            img.convert("RGB").save(out / name / f"{i}.png")
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe")
    repo = veml.init(base / "repo")
    repo.data.import_("images", _folder(base / "src", (0, 1, 2), 25, 0), "digits-src")
    repo.data.import_("images", _folder(base / "tgt", (0, 1, 2), 12, 30, rotate=20), "digits-tgt")
    repo.data.import_("images", _folder(base / "tgt-test", (0, 1, 2), 10, 45, rotate=20), "digits-tgt-test", role="test")
    repo.data.import_("images", _folder(base / "tgt-shifted", (1, 2, 3), 12, 30, rotate=20), "digits-123")
    ann = generate_driving_coco(base / "scenes", 6, seed=0, domain=Domain(), file_prefix="s")
    repo.data.import_("coco", ann, "scenes-boxes", images=images_dir(ann))
    repo.models.add("digits-net", MODEL)
    run = repo.training.train("digits-src", "digits-net", sets={"epochs": 2, "batch_size": 16}, name="src-train")
    repo.inference.deploy(run["id"], "onnx", "none", name="src-onnx")
    repo.close()
    return base / "repo"


def _state(root, training):
    with veml.open(root) as repo:
        blob = repo.training.checkpoint(repo.training.get(training))
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def test_head_epochs_train_only_the_head(root):
    ok("train", "--data", "digits-tgt", "--model", "digits-net", "--init-from", "src-train", "--name", "probe",
       "--set", "epochs=1", "--set", "head_epochs=1", "--set", "lr=0.01", "--set", "precise_bn=false", "--repo", root)
    src, probe = _state(root, "src-train")["state_dict"], _state(root, "probe")["state_dict"]
    changed = {k for k in src if not torch.equal(src[k], probe[k])}
    assert changed and {k.rsplit(".", 1)[0] for k in changed if "running" not in k and "num_batches" not in k} == {"fc"}


def test_a_warm_up_starts_below_the_learning_rate(root):
    """With a long warm-up and one step, the step is taken at lr/warmup_steps: far smaller than without."""
    sets = ["--set", "epochs=1", "--set", "max_steps=1", "--set", "lr=0.05", "--set", "precise_bn=false"]
    ok("train", "--data", "digits-tgt", "--model", "digits-net", "--init-from", "src-train", "--name", "no-warmup",
       *sets, "--repo", root)
    ok("train", "--data", "digits-tgt", "--model", "digits-net", "--init-from", "src-train", "--name", "warmup",
       *sets, "--set", "warmup_steps=1000", "--repo", root)
    src = _state(root, "src-train")["state_dict"]
    moved = {n: sum(float((_state(root, n)["state_dict"][k] - src[k]).abs().sum()) for k in src if k.endswith("weight"))
             for n in ("no-warmup", "warmup")}
    assert 0 < moved["warmup"] < moved["no-warmup"] / 20


def test_heads_are_matched_to_classes_by_name(root):
    """digits 1, 2, 3 from a source of 0, 1, 2: rows 1 and 2 move to their new places, 3 starts fresh."""
    ok("train", "--data", "digits-123", "--model", "digits-net", "--init-from", "src-train", "--name", "renamed",
       "--set", "epochs=1", "--set", "lr=0", "--set", "weight_decay=0", "--set", "precise_bn=false", "--repo", root)
    src, new = _state(root, "src-train"), _state(root, "renamed")
    assert src["meta"]["class_names"] == ["digit0", "digit1", "digit2"]
    assert new["meta"]["class_names"] == ["digit1", "digit2", "digit3"]
    w0, w1 = src["state_dict"]["fc.weight"], new["state_dict"]["fc.weight"]
    assert torch.equal(w1[0], w0[1]) and torch.equal(w1[1], w0[2])
    assert not any(torch.equal(w1[2], w0[i]) for i in range(3))


def _kept_consistently(root, out, source="src-train"):
    sel = out["selection"]
    assert sel["split"] == "validation" and sel["samples"] > 0 and sel["metric"] == "accuracy"
    assert sel["init"] is not None and sel["trained"] is not None
    first = "init" if sel["init"] > sel["trained"] else "trained"
    if sel["kept"] == "scratch":  # the from-scratch fallback tried, and better than both on validation
        assert sel["scratch"] > sel[first] and sel["reason"] == SCRATCH_REASON
    else:
        assert sel["kept"] == first
    assert out["kept"] == {"init": "source", "trained": "fine-tuned", "scratch": "scratch"}[sel["kept"]]
    same = torch.equal(_state(root, out["training"])["state_dict"]["fc.weight"],
                       _state(root, source)["state_dict"]["fc.weight"])
    assert same == (sel["kept"] == "init")


def test_transfer_keeps_the_better_of_fine_tuned_and_source(root):
    out = ok("transfer", "digits-tgt", "--from", "digits-src", "--test", "digits-tgt-test", "--name", "tr-default", "--repo", root)
    assert out["params"]["keep_better"] is True and out["params"]["warmup_steps"] == 10
    # ceil(2/3) epochs at a tenth of the learning rate; no head-only epoch: every head row was trained on the source
    assert out["params"]["lr"] == pytest.approx(1e-4) and out["params"]["epochs"] == 1 and out["params"]["head_epochs"] == 0
    assert out["head"] == {"reused": 3, "new": [], "dropped": []}
    _kept_consistently(root, out)
    training = ok("train", "show", out["training"], "--repo", root)
    assert training["selection"] == out["selection"] and training["test"] is not None  # metrics on the test version
    # a recipe that wrecks the weights: the source is kept, and said so
    bad = ok("transfer", "digits-tgt", "--from", "digits-src", "--test", "digits-tgt-test", "--name", "tr-wreck",
             "--set", "lr=0.5", "--set", "head_epochs=0", "--set", "warmup_steps=0", "--set", "optimizer=sgd", "--repo", root)
    _kept_consistently(root, bad)


def test_a_source_no_fine_tuning_rescues_gives_way_to_a_model_trained_from_scratch(root, tmp_path):
    """A source whose classes are swapped (each digit filed under the next one's name) is wrong on the target, and a
    fine-tuning that cannot move (lr 0) leaves it so: below guessing on validation.  Transfer then trains the model
    from its own starting weights with the source's recipe (5 epochs at lr 1e-3, not the fine-tuning's 0) and keeps
    that model, said so; with scratch_fallback=false it does not."""
    with veml.open(root) as repo:
        repo.data.import_("images", _folder(tmp_path / "swapped", (0, 1, 2), 25, 0, relabel={0: 1, 1: 2, 2: 0}),
                          "digits-swapped")
        repo.data.import_("images", _folder(tmp_path / "big", (0, 1, 2), 40, 70, rotate=20), "digits-tgt-big")
        run = repo.training.train("digits-swapped", "digits-net", sets={"epochs": 5, "batch_size": 16}, name="swapped-train")
        repo.inference.deploy(run["id"], "onnx", "none", name="swapped-onnx")
    common = ("transfer", "digits-tgt-big", "--from", "digits-swapped", "--test", "digits-tgt-test", "--set", "lr=0")
    out = ok(*common, "--name", "tr-rescued", "--repo", root)
    sel = out["selection"]
    assert out["kept"] == "scratch", sel
    _kept_consistently(root, out, source="swapped-train")
    with veml.open(root) as repo:  # the figures the choice rests on, recomputed from the stored versions
        node = repo.training.get(out["training"])
        data, ids, kind = repo.training.held_out(node)
        _, _, td, _ = repo.inference.run("swapped-onnx", data.name, data_ids=ids)
        chance = chance_rate(td)
    assert kind == "validation" and chance[0] == sel["samples"]
    assert not beats_chance(max(sel["init"], sel["trained"]), chance) and beats_chance(sel["scratch"], chance)
    assert out["train_s"] >= sel["scratch_train_s"] > 0
    assert not torch.equal(_state(root, out["training"])["state_dict"]["fc.weight"],
                           _state(root, "swapped-train")["state_dict"]["fc.weight"])
    text = run_cli(*common, "--name", "tr-rescued-text", "--repo", root)
    assert text.code == 0 and "kept:   scratch (neither the fine-tuned nor the starting model" in text.out, text.err
    off = ok(*common, "--set", "scratch_fallback=false", "--name", "tr-no-fallback", "--repo", root)
    assert off["kept"] != "scratch" and "scratch" not in off["selection"] and off["params"]["scratch_fallback"] is False


def test_a_source_with_other_classes_is_not_compared_but_its_head_is_matched(root):
    # (the from-scratch fallback off: on 7 validation samples it may replace the fine-tuning, which is not the point here)
    out = ok("transfer", "digits-123", "--from", "digits-src", "--name", "tr-123", "--set", "scratch_fallback=false",
             "--repo", root)
    assert out["head"] == {"reused": 2, "new": ["digit3"], "dropped": ["digit0"]}
    assert out["params"]["head_epochs"] == 1 and out["params"]["epochs"] == 2  # a fresh head row: the head goes first
    assert out["kept"] == "fine-tuned" and "other classes" in out["selection"]["reason"]
    assert out["selection"]["init"] is None
    # with the fallback on, a scratch model that wins says the starting model was never compared
    on = ok("transfer", "digits-123", "--from", "digits-src", "--name", "tr-123-fallback", "--repo", root)
    assert on["selection"]["init"] is None and on["kept"] in ("fine-tuned", "scratch")
    if on["kept"] == "scratch":
        assert on["selection"]["reason"] == SCRATCH_REASON_UNCOMPARED and on["selection"]["scratch"] > on["selection"]["trained"]


def _count(root) -> int:
    with veml.open(root) as r:
        return r.stores.graph.count()


@pytest.mark.parametrize("args, needle", [
    (("transfer", "scenes-boxes", "--from", "digits-src"), "learns from class labels"),
    (("transfer", "digits-tgt", "--from", "digits-src", "--set", "val_fraction=0"), "validation split"),
    (("transfer", "digits-tgt", "--from", "digits-src", "--set", "scratch_fallback=maybe"), "must be a boolean"),
    (("train", "--data", "digits-tgt", "--model", "digits-net", "--set", "head_epochs=-1"), "head_epochs"),
    (("train", "--data", "digits-tgt", "--model", "digits-net", "--set", "warmup_steps=x"), "warmup_steps"),
])
def test_bad_transfer_requests_fail_cleanly_and_record_nothing(root, args, needle):
    before = _count(root)
    assert_failed_cleanly(run_cli(*args, "--repo", root, "--json"), needle)
    assert _count(root) == before


def test_a_target_too_small_to_hold_out_a_validation_split_is_refused_with_the_reason(root, tmp_path):
    with veml.open(root) as repo:  # 4 images: keep-better has nothing to compare the two models on
        repo.data.import_("images", _folder(tmp_path / "tiny", (0, 1), 2, 60), "digits-tiny")
    before = _count(root)
    for source in (["--from", "digits-src"], []):  # named, or chosen by the ranking (which records nothing either)
        assert_failed_cleanly(run_cli("transfer", "digits-tiny", *source, "--repo", root, "--json"),
                              "its 4 samples are too few to hold one out")
        assert _count(root) == before


@pytest.mark.parametrize("method", ["leep", "logme", "hscore", "knn_probe"])
def test_similar_scores_each_lifecycle_model_on_the_targets_labels(root, method):
    out = ok("similar", "digits-tgt", "--method", method, "--repo", root)
    assert out["method"] == method and out["ranking"], out
    scores = [r["score"] for r in out["ranking"]]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    assert all(r["distance"] == -r["score"] and "lifecycle" in r for r in out["ranking"])
    assert "digits-src" in [r["name"] for r in out["ranking"]]
    text = run_cli("similar", "digits-tgt", "--method", method, "--repo", root)
    assert text.code == 0 and "score " in text.out, text.err


def test_as_is_scores_a_classifier_by_its_accuracy_on_the_targets_core_set(root):
    out = ok("similar", "digits-tgt", "--method", "as_is", "--repo", root)
    row = next(r for r in out["ranking"] if r["name"] == "digits-src")
    with veml.open(root) as repo:  # 36 samples: the core set is all of them
        _, _, td, preds = repo.inference.run("src-onnx", "digits-tgt")
        accuracy = float((np.asarray(preds.scores).argmax(1) == td.labels).mean())
    assert row["score"] == pytest.approx(accuracy) and row["distance"] == pytest.approx(-accuracy)


def test_finetune_probe_scores_a_classifier_by_what_transfer_keeps_on_its_held_out_split(root):
    out = ok("similar", "digits-tgt", "--method", "finetune_probe", "--repo", root)
    row = next(r for r in out["ranking"] if r["name"] == "digits-src")
    with veml.open(root) as repo:
        before = len(repo.training.list())
    # the same fine-tuning, recorded (36 samples: the core set is all of them): keep-better's comparison on its
    # seeded validation split is the probe's score, for the model it kept
    t = ok("transfer", "digits-tgt", "--from", "digits-src", "--name", "tr-probe-check", "--repo", root)
    with veml.open(root) as repo:
        assert len(repo.training.list()) == before + 1  # the ranking recorded none; the transfer one
    sel = t["selection"]
    kept = sel["init"] if t["kept"] == "source" else sel["trained"]
    assert sel["metric"] == "accuracy" and row["score"] == pytest.approx(kept, abs=1e-6)
    assert row["distance"] == pytest.approx(-kept, abs=1e-6)


def test_estimate_scores_each_lifecycle_by_its_accuracy_estimated_without_the_targets_labels(root, tmp_path):
    """``estimate``: the deployment's accuracy on the target's core set as issue 15's label-free estimator gives it
    (fitted on the source's own held-out split); it ranks lifecycles for a target nobody has labelled."""
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for png in sorted(_folder(tmp_path / "tgt", (0, 1, 2), 12, 30, rotate=20).rglob("*.png")):
        png.rename(flat / f"{png.parent.name}-{png.name}")  # digits-tgt's images without class folders: no labels
    with veml.open(root) as repo:
        repo.data.import_("images", flat, "digits-unlabelled", role="unlabeled")
        before = (len(repo.training.list()), len(repo.inference.list()))
    out = ok("similar", "digits-unlabelled", "--method", "estimate", "--repo", root)
    assert out["method"] == "estimate" and out["ranking"]
    row = next(r for r in out["ranking"] if r["name"] == "digits-src")
    with veml.open(root) as repo:  # 36 samples: the core set is all of them
        est, why = repo.drift.estimates.estimate("src-onnx", "digits-unlabelled")
        assert (len(repo.training.list()), len(repo.inference.list())) == before  # nothing trained, nothing deployed
    assert why is None and est["metric"] == "accuracy"
    assert row["score"] == pytest.approx(est["value"]) and row["distance"] == pytest.approx(-est["value"])
    # the scores that read labels cannot rank the same target, and say why
    assert_failed_cleanly(run_cli("similar", "digits-unlabelled", "--method", "leep", "--repo", root, "--json"),
                          "need class labels")
    as_is = ok("similar", "digits-unlabelled", "--method", "as_is", "--repo", root)
    assert as_is["ranking"] == [] and all("has none" in s["reason"] for s in as_is["skipped"])
    labelled = ok("similar", "digits-tgt", "--method", "estimate", "--repo", root)  # labels there are not read
    assert next(r for r in labelled["ranking"] if r["name"] == "digits-src")["score"] == pytest.approx(row["score"])
    # the default for lifecycles on images without annotations (BENCHMARKS.md, issue 14: label-free)
    default = ok("similar", "digits-unlabelled", "--with-lifecycle", "--repo", root)
    assert default["method"] == "estimate" and [r["name"] for r in default["ranking"]] == [r["name"] for r in out["ranking"]]
    assert ok("similar", "digits-unlabelled", "--repo", root)["method"] == "mean_pairwise"  # data versions alone


def test_the_label_free_default_falls_back_to_the_data_distance_when_it_can_estimate_no_candidate(tmp_path):
    repo = veml.init(tmp_path / "repo")
    repo.data.import_("images", _folder(tmp_path / "src", (0, 1), 10, 0), "src")
    flat = tmp_path / "flat"
    flat.mkdir()
    for png in _folder(tmp_path / "tgt", (0, 1), 5, 20).rglob("*.png"):
        png.rename(flat / png.name)
    repo.data.import_("images", flat, "unlabelled", role="unlabeled")
    repo.models.add("net", MODEL)
    run = repo.training.train("src", "net", sets={"epochs": 1, "batch_size": 8, "val_fraction": 0}, name="no-held-out")
    repo.inference.deploy(run["id"], "onnx", "none", name="no-held-out-onnx")
    named = repo.similarity.rank("unlabelled", method="estimate", with_lifecycle=True)  # no held-out split to fit on
    assert named["ranking"] == [] and "no held-out split" in named["skipped"][0]["reason"]
    out = repo.similarity.rank("unlabelled", with_lifecycle=True)
    assert out["method"] == "mean_pairwise" and [r["name"] for r in out["ranking"]] == ["src"]
    repo.close()


def test_the_ensemble_ranks_a_target_too_small_for_the_probe_by_its_other_scores(root, tmp_path):
    with veml.open(root) as repo:  # 4 images: keep-better cannot hold any out, so finetune_probe cannot score them
        repo.data.import_("images", _folder(tmp_path / "four", (0, 1), 2, 70), "digits-four")
    out = ok("similar", "digits-four", "--with-lifecycle", "--repo", root)
    assert out["method"] == "ensemble" and out["ranking"] and not out["skipped"]
    assert all(row["scores"]["finetune_probe"] is None for row in out["ranking"])
    from veml.lifecycle.model_scores import mean_ranks

    three = mean_ranks([row["scores"] for row in out["ranking"]], ("logme", "leep", "knn_probe"))
    assert np.argsort(three, kind="stable").tolist() == list(range(len(three)))  # the order the three scores give
    text = run_cli("similar", "digits-four", "--with-lifecycle", "--repo", root)  # the text form says the probe is n/a
    assert text.code == 0 and "finetune_probe n/a" in text.out and "Traceback" not in text.err, text.err
    alone = ok("similar", "digits-four", "--method", "finetune_probe", "--repo", root)  # named alone: it says why
    assert alone["ranking"] == [] and all("too few to hold any out" in s["reason"] for s in alone["skipped"])


def test_lifecycles_are_ranked_by_the_score_ensemble_by_default_on_labelled_images(root):
    """The default of the harness (BENCHMARKS.md, issue 14) is used where it applies, and only there."""
    out = ok("similar", "digits-tgt", "--with-lifecycle", "--repo", root)
    assert out["method"] == "ensemble" and all("score" in r and "lifecycle" in r for r in out["ranking"])
    methods = ("logme", "leep", "knn_probe", "finetune_probe")
    singles = {m: ok("similar", "digits-tgt", "--method", m, "--repo", root)["ranking"] for m in methods}
    assert all(set(row["scores"]) == set(methods) for row in out["ranking"])
    # each candidate's four scores, as each method alone reports them; distance = its mean rank (ties share theirs)
    from scipy.stats import rankdata

    rank_of = {m: dict(zip([r["id"] for r in ranked], rankdata([-r["score"] for r in ranked]))) for m, ranked in singles.items()}
    for row in out["ranking"]:
        for m, ranked in singles.items():
            mine = next(r for r in ranked if r["id"] == row["id"])
            assert row["scores"][m] == pytest.approx(mine["score"])
        ranks = [rank_of[m][row["id"]] for m in methods]
        assert row["distance"] == pytest.approx(np.mean(ranks)) and row["score"] == -row["distance"]
    assert [r["distance"] for r in out["ranking"]] == sorted(r["distance"] for r in out["ranking"])
    text = run_cli("similar", "digits-tgt", "--with-lifecycle", "--repo", root)
    assert text.code == 0 and "mean rank " in text.out and "logme " in text.out and "knn_probe " in text.out, text.err
    assert ok("similar", "digits-tgt", "--repo", root)["method"] == "mean_pairwise"  # data versions: the data distance
    assert ok("similar", "scenes-boxes", "--with-lifecycle", "--repo", root)["method"] == "mean_pairwise"  # no class labels
    auto = ok("transfer", "digits-tgt", "--name", "tr-auto", "--set", "epochs=1", "--repo", root)
    assert auto["method"] == "ensemble" and auto["report"] is not None and auto["distance"] >= 1  # a mean rank
    explicit = ok("transfer", "digits-tgt", "--from", "digits-src", "--method", "mmd", "--name", "tr-mmd", "--set", "epochs=1",
                  "--repo", root)
    assert explicit["method"] == "mmd" and explicit["distance"] >= 0


def test_model_based_scores_match_the_pure_functions(root):
    """LEEP through `veml similar` equals LEEP computed here from the deployment's outputs on the target's core set."""
    from veml.coreset import transferability as TR

    out = ok("similar", "digits-tgt", "--method", "leep", "--repo", root)
    row = [r for r in out["ranking"] if r["name"] == "digits-src"][0]
    with veml.open(root) as repo:
        core = repo.coresets.coreset("digits-tgt")
        ids = np.asarray(core.props["ids"], np.int64)
        _, y = np.unique(np.asarray(core.props["labels"]), return_inverse=True)
        _, _, td, preds = repo.inference.run("src-onnx", "digits-tgt")
        pos = {int(d): i for i, d in enumerate(td.data_ids)}
        expected = TR.leep(preds.scores[[pos[int(d)] for d in ids]], y)
    assert row["score"] == pytest.approx(expected, rel=1e-5)
    assert json.dumps(out)  # plain JSON


def test_a_lone_last_sample_joins_the_batch_before_it(root):
    """36 samples in batches of 5 leave one over: MobileNetV3's BatchNorm cannot train (or re-estimate) on a batch of one."""
    with veml.open(root) as repo:
        repo.models.add("digits-mb", {**MODEL, "architecture": "mobilenet_v3_small"})
    run = ok("train", "--data", "digits-tgt", "--model", "digits-mb", "--set", "epochs=1", "--set", "batch_size=5",
             "--set", "val_fraction=0", "--repo", root)
    assert run["status"] == "finished" and run["profile"]["samples"] == 36 and run["profile"]["precise_bn_s"] > 0


# --- rebuilds of a classifier (issue 15 part 4): the same fine-tuning recipe, active learning in the model's
# own feature space, and label-free adaptation of the model's own batch-norm layers ---------------------
def test_a_transfer_rebuild_fine_tunes_with_transfers_recipe(root):
    out = ok("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "transfer", "--name", "rb-transfer",
             "--repo", root)
    params = ok("train", "show", out["training"], "--repo", root)["params"]
    assert params["keep_better"] is True and params["lr"] == pytest.approx(1e-4) and params["epochs"] == 1
    assert out["evidence"]["task"] == "classification" and out["evidence"]["status"] == "met"  # what BENCHMARKS.md measured
    full = ok("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "full", "--name", "rb-full",
              "--repo", root)
    shown = ok("train", "show", full["training"], "--repo", root)
    assert shown["params"]["epochs"] == 2 and shown["init_from"] == full["previous"]["training"]  # the old recipe, warm
    scratch = ok("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "full", "--scratch",
                 "--name", "rb-full-scratch", "--repo", root)
    assert scratch["warm_start"] is False and ok("train", "show", scratch["training"], "--repo", root)["init_from"] is None
    before = _count(root)
    assert_failed_cleanly(run_cli("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "transfer",
                                  "--scratch", "--repo", root, "--json"), "--scratch applies to --method full only")
    assert _count(root) == before


def _rest_of(repo, selection):
    return next(n for n in repo.lineage.query(selection, "up", 1).nodes if n.kind == "DataVersion" and n.id != selection)


def test_active_learning_at_a_few_labels_per_class_asks_for_typical_samples(root, tmp_path):
    """4 labels for 3 classes (< LOW_BUDGET_PER_CLASS per class): the most typical sample of each of 4 clusters of the
    deployed model's own features, not its least certain ones."""
    out = ok("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "active", "--budget", "4",
             "--export", tmp_path / "to-label", "--repo", root)
    assert out["status"] == "awaiting_labels" and out["samples"] == 4
    with veml.open(root) as repo:
        chosen = repo.data.checkout(out["selection"]).data_ids
        rest = _rest_of(repo, out["selection"])
        ids = repo.data.checkout(rest.id).data_ids
        fid, feats = repo.coresets.embeddings(rest.id, "training:src-train")
    order = {int(d): i for i, d in enumerate(fid)}
    f = feats[[order[int(d)] for d in ids]].astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    assert sorted(chosen.tolist()) == sorted(ids[typical_clusters(f, 4)].tolist())


def test_active_learning_at_larger_budgets_asks_for_the_least_certain_samples(root, tmp_path, monkeypatch):
    monkeypatch.setattr(rebuild_module, "LOW_BUDGET_PER_CLASS", 1)  # 4 labels for 3 classes is "large" now
    # (seed 1: another split than the test above, whose selection would otherwise be found and reused)
    with veml.open(root) as repo:
        out = repo.rebuild.rebuild("src-onnx", "digits-tgt", "active", budget=4, export=tmp_path / "to-label", seed=1,
                                   name="rb-uncertain")
        chosen = repo.data.checkout(out["selection"]).data_ids
        _, _, td, preds = repo.inference.run("src-onnx", _rest_of(repo, out["selection"]).id)
    top2 = np.sort(np.asarray(preds.scores), axis=1)[:, -2:]
    margin = dict(zip(td.data_ids.tolist(), top2[:, 1] - top2[:, 0]))
    ranked = sorted(margin, key=margin.get)
    assert ranked[0] in chosen  # the least certain sample is always asked for
    assert set(chosen.tolist()) <= set(ranked[:(len(ranked) + 1) // 2])  # the rest come from the least certain half
    assert np.mean([margin[d] for d in chosen]) < np.mean(list(margin.values()))


@pytest.mark.parametrize("how", ["adabn", "tent"])
def test_label_free_adaptation_moves_only_the_batch_norm_layers(root, how):
    out = ok("rebuild", "--inference", "src-onnx", "--test", "digits-tgt", "--method", "adapt", "--adapt", how,
             "--name", f"rb-{how}", "--repo", root)
    assert out["status"] == "finished" and out["labels_used"] == 0
    src, new = _state(root, "src-train")["state_dict"], _state(root, out["training"])["state_dict"]
    changed = {k for k in src if not torch.equal(src[k], new[k])}
    bn = {k for k in src if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
          or ("bn" in k or "downsample.1" in k)}
    assert changed and changed <= bn  # convolutions and the head are untouched
    affine = {k for k in changed if k.endswith((".weight", ".bias"))}
    assert bool(affine) == (how == "tent")  # only tent trains the BN scale and shift


def test_fine_tuning_on_a_labelling_budget_uses_every_label_for_enough_steps():
    from veml.lifecycle.finetune_recipe import MIN_FINETUNE_STEPS, few_label_params

    params = {"epochs": 2, "batch_size": 16, "val_fraction": 0.2, "lr": 1e-4, "keep_better": True}
    raised = few_label_params(params, 30, None)  # 6 validation samples: keep-better off, all 30 train (2 steps/epoch)
    assert raised["keep_better"] is False and raised["lr"] == params["lr"]
    assert raised["epochs"] * 2 >= MIN_FINETUNE_STEPS > (raised["epochs"] - 1) * 2
    kept = few_label_params(params, 30, ["keep_better=true"])  # the caller's choice stands: 24 train, still 2 steps/epoch
    assert kept["keep_better"] is True and kept["epochs"] == raised["epochs"]
    assert few_label_params(params, 30, ["epochs=3"])["epochs"] == 2  # the caller's epochs are the caller's
    assert few_label_params(params, 5000, None) == params  # enough labels: the recipe as it is
    assert few_label_params({"C": 1.0}, 30, None) == {"C": 1.0}  # no batches, no steps to count
