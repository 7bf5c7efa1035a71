"""``veml demo``: the self-driving walk-through on generated data (DESIGN.md section 9).

It builds a fresh repository from generated driving scenes of several domains and a generated
traffic-sensor network, versions them (import, filter, merge, add, prepare, tag) and returns a
summary of what was built and where to look.  Later stages of the paper's story (similarity,
transfer, drift, rebuild) join this walk-through as those modules land: a new driving dataset
arrives, ``similar`` ranks the stored ones and ``transfer`` builds its lifecycle from the nearest.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from veml.datasets import Domain, TrafficData, generate_driving_coco, generate_traffic, write_npz
from veml.errors import InvalidInput
from veml.repository import init

MARKER = ".veml-demo"

DOMAINS = {
    "amsterdam-day": Domain(city="amsterdam", weather="clear", time_of_day="day"),
    "tokyo-night-rain": Domain(city="tokyo", weather="rain", time_of_day="night"),
    "phoenix-dusk-fog": Domain(city="phoenix", weather="fog", time_of_day="dusk", camera="wide"),
}


def _prepare_dir(path: Path) -> None:
    if path.exists():
        if (path / MARKER).exists():
            shutil.rmtree(path)  # a previous demo: the demo owns it and starts over
        elif any(path.iterdir()):
            raise InvalidInput(f"{path} exists and is not an earlier demo: pass an empty or new --path")
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by veml demo; rerunning the demo replaces this directory\n")


def run_demo(path: str | Path = "veml-demo", images: int = 300, log: Callable[[str], None] = print,
             train: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    root = Path(path).resolve()
    _prepare_dir(root)
    raw = root / "generated"
    repo = init(root)
    created: dict[str, int] = {}
    try:
        for seed, (name, domain) in enumerate(DOMAINS.items()):
            ann = generate_driving_coco(raw / name, images, seed=seed, domain=domain, file_prefix=name)
            v = repo.data.import_("coco", ann, name, images=ann.parent / "images")
            created[name] = v.id
            log(f"imported {name}: {v.props['samples']} images, {v.props['annotations']} boxes")
        extra = generate_driving_coco(raw / "amsterdam-day-2", images // 3, seed=10, domain=DOMAINS["amsterdam-day"],
                                      file_prefix="amsterdam-day-2")
        steps = [
            ("amsterdam-day+", lambda: repo.data.add("amsterdam-day", "coco", extra, "amsterdam-day+", images=extra.parent / "images")),
            ("pedestrians", lambda: repo.data.filter("amsterdam-day+", "category = 'pedestrian' AND area >= 12", "pedestrians")),
            ("night-cars", lambda: repo.data.filter("tokyo-night-rain", "category = 'car'", "night-cars", keep_annotations="matching")),
            ("all-cities", lambda: repo.data.merge(list(DOMAINS), "all-cities")),
            ("vulnerable-road-users", lambda: repo.data.merge(["pedestrians", "night-cars"], "vulnerable-road-users")),
            ("all-cities-32px", lambda: repo.data.prepare("all-cities", "all-cities-32px",
                                                          [{"op": "resize", "width": 32, "height": 32}, {"op": "normalize"}])),
        ]
        for name, make in steps:
            v = make()
            created[name] = v.id
            log(f"created {name}: {v.props['samples']} samples ({v.parents} -> {v.id})")
        repo.data.tag("all-cities", "release-1")
        tests = []
        for seed, (name, domain) in enumerate(DOMAINS.items()):
            ann = generate_driving_coco(raw / f"{name}-test", max(images // 4, 8), seed=100 + seed, domain=domain,
                                        file_prefix=f"{name}-test")
            tests.append(repo.data.import_("coco", ann, f"{name}-test", role="test", images=ann.parent / "images").name)
        created["all-cities-test"] = repo.data.merge(tests, "all-cities-test").id
        log("created all-cities-test: held-out scenes of every domain (role test)")

        for seed, network in enumerate(("grid", "ring")):
            data = generate_traffic(n_sensors=24, n_steps=288 * 21, seed=seed, network=network, missing_rate=0.01)
            week3 = TrafficData(data.speeds[288 * 14:], data.timestamps[288 * 14:], data.sensor_ids, data.adjacency)
            first = TrafficData(data.speeds[:288 * 14], data.timestamps[:288 * 14], data.sensor_ids, data.adjacency)
            v = repo.data.import_("timeseries", write_npz(first, raw / f"traffic-{network}.npz"), f"traffic-{network}")
            created[f"traffic-{network}"] = v.id
            if network == "grid":  # the week after, held out: what a deployed forecaster meets next
                repo.data.import_("timeseries", write_npz(week3, raw / "traffic-grid-next-week.npz"), "traffic-grid-next-week",
                                  role="test")
            log(f"imported traffic-{network}: {v.props['samples']} daily windows x {len(v.props['sensors'])} sensors")
        v = repo.data.prepare("traffic-grid", "traffic-grid-imputed", [{"op": "impute", "strategy": "ffill"}, {"op": "normalize"}])
        created["traffic-grid-imputed"] = v.id

        lifecycles = {} if not train else _ml_stage(repo, raw, images, log)
        transfer = {} if not train else _transfer_stage(repo, raw, images, log)
        rebuilds = {} if not train else _drift_stage(repo, raw, images, log)
        lineage = repo.lineage.query("all-cities-32px", "up")
        report = repo.verify()
        summary = {
            "path": str(root),
            "versions": created,
            "lineage_of": "all-cities-32px",
            "lineage": {"nodes": [n.name for n in lineage.nodes], "edges": [[e.src, e.kind, e.dst] for e in lineage.edges]},
            "lifecycles": lifecycles,
            "transfer": transfer,
            "drift_and_rebuild": rebuilds,
            "verify_ok": report.ok,
            "seconds": round(time.perf_counter() - t0, 2),
            "next": [
                f"cd {root} && veml data list",
                "veml lineage vulnerable-road-users --format dot",
                "veml data show all-cities --grid grid.png --plot stats.png",
                "veml lifecycle list",
                "veml similar mumbai-new --with-lifecycle",
                f"veml serve --repo {root}   # then open http://127.0.0.1:8000/",
                "veml lineage detection-onnx-none --down --hops 2",
                "veml train list && veml train log time-of-day-run | tail",
            ],
        }
    finally:
        repo.close()
    return summary


CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}
DETECTOR = {"adapter": "torch", "task": "detection", "architecture": "fasterrcnn", "backbone": "efficientnet_lite0",
            "parameters": {"image_size": 128, "pretrained_backbone": True, "freeze_backbone": True}}
FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 12, "horizon": 12, "hidden": 16, "layers": 1, "diffusion_steps": 2}}


def _ml_stage(repo: Any, raw: Path, images: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Train, deploy and evaluate three lifecycles: time of day, object detection, traffic forecasting."""
    out: dict[str, Any] = {}

    def lifecycle(key: str, data: str, model: str, config: dict[str, Any], sets: list[str], evaluate_on: str,
                  quantize: str) -> None:
        t0 = time.perf_counter()
        repo.models.add(model, config)
        run = repo.training.train(data, model, sets=sets, name=f"{key}-run")
        dep = repo.inference.deploy(run["id"], "onnx", quantize, name=f"{key}-onnx-{quantize}")
        pred = repo.inference.predict(dep.id, evaluate_on, name=f"{key}-on-{evaluate_on}")
        km = pred.props["key_metric"]
        out[key] = {"training": run["id"], "inference": dep.id, "prediction": pred.id, "train_metrics_on_holdout":
                    {k: run["metrics"].get(k) for k in ("accuracy", "map50", "map", "mae", "rmse") if run["metrics"].get(k) is not None},
                    "evaluated_on": evaluate_on, km["name"]: km["value"], "latency_ms": dep.props["latency_ms"],
                    "seconds": round(time.perf_counter() - t0, 1)}
        log(f"lifecycle {key}: trained {run['name']} ({run['profile']['samples_per_s']:.0f} samples/s), deployed onnx/{quantize} "
            f"({dep.props['latency_ms']:.2f} ms), {km['name']} on {evaluate_on} = {km['value']:.3f}")

    lifecycle("time-of-day", "all-cities", "time-of-day-lite0", CLASSIFIER, ["epochs=3"], "all-cities-test", "int8")
    for split, n, seed in (("", max(images, 24), 21), ("-test", max(images // 4, 12), 22)):
        ann = generate_driving_coco(raw / f"detection-128{split}", n, seed=seed, size=(128, 128), file_prefix=f"det{split}",
                                    domain=DOMAINS["amsterdam-day"])
        repo.data.import_("coco", ann, f"amsterdam-day-128{split}", role="test" if split else "train", images=ann.parent / "images")
    lifecycle("detection", "amsterdam-day-128", "detector-fasterrcnn-lite0", DETECTOR, ["epochs=6", "lr=0.002"],
              "amsterdam-day-128-test", "none")
    lifecycle("traffic", "traffic-grid", "forecaster-dcrnn", FORECASTER, ["epochs=3"], "traffic-grid-next-week", "int8")
    return out


def _transfer_stage(repo: Any, raw: Path, images: int, log: Callable[[str], None]) -> dict[str, Any]:
    """A new city arrives (Mumbai, all times of day): rank the stored datasets, transfer the nearest lifecycle."""
    parts, tests = [], []
    for seed, tod in enumerate(("day", "dusk", "night")):
        dom = Domain(city="mumbai", time_of_day=tod)
        for split, n, tag in (("", max(images // 3, 12), parts), ("-test", max(images // 12, 6), tests)):
            name = f"mumbai-{tod}{split}"
            ann = generate_driving_coco(raw / name, n, seed=200 + 10 * seed + len(split), domain=dom, file_prefix=name)
            repo.data.import_("coco", ann, name, role="test" if split else "train", images=ann.parent / "images")
            tag.append(name)
    repo.data.merge(parts, "mumbai-new")
    repo.data.merge(tests, "mumbai-new-test")
    ranking = repo.similarity.rank("mumbai-new", top=5)
    log("similar mumbai-new: " + ", ".join(f"{r['name']} ({r['distance']:.2f})" for r in ranking["ranking"]))
    out = repo.transfer.transfer("mumbai-new", test="mumbai-new-test", name="mumbai-transfer")
    src, m = out["source_lifecycle"], out["metric"]
    log(f"transfer mumbai-new <- {out['source_name']}: {m['name']} {m['value']:.3f} on mumbai-new-test after "
        f"{out['params']['epochs']} epoch(s) in {out['train_s']:.1f} s; the source model scores {float('nan') if src['on_test'] is None else src['on_test']:.3f} there "
        f"and took {src['epochs']} epochs / {src['train_s']:.1f} s to train")
    return {"similar": [[r["name"], round(r["distance"], 4)] for r in ranking["ranking"]], "source": out["source_name"],
            "training": out["training"], "inference": out["inference"], m["name"]: m["value"],
            "source_on_test": src["on_test"], "train_s": out["train_s"], "source_train_s": src["train_s"]}


def _drift_stage(repo: Any, raw: Path, images: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The daytime detector meets night and fog: drift flags it, a same-distribution batch passes, each rebuild method runs."""
    out: dict[str, Any] = {"drift": {}, "rebuild": {}}
    n = max(images // 3, 15)
    ann = generate_driving_coco(raw / "night-fog-128", n, seed=31, size=(128, 128), file_prefix="nightfog",
                                domain=Domain(city="amsterdam", time_of_day="night", weather="fog"))
    repo.data.import_("coco", ann, "night-fog-128", role="test", images=ann.parent / "images")
    inference = "detection-onnx-none"
    for test in ("amsterdam-day-128-test", "night-fog-128"):
        r = repo.drift.check("amsterdam-day-128", test)
        out["drift"][test] = {"drift": r["drift"], "p_value": r["p_value"], "method": r["method"]}
        log(f"drift {test} vs amsterdam-day-128 ({r['method']}): {'DRIFT' if r['drift'] else 'no drift'}, p = {r['p_value']:.3g}")
    labels = raw / "night-fog-128" / "annotations.json"
    for method in ("adapt", "transfer", "active", "full"):
        t0 = time.perf_counter()
        options: dict[str, Any] = {}
        if method == "active":  # step 1 exports the chosen scenes; the generator's own boxes stand in for a labeller
            step = repo.rebuild.rebuild(inference, "night-fog-128", "active", budget=max(n // 6, 5), export=raw / "to-label")
            chosen = {im["file_name"] for im in json.loads((raw / "to-label" / "annotations.json").read_text())["images"]}
            doc = json.loads(labels.read_text())
            keep = {im["id"] for im in doc["images"] if im["file_name"] in chosen}
            doc["images"] = [im for im in doc["images"] if im["id"] in keep]
            doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
            (raw / "labelled.json").write_text(json.dumps(doc))
            options["labels"] = raw / "labelled.json"
            log(f"rebuild active: chose {step['samples']} scenes for labelling ({step['selection_name']})")
        r = repo.rebuild.rebuild(inference, "night-fog-128", method, **options)
        old, new = r["previous"]["metric"], r["metric"]
        out["rebuild"][method] = {"inference": r["inference"], "labels_used": r["labels_used"], "before": old["value"],
                                  "after": new["value"], "seconds": round(time.perf_counter() - t0, 1)}
        log(f"rebuild {method}: {new['name']} on the held-back night/fog slice {old['value']:.3f} -> {new['value']:.3f} "
            f"({r['labels_used']} labels, {time.perf_counter() - t0:.0f} s)")
    return out
