#!/usr/bin/env python
"""Training and deployment: VeML's torch adapter against hand-written PyTorch / onnxruntime / PIL.

One run, one set of generated driving scenes (64x64 PNG, day and night domains mixed over several
cities and weathers; ``time_of_day`` is the class label), imported once into a VeML repository as
a ``train`` version and a held-out ``test`` version.  Four measurements, side by side:

1. Training throughput: ``repo.training.train`` (mobilenet_v3_small, image size 64, batch 32,
   AdamW) against a plain PyTorch loop that builds the same model with the same seed, draws the
   same shuffled batches from the same decoded uint8 arrays and runs the same number of steps.
   Both loops are timed the same way (forward+backward+optimizer step per step, and the whole
   loop with batch building); VeML's ``train()`` wall time, which also decodes the version and
   records the run, is reported separately.  The final losses must be equal, which checks that
   both did the same computation.  The order alternates over ``--repeats`` rounds; medians.
2. Metric logging: the plain loop again with VeML's own logger (``veml.versions.training._Logger``
   on the real repository) called once per step, every call timed; and per-call statistics of the
   logger driven in a tight loop.
3. Deployment: efficientnet_lite0 (ImageNet weights, frozen backbone) and mobilenet_v3_small
   (from scratch) trained on ``train`` with ``test`` held out, deployed with
   ``repo.inference.deploy`` as ONNX fp32 / int8 / fp16; latency per sample at batch 1 and 32
   (median of many runs, rounds interleaved) for torch eager and each ONNX model, onnxruntime
   limited to the same number of threads as torch; accuracy on ``test`` by
   ``repo.inference.predict`` (and eager accuracy from the training's test metrics).
4. Data loading: N images into one N x 64 x 64 x 3 uint8 array from a checked-out version
   (``checkout`` + ``read_images``) against PIL open+decode of the PNG files and a torch
   DataLoader over the files (0 workers and one per core).  All arrays are checked equal.

Results go to ``OUT/training.json`` and ``OUT/training.md``; the Markdown is also printed.
Every figure is warm-cache (the files were just written and each variant runs once unmeasured
first; no root to drop the page cache).

    .venv/bin/python benchmarks/bench_training.py                  # 2,000 train + 500 test images
    .venv/bin/python benchmarks/bench_training.py --quick          # smoke run, ~1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, md_table, median, verdict, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

import veml  # noqa: E402
from veml.adapters import get_adapter  # noqa: E402
from veml.adapters import torch_export  # noqa: E402
from veml.adapters.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from veml.datasets import Domain, generate_driving_coco  # noqa: E402
from veml.versions.model import spec_of  # noqa: E402
from veml.versions.training import _Logger  # noqa: E402  (the logger train() uses, measured as is)

LABEL = "time_of_day"
CLASSES = ("day", "night")
# (city, weather) pairs; each is generated once by day and once by night
SCENES = [("amsterdam", "clear"), ("tokyo", "rain"), ("phoenix", "clear"), ("mumbai", "fog")]
LR, WD = 1e-3, 1e-4  # the torch adapter's classification defaults (TRAIN_PARAMETERS)


# --- data ---------------------------------------------------------------------------------------
def generate(out: Path, n: int, seed: int) -> tuple[Path, list[Path]]:
    """``n`` images over day/night x SCENES into ``out/images`` + one ``out/annotations.json``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    domains = [Domain(city=c, weather=w, time_of_day=t) for c, w in SCENES for t in CLASSES]
    per = [n // len(domains) + (1 if k < n % len(domains) else 0) for k in range(len(domains))]
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": None}
    next_img, next_ann = 1, 1
    for k, (dom, m) in enumerate(zip(domains, per)):
        chunk = out / f"chunk{k}"
        ann = generate_driving_coco(chunk, m, seed=seed * 100 + k, domain=dom, image_id_start=next_img,
                                    annotation_id_start=next_ann)
        doc = json.loads(ann.read_text())
        for im in doc["images"]:
            os.replace(chunk / "images" / im["file_name"], out / "images" / im["file_name"])
        coco["images"] += doc["images"]
        coco["annotations"] += doc["annotations"]
        coco["categories"] = doc["categories"]
        next_img += m
        next_ann += len(doc["annotations"])
        shutil.rmtree(chunk)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path, [out / "images" / im["file_name"] for im in coco["images"]]


def decoded(repo: veml.Repository, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The version's images (N x 64 x 64 x 3 uint8) and class indices, decoded once."""
    view = repo.data.checkout(name)
    images = np.stack(view.read_images(range(len(view))))
    index = {c: i for i, c in enumerate(sorted({str(v) for v in view.column(LABEL) if v is not None}))}
    labels = np.array([index[str(v)] for v in view.column(LABEL)], np.int64)
    return images, labels


# --- 1 + 2: the plain loop ------------------------------------------------------------------------
def plain_loop(images: np.ndarray, labels: np.ndarray, epochs: int, batch: int, seed: int,
               log: Callable[[int, int, dict[str, float]], None] | None = None, max_steps: int = 0) -> dict[str, Any]:
    """A hand-written PyTorch loop doing what the torch adapter does for classification."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=int(labels.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    n, fb, log_s, log_times, step, samples = len(images), 0.0, 0.0, [], 0, 0
    loss = torch.tensor(float("nan"))
    model.train()
    t_start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, batch):
            idx = np.sort(order[start:start + batch])
            x = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            y = torch.from_numpy(labels[idx])
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            fb += time.perf_counter() - t0
            step += 1
            samples += len(idx)
            if log is not None:
                t0 = time.perf_counter()
                log(step, epoch, {"loss": float(loss.detach())})
                dt = time.perf_counter() - t0
                log_s += dt
                log_times.append(dt)
            if max_steps and step >= max_steps:
                break
        if max_steps and step >= max_steps:
            break
    loop_s = time.perf_counter() - t_start
    return {"steps": step, "samples": samples, "forward_backward_s": fb, "loop_s": loop_s, "log_s": log_s,
            "log_call_times": log_times, "final_loss": float(loss.detach()),
            "samples_per_s": samples / fb if fb else 0.0, "loop_samples_per_s": samples / loop_s if loop_s else 0.0}


def veml_train(repo: veml.Repository, model: str, epochs: int, batch: int, seed: int, name: str,
               max_steps: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = repo.training.train("train", model, sets=[f"epochs={epochs}", f"batch_size={batch}", f"seed={seed}",
                                                  "val_fraction=0", f"max_steps={max_steps}"], name=name)
    wall = time.perf_counter() - t0
    p = r["profile"]
    assert r["status"] == "finished", r
    return {"id": r["id"], "steps": p["steps"], "samples": p["samples"], "forward_backward_s": p["forward_backward_s"],
            "data_s": p["data_s"], "loop_s": p["train_s"], "wall_s": wall, "final_loss": r["metrics"]["final_loss"],
            "samples_per_s": p["samples_per_s"], "loop_samples_per_s": p["samples"] / p["train_s"],
            "wall_samples_per_s": p["samples"] / wall}


def bench_throughput(repo: veml.Repository, images: np.ndarray, labels: np.ndarray, a: argparse.Namespace) -> dict[str, Any]:
    # warm-up: a few steps of each (oneDNN primitive caches, allocator, imports)
    veml_train(repo, "mnv3", 1, a.batch, a.seed, "warmup-veml", max_steps=3)
    plain_loop(images, labels, 1, a.batch, a.seed, max_steps=3)
    node = repo.training.get("warmup-veml")
    logger = _Logger(repo.stores, node.id, None)
    plain_loop(images, labels, 1, a.batch, a.seed, log=logger, max_steps=3)
    logger.flush()
    runs: dict[str, list[dict[str, Any]]] = {"veml": [], "plain": [], "plain_logged": []}
    for k in range(a.repeats):
        order = ["veml", "plain", "plain_logged"] if k % 2 == 0 else ["plain_logged", "plain", "veml"]
        for which in order:
            if which == "veml":
                r = veml_train(repo, "mnv3", a.epochs, a.batch, a.seed, f"throughput-{k}")
            elif which == "plain":
                r = plain_loop(images, labels, a.epochs, a.batch, a.seed)
            else:
                logger = _Logger(repo.stores, node.id, None)
                r = plain_loop(images, labels, a.epochs, a.batch, a.seed, log=logger)
                logger.flush()
            runs[which].append(r)
            print(f"  round {k} {which:>12}: {r['samples_per_s']:.1f} samples/s (fwd+bwd), loop {r['loop_s']:.2f} s, "
                  f"final loss {r['final_loss']:.6f}", flush=True)
    return runs


def bench_logger_calls(repo: veml.Repository, node_id: int, n: int) -> dict[str, Any]:
    """The logger alone, called ``n`` times back to back with a real repository (flushes by row count)."""
    logger = _Logger(repo.stores, node_id, None)
    times = []
    t_all = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        logger(i, 0, {"loss": 1.0 / (i + 1)})
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    logger.flush()
    times[-1] += time.perf_counter() - t0
    total = time.perf_counter() - t_all
    s = sorted(times)
    return {"calls": n, "total_s": total, "mean_us": total / n * 1e6, "median_us": s[len(s) // 2] * 1e6,
            "p99_us": s[int(0.99 * (len(s) - 1))] * 1e6, "max_ms": s[-1] * 1e3,
            "slow_calls_over_1ms": sum(t > 1e-3 for t in times)}


# --- 3: deployment --------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_deploy(repo: veml.Repository, test_images: np.ndarray, test_labels: np.ndarray, a: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    adapter = get_adapter("torch")
    out: dict[str, Any] = {}
    # mobilenet_v3_small at the deployed models' epoch count, recorded only for its test accuracy: torchvision's
    # MobileNetV3 uses BatchNorm momentum 0.01, so after a few hundred steps its running statistics (used in
    # eval mode, hence by every deployment) are still far from the batch statistics it trained with
    t0 = time.perf_counter()
    short = repo.training.train("train", "mnv3", sets=[f"epochs={a.deploy_epochs}", f"batch_size={a.batch}", f"seed={a.seed}"],
                                test="test", name="deploy-mnv3-short")
    out["_mnv3_short"] = {"epochs": a.deploy_epochs, "steps": short["profile"]["steps"], "metrics": short["metrics"],
                          "train_wall_s": time.perf_counter() - t0}
    print(f"  mobilenet_v3_small, {a.deploy_epochs} epochs: test accuracy {short['metrics']['accuracy']:.4f}, final loss "
          f"{short['metrics']['final_loss']:.3g}", flush=True)
    configs = [("efficientnet_lite0", "effl", a.deploy_epochs), ("mobilenet_v3_small", "mnv3", a.mnv3_epochs)]
    for arch, model_name, epochs in configs:
        t0 = time.perf_counter()
        t = repo.training.train("train", model_name, sets=[f"epochs={epochs}", f"batch_size={a.batch}",
                                                           f"seed={a.seed}"], test="test", name=f"deploy-{model_name}")
        train_s = time.perf_counter() - t0
        assert t["status"] == "finished", t
        print(f"  trained {arch}: {t['profile']['samples_per_s']:.1f} samples/s, test accuracy "
              f"{t['metrics']['accuracy']:.4f} ({train_s:.1f} s)", flush=True)
        tnode = repo.training.get(t["id"])
        spec = spec_of(repo.models.get(model_name))
        model, _meta = adapter.model_and_meta(spec, repo.training.checkpoint(tnode))
        model.eval()
        x_all = adapter._images(test_images, True)  # the adapter's own normalisation
        with torch.no_grad():
            eager_pred = torch.cat([model(x_all[i:i + 64]) for i in range(0, len(x_all), 64)]).argmax(-1).numpy()
        eager_acc_own = float((eager_pred == test_labels).mean())

        variants: dict[str, Any] = {"eager": {"accuracy": float(t["metrics"]["accuracy"]), "accuracy_own": eager_acc_own}}
        runners: dict[str, Callable[[torch.Tensor], Any]] = {}

        def eager_run(x: torch.Tensor, m=model) -> Any:
            with torch.no_grad():
                return m(x)

        runners["eager"] = eager_run
        for q in ("none", "int8", "fp16"):
            label = {"none": "onnx_fp32", "int8": "onnx_int8", "fp16": "onnx_fp16"}[q]
            try:
                t0 = time.perf_counter()
                inode = repo.inference.deploy(t["id"], "onnx", q, name=f"{model_name}-onnx-{q}")
                deploy_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                pred = repo.inference.predict(inode.id, "test", name=f"{model_name}-onnx-{q}-on-test")
                predict_s = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - a quantisation that does not run is a result
                variants[label] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"  {arch} {label}: failed: {variants[label]['error']}", flush=True)
                continue
            artifact = repo.inference.artifact(inode)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = a.threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(artifact, sess_options=opts, providers=["CPUExecutionProvider"])
            iname = sess.get_inputs()[0].name
            runners[label] = lambda x, s=sess, n=iname: s.run(None, {n: x.numpy()})
            veml_run = torch_export.runner(spec, artifact, "onnx")  # VeML's own session (default ORT threads)
            with torch.no_grad():
                own = np.concatenate([runners[label](x_all[i:i + 64])[0] for i in range(0, len(x_all), 64)]).argmax(-1)
            p = inode.props
            variants[label] = {
                "accuracy": float(pred.props["metrics"]["accuracy"]), "accuracy_own": float((own == test_labels).mean()),
                "key_metric": pred.props["key_metric"], "size_bytes": p["size_bytes"], "agreement": p["agreement"],
                "max_abs_diff": p["max_abs_diff"], "veml_latency_ms": p["latency_ms"],
                "veml_original_latency_ms": p["original_latency_ms"], "deploy_s": deploy_s, "predict_s": predict_s,
                "_veml_runner": veml_run,
            }
        # latency: rounds interleave the variants so drifting machine load hits all of them alike
        times: dict[tuple[str, int], list[float]] = {}
        for bs, runs in ((1, a.latency_runs_b1), (32, a.latency_runs_b32)):
            x = x_all[:bs].contiguous()
            for fn in runners.values():
                for _ in range(5):
                    fn(x)
            per_round = max(1, runs // a.latency_rounds)
            for _ in range(a.latency_rounds):
                for label, fn in runners.items():
                    times.setdefault((label, bs), []).extend(_timed(lambda fn=fn: fn(x), per_round))
            # VeML's own session, as deployed (onnxruntime's default thread count)
            for label, v in variants.items():
                if "_veml_runner" in v:
                    fn = v["_veml_runner"]
                    for _ in range(5):
                        fn(x)
                    v[f"veml_runner_b{bs}_ms_per_sample"] = median(_timed(lambda: fn(x), per_round)) * 1e3 / bs
        for (label, bs), ts in times.items():
            variants[label][f"b{bs}_ms_per_sample"] = median(ts) * 1e3 / bs
            variants[label][f"b{bs}_runs"] = len(ts)
        for v in variants.values():
            v.pop("_veml_runner", None)
        out[arch] = {"training": {"id": t["id"], "epochs": epochs, "steps": t["profile"]["steps"], "train_wall_s": train_s,
                                  "samples_per_s": t["profile"]["samples_per_s"], "metrics": t["metrics"]},
                     "variants": variants}
    return out


# --- 4: data loading ------------------------------------------------------------------------------
class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return torch.from_numpy(np.array(im.convert("RGB")))


def bench_loading(repo: veml.Repository, paths: list[Path], a: argparse.Namespace) -> dict[str, Any]:
    def veml_checkout() -> np.ndarray:
        view = repo.data.checkout("train")
        return np.stack(view.read_images(range(len(view))))

    view = repo.data.checkout("train")

    def veml_read_only() -> np.ndarray:
        return np.stack(view.read_images(range(len(view))))

    def pil_files() -> np.ndarray:
        out = []
        for p in paths:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB")))
        return np.stack(out)

    def loader(workers: int) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            dl = torch.utils.data.DataLoader(_Files(paths), batch_size=a.batch, shuffle=False, num_workers=workers)
            return torch.cat(list(dl)).numpy()
        return run

    cores = os.cpu_count() or 1
    # workers are forked (the Linux default); they only run PIL, so lance's fork warning does not apply
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    variants: dict[str, Callable[[], np.ndarray]] = {
        "veml_checkout_read_images": veml_checkout, "veml_read_images_open_view": veml_read_only,
        "pil_files": pil_files, "dataloader_files_0_workers": loader(0), f"dataloader_files_{cores}_workers": loader(cores),
    }
    reference = None
    for name, fn in variants.items():  # warm-up, and every variant must give the same array
        arr = fn()
        if reference is None:
            reference = arr
        assert arr.dtype == np.uint8 and arr.shape == reference.shape and np.array_equal(arr, reference), name
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for k in range(a.load_repeats):
        for name in (names if k % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    assert reference is not None
    # where the checkout's time goes: the sample-store read of the stored (PNG) payloads, then their decoding
    from veml.formats.images import decode
    from veml.store.idsets import from_array

    ids = view.data_ids
    diag: dict[str, list[float]] = {"store_read_payloads": [], "decode_payloads": []}
    payloads = repo.stores.samples.read("samples", from_array(ids), columns=["payload"])["payload"].to_pylist()
    for _ in range(a.load_repeats):
        t0 = time.perf_counter()
        repo.stores.samples.read("samples", from_array(ids), columns=["payload"])
        diag["store_read_payloads"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.stack([np.asarray(decode(b)) for b in payloads])
        diag["decode_payloads"].append(time.perf_counter() - t0)
    return {"images": len(reference), "shape": list(reference.shape), "times": times,
            "median_s": {k: median(v) for k, v in times.items()},
            "payload_bytes_mean": float(np.mean([len(b) for b in payloads])),
            "diagnostic_median_s": {k: median(v) for k, v in diag.items()}}


# --- report ---------------------------------------------------------------------------------------
def report(R: dict[str, Any]) -> str:
    a = R["args"]
    lines = [f"Machine: {R['machine_line']}. Warm cache throughout. torch.set_num_threads({a['threads']}) for every torch "
             f"measurement and intra_op_num_threads={a['threads']} for the onnxruntime latency sessions. "
             + load_line(R["load"], R["machine"]["nproc"]), ""]

    # 1
    T = R["throughput"]
    med = {k: {f: median([r[f] for r in v]) for f in ("samples_per_s", "loop_samples_per_s", "forward_backward_s", "loop_s")}
           for k, v in T.items()}
    vw = median([r["wall_s"] for r in T["veml"]])
    vd = median([r["data_s"] for r in T["veml"]])
    ratio = med["veml"]["samples_per_s"] / med["plain"]["samples_per_s"]
    ratio_loop = med["veml"]["loop_samples_per_s"] / med["plain"]["loop_samples_per_s"]
    steps = T["veml"][0]["steps"]
    same = all(abs(r["final_loss"] - T["plain"][0]["final_loss"]) <= 1e-6 for r in T["veml"] + T["plain"])
    lines += [f"**1. Training throughput** — mobilenet_v3_small from scratch, {a['images']} train images (64x64), "
              f"{a['epochs']} epochs = {steps} steps of batch {a['batch']}, AdamW, seed {a['seed']}; median of "
              f"{a['repeats']} rounds, order alternating. Final losses of all runs "
              f"{'identical' if same else 'DIFFER'} ({T['plain'][0]['final_loss']:.6f}), so both did the same computation.", ""]
    rows = [["plain PyTorch loop", f"{med['plain']['samples_per_s']:.1f}", f"{med['plain']['loop_samples_per_s']:.1f}",
             f"{med['plain']['loop_s']:.2f}", "—", "1.00×"],
            ["VeML `repo.training.train`", f"{med['veml']['samples_per_s']:.1f}", f"{med['veml']['loop_samples_per_s']:.1f}",
             f"{med['veml']['loop_s']:.2f}", f"{vw:.2f} (batches {vd:.2f} s)", f"{ratio:.3f}× (loop {ratio_loop:.3f}×)"]]
    lines += [md_table(["", "samples/s (fwd+bwd+step)", "samples/s (whole loop)", "loop s", "train() wall s", "VeML / plain"], rows), ""]
    lines += [f"`train()` wall time includes what the loop does not: decoding the version into arrays, recording the "
              f"run, saving the checkpoint ({vw - med['veml']['loop_s']:.2f} s median outside the loop). "
              f"Target VeML ≥ 0.9× the plain loop: {verdict(ratio >= 0.9)} ({ratio:.3f}×).", ""]

    # 2
    pl = T["plain_logged"]
    share = median([r["log_s"] / r["loop_s"] * 100 for r in pl])
    step_ms = median([r["loop_s"] / r["steps"] * 1e3 for r in T["plain"]])
    C = R["logging"]
    ab = (median([r["loop_s"] for r in pl]) / med["plain"]["loop_s"] - 1) * 100
    L = R["logger_calls"]
    lines += ["**2. Metric logging** — the plain loop with VeML's training logger called once per step on the real "
              "repository (it buffers rows and writes them to SQLite every 0.5 s), every call timed.", ""]
    lines += [md_table(["", "value"], [
        ["step time, plain loop (median)", f"{step_ms:.1f} ms"],
        [f"logger call incl. `float(loss)` ({C['calls']:,} calls): median / p99 / max",
         f"{C['median_us']:.0f} µs / {C['p99_us']:.0f} µs / {C['max_ms']:.2f} ms"],
        ["logger time as % of loop time (median of rounds)", f"{share:.3f} %"],
        ["A/B: loop with logger vs without (median loop time)", f"{ab:+.2f} % (noise-level; see JSON)"],
        [f"logger alone, {L['calls']:,} back-to-back calls: mean / median / p99", f"{L['mean_us']:.1f} / {L['median_us']:.1f} / "
         f"{L['p99_us']:.1f} µs; slowest (a flush) {L['max_ms']:.2f} ms"],
    ]), ""]
    lines += [f"Target < 2 % of step time: {verdict(share < 2.0)} ({share:.3f} %).", ""]

    # 3
    lines += ["**3. Deployment on CPU** — each model trained by `repo.training.train` on the train version with the "
              f"test version ({a['test_images']} images) held out, deployed by `repo.inference.deploy(..., 'onnx', q)`; "
              "accuracy by `repo.inference.predict` on the test version (eager: the training's test metrics). Latency: "
              f"median per sample, {a['latency_runs_b1']} runs at batch 1 and {a['latency_runs_b32']} at batch 32, "
              f"in {a['latency_rounds']} interleaved rounds; torch and onnxruntime both on {a['threads']} thread(s). "
              "\"VeML's own session\" is the same artifact run through VeML's `torch_export.runner` (onnxruntime default "
              "session options, i.e. one intra-op thread per core); \"VeML-recorded\" is the deployment's own `latency_ms` "
              "property (batch 1, 15 runs, default threads).", ""]
    rows, verdicts = [], []
    models = {k: d for k, d in R["deploy"].items() if not k.startswith("_")}
    for arch, d in models.items():
        v = d["variants"]
        e = v["eager"]
        for label in ("eager", "onnx_fp32", "onnx_int8", "onnx_fp16"):
            x = v.get(label)
            if x is None:
                continue
            if "error" in x:
                rows.append([arch, label, "fails", "", "", "", "", "", "", x["error"][:80]])
                continue
            s1 = e["b1_ms_per_sample"] / x["b1_ms_per_sample"]
            s32 = e["b32_ms_per_sample"] / x["b32_ms_per_sample"]
            drop = (e["accuracy"] - x["accuracy"]) * 100
            rows.append([arch, label, f"{x['b1_ms_per_sample']:.3f}", f"{x['b32_ms_per_sample']:.3f}",
                         "—" if label == "eager" else f"{s1:.2f}× / {s32:.2f}×", f"{x['accuracy'] * 100:.2f}",
                         "—" if label == "eager" else f"{-drop:+.2f}",
                         "—" if label == "eager" else f"{x['size_bytes'] / 1024**2:.2f} MiB",
                         "—" if label == "eager" else f"{x['veml_runner_b1_ms_per_sample']:.3f} / {x['veml_runner_b32_ms_per_sample']:.3f}",
                         "—" if label == "eager" else f"{x['veml_latency_ms']:.3f} ms (eager {x['veml_original_latency_ms']:.3f})"])
            if label == "onnx_int8":
                f32 = v.get("onnx_fp32", {})
                vs32 = (f32["b1_ms_per_sample"] / x["b1_ms_per_sample"], f32["b32_ms_per_sample"] / x["b32_ms_per_sample"]) \
                    if "b1_ms_per_sample" in f32 else (float("nan"), float("nan"))
                verdicts.append((arch, s1, s32, drop, vs32))
    lines += [md_table(["model", "runtime", "ms/sample b1", "ms/sample b32", "speed-up vs eager b1 / b32", "test acc %",
                        "Δ acc (points)", "size", "VeML's own session b1 / b32 ms/sample", "VeML-recorded latency"], rows), ""]
    for arch, d in models.items():
        m = d["training"]
        lines.append(f"- {arch}: {m['epochs']} epochs ({m['steps']} steps), eager test accuracy "
                     f"{m['metrics']['accuracy'] * 100:.2f} %, training {m['train_wall_s']:.0f} s wall.")
    sh = R["deploy"].get("_mnv3_short")
    if sh:
        lines.append(f"- mobilenet_v3_small trained for only {sh['epochs']} epochs ({sh['steps']} steps) reaches final "
                     f"training loss {sh['metrics']['final_loss']:.2g} but test accuracy {sh['metrics']['accuracy'] * 100:.1f} % "
                     "(eval-mode BatchNorm running statistics, momentum 0.01, not yet settled); hence the longer run above.")
    lines.append("")
    for arch, s1, s32, drop, vs32 in verdicts:
        lines.append(f"- {arch} int8: ≥ 2× faster than eager — batch 1 {verdict(s1 >= 2)} ({s1:.2f}×), batch 32 "
                     f"{verdict(s32 >= 2)} ({s32:.2f}×); accuracy drop ≤ 1 point {verdict(drop <= 1.0)} "
                     f"(int8 minus eager {-drop:+.2f} points). int8 against ONNX fp32: {vs32[0]:.2f}× at batch 1, "
                     f"{vs32[1]:.2f}× at batch 32.")
    lines.append("")

    # 4
    D = R["loading"]
    ms_ = D["median_s"]
    base = ms_["pil_files"]
    lines += [f"**4. Data loading** — {D['images']:,} images into one {'x'.join(map(str, D['shape']))} uint8 array "
              f"(all variants checked equal); median of {a['load_repeats']} runs, order alternating.", ""]
    rows = []
    for k, v in ms_.items():
        rows.append([k, f"{v:.3f}", f"{D['images'] / v:,.0f}", f"{base / v:.2f}×"])
    lines += [md_table(["", "s", "images/s", "speed vs PIL files"], rows), ""]
    dg = D["diagnostic_median_s"]
    lines += [f"Inside the checkout: reading the {D['images']:,} stored payloads (PNG, {D['payload_bytes_mean']:,.0f} B "
              f"each on average) from the sample store takes {dg['store_read_payloads'] * 1e3:.1f} ms; decoding them "
              f"with PIL into the array takes {dg['decode_payloads'] * 1e3:.0f} ms "
              f"({dg['decode_payloads'] / ms_['veml_checkout_read_images'] * 100:.0f} % of the checkout).", ""]
    v1 = base / ms_["veml_checkout_read_images"]
    dl_best = min(v for k, v in ms_.items() if k.startswith("dataloader"))
    v2 = dl_best / ms_["veml_checkout_read_images"]
    lines += [f"Target checkout ≥ 2× faster: vs PIL files {verdict(v1 >= 2)} ({v1:.2f}×); vs the faster DataLoader "
              f"{verdict(v2 >= 2)} ({v2:.2f}×).", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=None, help="training images (default 2,000; 256 with --quick)")
    p.add_argument("--test-images", type=int, default=None, help="held-out test images (default images/4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the throughput runs (default 2; 1 with --quick)")
    p.add_argument("--deploy-epochs", type=int, default=None, help="epochs of the deployed efficientnet_lite0 (default 3; 1 with --quick)")
    p.add_argument("--mnv3-epochs", type=int, default=None,
                   help="epochs of the deployed mobilenet_v3_small from scratch (default 15; 1 with --quick)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=None, help="throughput rounds (default 3; 2 with --quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads and onnxruntime intra-op threads for every measurement (default 1: "
                        "on a small shared machine more threads than free cores stall OpenMP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="smoke run")
    a = p.parse_args()
    q = a.quick
    a.images = a.images or (256 if q else 2000)
    a.test_images = a.test_images or max(32, a.images // 4)
    a.epochs = a.epochs or (1 if q else 2)
    a.deploy_epochs = a.deploy_epochs or (1 if q else 3)
    a.mnv3_epochs = a.mnv3_epochs or (1 if q else 15)
    a.repeats = a.repeats or (2 if q else 3)
    a.latency_runs_b1, a.latency_runs_b32, a.latency_rounds = (30, 6, 2) if q else (300, 60, 5)
    a.load_repeats = 2 if q else 5
    a.logger_calls = 2000 if q else 20000

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    work = out / "training_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    info = machine_info()
    cpuinfo = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpuinfo = line.split(":", 1)[1].strip()
                break
    import onnxruntime as ort

    machine_line = (f"{info['nproc_cmd'] or info['nproc']} cores ({info['cpu'] or cpuinfo}; /proc/cpuinfo model name "
                    f"\"{cpuinfo}\"), {info['mem_gib']} GiB RAM, Python {info['versions']['python']}, torch {torch.__version__}, "
                    f"torchvision {torchvision.__version__}, onnxruntime {ort.__version__}")
    R: dict[str, Any] = {"args": vars(a), "machine": info, "machine_line": machine_line, "cpuinfo_model": cpuinfo}
    print(machine_line, flush=True)
    print(info["free_g"], flush=True)

    with LoadSampler() as load:
        t0 = time.perf_counter()
        ann, paths = generate(work / "gen" / "train", a.images, a.seed + 1)
        test_ann, _ = generate(work / "gen" / "test", a.test_images, a.seed + 2)
        repo = veml.init(work / "repo")
        repo.data.import_("coco", ann, "train", images=ann.parent / "images")
        repo.data.import_("coco", test_ann, "test", role="test", images=test_ann.parent / "images")
        base = {"adapter": "torch", "task": "classification"}
        prm = {"image_size": 64, "label_column": LABEL, "pretrained": False, "freeze_backbone": False}
        repo.models.add("mnv3", {**base, "architecture": "mobilenet_v3_small", "parameters": prm})
        repo.models.add("effl", {**base, "architecture": "efficientnet_lite0",
                                 "parameters": {**prm, "pretrained": True, "freeze_backbone": True}})
        images, labels = decoded(repo, "train")
        test_images, test_labels = decoded(repo, "test")
        R["setup_s"] = time.perf_counter() - t0
        print(f"setup {R['setup_s']:.1f} s: {len(images)} train ({np.bincount(labels).tolist()} per class), "
              f"{len(test_images)} test", flush=True)

        print("1+2. training throughput and logging", flush=True)
        R["throughput"] = bench_throughput(repo, images, labels, a)
        R["logger_calls"] = bench_logger_calls(repo, repo.training.get("warmup-veml").id, a.logger_calls)
        print("3. deployment", flush=True)
        R["deploy"] = bench_deploy(repo, test_images, test_labels, a)
        print("4. data loading", flush=True)
        R["loading"] = bench_loading(repo, paths, a)
        repo.close()
    R["load"] = load.summary()
    calls = sorted(t for r in R["throughput"]["plain_logged"] for t in r["log_call_times"])
    R["logging"] = {"calls": len(calls), "median_us": calls[len(calls) // 2] * 1e6,
                    "p99_us": calls[int(0.99 * (len(calls) - 1))] * 1e6, "max_ms": calls[-1] * 1e3}
    for runs in R["throughput"].values():  # keep the JSON readable: summarise the per-call logger times
        for r in runs:
            ts = sorted(r.pop("log_call_times", []))
            if ts:
                r["log_call_median_us"] = ts[len(ts) // 2] * 1e6
                r["log_call_max_ms"] = ts[-1] * 1e3
    md = report(R)
    write_json(out / "training.json", R)
    (out / "training.md").write_text(md + "\n")
    print()
    print(md)


if __name__ == "__main__":
    main()
