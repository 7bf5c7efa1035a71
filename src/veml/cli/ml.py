"""``veml model …``, ``veml train``, ``veml deploy``, ``veml predict``, ``veml lifecycle list``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from veml.cli.common import Context
from veml.errors import InvalidInput


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    model = sub.add_parser("model", parents=[common], help="model versions")
    msub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    p = msub.add_parser("add", parents=[common], help="a model version from a YAML/TOML/JSON config, or an MMDetection .py config "
                                                  "(code: run once, see README)")
    p.add_argument("--name", required=True)
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--finetune-from", metavar="MODEL", help="record this model as derived from another (FINETUNE_FROM)")
    p.set_defaults(handler=cmd_model_add)
    p = msub.add_parser("register", parents=[common], help="version a model file trained anywhere (torch, TorchScript, "
                                                          "scikit-learn as skops, ONNX), ready to deploy")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", required=True, help="name of the version that holds the weights (what you deploy)")
    p.add_argument("--data", metavar="D", help="the data version it learned from (lineage; names its classes)")
    p.add_argument("--training", metavar="T", help="the training version it was derived from (lineage)")
    p.add_argument("--model", metavar="M", help="the model version it is an instance of (default: detected)")
    p.add_argument("--framework", choices=["torch", "torchscript", "sklearn", "onnx"],
                   help="what wrote FILE (default: detected from its content)")
    p.set_defaults(handler=cmd_model_register)
    p = msub.add_parser("list", parents=[common], help="model versions, optionally by shared part")
    for part in ("architecture", "backbone", "neck", "head"):
        p.add_argument(f"--{part}")
    p.set_defaults(handler=cmd_model_list)
    p = msub.add_parser("show", parents=[common])
    p.add_argument("version")
    p.set_defaults(handler=cmd_model_show)
    p = msub.add_parser("compare", parents=[common], help="metadata differences between two model versions "
                        "(or 3 to 20 model or training versions side by side)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("more", nargs="*", metavar="C", help="more versions (model or training): the models view's table, "
                   "one column per version, differing rows only in the text output")
    p.set_defaults(handler=cmd_model_compare)

    p = sub.add_parser("train", parents=[common], help="train a model version on a data version (or: train log|list|show)")
    p.add_argument("action", nargs="?", choices=["log", "list", "show"], help="inspect runs instead of training")
    p.add_argument("target", nargs="?", help="training version (for log / show)")
    p.add_argument("--data", metavar="D")
    p.add_argument("--model", metavar="M")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--init-from", metavar="T", help="initialise from a finished training's checkpoint")
    p.add_argument("--test", metavar="D2", help="evaluate on this data version (default: a seeded hold-out of D)")
    p.add_argument("--name", help="name of the training version (default: train-MODEL-on-DATA)")
    p.add_argument("--follow", action="store_true", help="with log: keep printing until the run ends")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("deploy", parents=[common], help="export a finished training as an inference version")
    p.add_argument("training")
    p.add_argument("--format", choices=["onnx", "torchscript", "skops", "pickle"], default=None,
                   help="default: onnx, or skops for scikit-learn models (pickle only with --trust-pickle)")
    p.add_argument("--quantize", choices=["none", "fp16", "int8"], default="none")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--target", choices=["triton"], help="also write a model repository for this serving system")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--name")
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser("export", parents=[common], help="write a training version's model out as a plain file")
    esub = p.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    q = esub.add_parser("onnx", parents=[common], help="an ONNX file, checked against the trained model on real samples")
    q.add_argument("training", metavar="T")
    q.add_argument("--out", required=True, metavar="FILE")
    q.set_defaults(handler=cmd_export, export_format="onnx")

    p = sub.add_parser("predict", parents=[common], help="run an inference version over a data version")
    p.add_argument("inference")
    p.add_argument("--data", required=True, metavar="D")
    p.add_argument("--name")
    p.add_argument("--out", metavar="FILE", help="also write one row per sample to FILE: .jsonl (JSON Lines) or .parquet")
    p.add_argument("--force", action="store_true", help="with --out: replace FILE if it exists (default: refused)")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("lifecycle", parents=[common], help="complete lifecycles")
    lsub = p.add_subparsers(dest="lifecycle_command", metavar="SUBCOMMAND", required=True)
    q = lsub.add_parser("list", parents=[common], help="data → model → training → inference, with the key metric")
    q.set_defaults(handler=cmd_lifecycle_list)


def cmd_model_add(ctx: Context, args: argparse.Namespace) -> None:
    node = ctx.repo.models.add(args.name, args.config, finetune_from=args.finetune_from)
    v = node.to_json()
    ctx.emit(v, f"created model version {v['id']} {v['name']!r}: {v['adapter']}/{v['task']}/{v['architecture']}")


def cmd_model_register(ctx: Context, args: argparse.Namespace) -> None:
    t = ctx.repo.registry.register(args.file, args.name, data=args.data, training=args.training,
                                   framework=args.framework, model=args.model)
    reg = t["registered"]
    ctx.emit(t, f"registered {reg['framework']} model {reg['file']} as training version {t['id']} {t['name']!r} "
                f"(model version {t['model']}); deploy it with 'veml deploy {t['name']}'")


def cmd_model_list(ctx: Context, args: argparse.Namespace) -> None:
    nodes = ctx.repo.models.list(architecture=args.architecture, backbone=args.backbone, neck=args.neck, head=args.head)
    out = [n.to_json() for n in nodes]
    ctx.emit(out, "\n".join(f"{v['id']:>6}  {v['name']}  {v['task']}/{v['architecture']} backbone={v.get('backbone')}" for v in out)
             or "no model versions")


def cmd_model_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.repo.models.get(args.version).to_json())


def cmd_model_compare(ctx: Context, args: argparse.Namespace) -> None:
    if args.more:
        c = ctx.repo.training.compare([args.a, args.b, *args.more]).to_json()
        head = "versions: " + " | ".join(f"{v['name']} ({v['kind']} {v['id']})" for v in c["versions"])
        rows = [f"{r['section']}.{r['key']}: " + " | ".join(repr(v) for v in r["values"]) for r in c["rows"] if r["differs"]]
        ctx.emit(c, "\n".join([head, *(rows or ["no differences"])]))
        return
    d = ctx.repo.models.compare(args.a, args.b)
    lines = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in d["differences"].items()] or ["no differences"]
    ctx.emit(d, "\n".join(lines))


def _echo(ctx: Context):
    if ctx.as_json or not sys.stderr.isatty():
        return None
    last = [0.0]

    def echo(step: int, epoch: int, values: dict[str, float]) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
            print(f"\r  epoch {epoch} step {step} {text}   ", end="", file=sys.stderr, flush=True)

    return echo


def _training_text(t: dict[str, Any]) -> str:
    metrics = t.get("metrics") or {}
    keys = [k for k in ("accuracy", "macro_f1", "map50", "map", "mae", "rmse", "final_loss") if metrics.get(k) is not None] \
        or [k for k, v in sorted(metrics.items()) if isinstance(v, (int, float))][:4]  # a run logged with the SDK
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)
    prof = t.get("profile") or {}
    extra = f" ({prof.get('samples_per_s', 0):.1f} samples/s)" if prof else ""
    return f"{t['id']:>6}  training {t['name']}  {t['status']}  {shown}{extra}" + (f"\n  error: {t['error']}" if t.get("error") else "")


def cmd_train(ctx: Context, args: argparse.Namespace) -> int | None:
    repo = ctx.repo
    if args.action == "list":
        runs = repo.training.list()
        ctx.emit(runs, "\n".join(_training_text(t) for t in runs) or "no training versions")
        return None
    if args.action in ("log", "show"):
        if not args.target:
            raise InvalidInput(f"usage: veml train {args.action} TRAINING")
        node = repo.training.get(args.target)
        if args.action == "show":
            t = repo.training.describe(node)
            ctx.emit(t, lambda: _training_text(t))
            return None
        return _log(ctx, node, args.follow)
    if not args.data or not args.model:
        raise InvalidInput("veml train needs --data D and --model M")
    echo = _echo(ctx)
    t = repo.training.train(args.data, args.model, sets=args.sets, init_from=args.init_from, test=args.test,
                            name=args.name, echo=echo)
    if echo:
        print(file=sys.stderr)
    ctx.emit(t, lambda: _training_text(t))
    return None


def _log(ctx: Context, node, follow: bool) -> None:
    """Print a run's log; with ``follow``, until the run stops.  Status is read before the rows, so
    the rows a finished run flushed before its final event are always printed."""
    repo = ctx.repo
    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        status = repo.training.status(node)["status"]
        new = repo.training.logs(node.id, after)
        if new:
            after = new[-1]["id"]
            rows.extend(new)
            if not ctx.as_json:
                for r in new:
                    print(f"epoch {r['epoch']} step {r['step']} {r['key']}={r['value']:.6g}", flush=True)
        if not follow or status != "running":
            break
        time.sleep(0.5)
    if ctx.as_json:
        ctx.emit({"training": node.id, "status": status, "logs": rows})


def cmd_deploy(ctx: Context, args: argparse.Namespace) -> None:
    repo = ctx.repo
    fmt = args.format
    if fmt is None:
        task = repo.training.get(args.training).props.get("task", "")
        fmt = "skops" if task.startswith("tabular") else "onnx"
    node = repo.inference.deploy(args.training, fmt, args.quantize, args.device, target=args.target, out=args.out, name=args.name)
    v = node.to_json()
    ctx.emit(v, f"created inference version {v['id']} {v['name']!r}: {v['format']}/{v['quantize']} "
                f"{v['size_bytes']} bytes, {v['latency_ms']:.3f} ms (trained model {v['original_latency_ms']:.3f} ms), "
                f"max |diff| {v['max_abs_diff']:.3g}")


def cmd_export(ctx: Context, args: argparse.Namespace) -> None:
    e = ctx.repo.inference.export_file(args.training, args.out, args.export_format).to_json()
    ctx.emit(e, f"wrote {e['path']} ({e['size_bytes']} bytes, input {e['input_names'][0]} {e['input_shape']}); "
                f"max |diff| against the trained model {e['max_abs_diff']:.3g} on {e['check_samples']} samples")


def cmd_predict(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress("predicting", "sample") as bar:
        node = ctx.repo.inference.predict(args.inference, args.data, name=args.name, out=args.out, force=args.force,
                                          progress=bar)
    v = node.to_json()
    if args.out:
        v["out"] = str(Path(args.out).resolve())
    km = v.get("key_metric") or {}
    metric = f"{km.get('name')}={km['value']:.4f}" if km.get("value") is not None else "no labels, no metrics"
    ctx.emit(v, f"created prediction version {v['id']} {v['name']!r}: {v['predictions']} predictions, {metric}"
                + (f"; per-sample predictions in {v['out']}" if args.out else ""))


def cmd_lifecycle_list(ctx: Context, args: argparse.Namespace) -> None:
    rows = ctx.repo.lifecycles.list()
    lines = [f"data {r['data']} -> model {r['model']} -> training {r['training']} -> inference {r['inference']}"
             f"  {r['task']}  {r['metric']['name']}={r['metric']['value']}" for r in rows]
    ctx.emit(rows, "\n".join(lines) or "no complete lifecycles yet")


__all__ = ["register"]
