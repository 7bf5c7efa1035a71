"""``veml coreset``, ``veml similar``, ``veml transfer``, ``veml drift``, ``veml rebuild``, ``veml monitor``."""

from __future__ import annotations

import argparse
from typing import Any

from veml.cli.common import Context

METHODS = ["mean_pairwise", "mmd", "gromov_wasserstein", "label_ot", "leep", "logme", "hscore", "knn_probe", "ensemble",
           "as_is", "finetune_probe", "estimate"]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("coreset", parents=[common], help="the k-center core set of a data version (computed once, reused)")
    p.add_argument("data", metavar="D")
    p.add_argument("--k", type=int, help="core-set size (default: min(200, samples))")
    p.add_argument("--embedder", help="lite0 (images), summary (series), columns (tables) or training:NAME")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_coreset)

    p = sub.add_parser("similar", parents=[common], help="rank the other stored data versions by core-set distance to D")
    p.add_argument("data", metavar="D")
    p.add_argument("--top", type=int, metavar="K")
    p.add_argument("--method", choices=METHODS, help="distance (default per modality: images mean_pairwise, "
                                                     "series gromov_wasserstein, tables mmd); leep, logme, hscore and "
                                                     "knn_probe score each candidate lifecycle's model on D's labels; "
                                                     "ensemble ranks by the mean rank of logme, leep, knn_probe and "
                                                     "finetune_probe "
                                                     "(the default with --with-lifecycle on labelled images); as_is "
                                                     "scores each candidate's model, unchanged, by its own metric on "
                                                     "D; finetune_probe fine-tunes each candidate forecaster briefly "
                                                     "on D in memory and scores it there (the default with "
                                                     "--with-lifecycle on series); estimate scores each candidate's "
                                                     "model by its metric on D estimated without labels")
    p.add_argument("--with-lifecycle", action="store_true", help="only versions with a complete lifecycle")
    p.add_argument("--include-related", action="store_true", help="also rank versions that share samples with D")
    p.add_argument("--k", type=int, help="core-set size")
    p.add_argument("--embedder")
    p.set_defaults(handler=cmd_similar)

    p = sub.add_parser("transfer", parents=[common], help="build D's lifecycle from the most similar stored one")
    p.add_argument("data", metavar="D")
    p.add_argument("--from", dest="source", metavar="S", help="source data version (or training / inference) instead of the nearest")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override the source recipe (default: its recipe with a third of its epochs)")
    p.add_argument("--test", metavar="D2", help="evaluate the new and the source inference on this data version")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--name")
    p.set_defaults(handler=cmd_transfer)
    _register_drift(sub, common)
    _register_rebuild(sub, common)


def _register_drift(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drift", parents=[common], help="label-free drift test of a test data version against a reference")
    p.add_argument("--reference", metavar="D", help="training data version (default: the inference's training data)")
    p.add_argument("--test", required=True, metavar="D2")
    p.add_argument("--inference", metavar="I", help="use the deployed model (its outputs for bbsd, its features otherwise)")
    p.add_argument("--method", choices=["mmd", "bbsd", "ks", "cvm"],
                   help="default: bbsd with --inference, else mmd for images and ks for series/tables")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--k", type=int, default=200, help="core-set landmarks for mmd")
    p.add_argument("--permutations", type=int, default=100)
    p.add_argument("--embedder")
    p.add_argument("--name")
    p.set_defaults(handler=cmd_drift)


def cmd_drift(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress("embedding", "sample") as bar:
        out = ctx.repo.drift.check(args.reference, args.test, inference=args.inference, method=args.method, alpha=args.alpha,
                                   k=args.k, permutations=args.permutations, embedder=args.embedder, progress=bar,
                                   name=args.name)
    verdict = "DRIFT" if out["drift"] else "no drift"

    def text() -> str:
        split = out.get("reference_split", "given")
        which = "" if split == "given" else f" ({split} split, {out['n_reference']} samples)"
        lines = [f"{verdict}: {out['test_name']} vs {out['reference_name']}{which} ({out['method']}) "
                 f"statistic {out['statistic']:.4g}, p-value {out['p_value']:.4g}, threshold {out['threshold']:.4g} "
                 f"(report {out['report']})"]
        est = out.get("estimate")
        if est is not None:
            lines.append(f"estimated {est['metric']} on the batch: {est['value']:.3f} "
                         f"({est['level']:.0%} interval {est['low']:.3f}-{est['high']:.3f}; "
                         f"{est['reference_value']:.3f} on held-out data, {est['method']})")
        elif "estimate_reason" in out:
            lines.append(f"no estimate: {out['estimate_reason']}")
        if out.get("warning"):
            lines.append(f"warning: {out['warning']}")
        return "\n".join(lines)

    ctx.emit(out, text)
    return 0


def _register_rebuild(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rebuild", parents=[common], help="the next lifecycle after drift: full, transfer, active or adapt")
    p.add_argument("--inference", required=True, metavar="I")
    p.add_argument("--test", required=True, metavar="D2", help="the new data (a held-back slice of it evaluates old and new)")
    p.add_argument("--method", required=True, choices=["full", "transfer", "active", "adapt"])
    p.add_argument("--holdout", type=float, default=0.3, help="fraction of D2 held back for evaluation (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, help="active: how many samples to send for labelling (default 10%%)")
    p.add_argument("--export", metavar="DIR", help="active, step 1: write the chosen samples here as COCO")
    p.add_argument("--labels", metavar="FILE", help="active, step 2: the labelled COCO file for the chosen samples")
    p.add_argument("--adapt", default="adabn", choices=["adabn", "tent"], help="adapt: the label-free method (adabn: batch-norm statistics; tent: adabn, then entropy minimisation of the BN scale and shift; classifiers)")
    p.add_argument("--scratch", action="store_true",
                   help="full: retrain from a fresh initialisation (default: from the previous weights, where the adapter can)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override the previous recipe")
    p.add_argument("--name")
    p.set_defaults(handler=cmd_rebuild)

    p = sub.add_parser("monitor", parents=[common], help="drift-check each batch landing in DIR; rebuild on drift")
    p.add_argument("--inference", required=True, metavar="I")
    p.add_argument("--watch", required=True, metavar="DIR", help="each sub-directory with annotations.json + images/ is a batch")
    p.add_argument("--reference", metavar="D")
    p.add_argument("--method", choices=["mmd", "bbsd", "ks", "cvm"])
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--rebuild", choices=["full", "transfer", "adapt"], help="rebuild this way when a batch drifts")
    p.add_argument("--max-drop", type=float, default=0.05, metavar="FRACTION",
                   help="also rebuild when the estimated accuracy's upper bound is this far below the held-out accuracy")
    p.add_argument("--cooldown", type=float, default=3600.0, metavar="SECONDS", help="at most one rebuild per this long")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--once", action="store_true", help="check the batches present now, then exit")
    p.add_argument("--max-batches", type=int)
    p.set_defaults(handler=cmd_monitor)


def cmd_rebuild(ctx: Context, args: argparse.Namespace) -> None:
    out = ctx.repo.rebuild.rebuild(args.inference, args.test, args.method, holdout=args.holdout, seed=args.seed, scratch=args.scratch,
                                   budget=args.budget, export=args.export, labels=args.labels, sets=args.sets or None,
                                   adapt=args.adapt, name=args.name)

    def text() -> str:
        if out["status"] == "awaiting_labels":
            return (f"chose {out['samples']} samples for labelling ({out['selection_name']}), exported to {out['export']}\n"
                    f"{out['next']}\n{evidence_line(out['evidence'])}")
        line = f"rebuilt ({out['method']}): training {out['training']}, inference {out['inference']}, labels used {out['labels_used']}"
        if out.get("metric"):
            m, old = out["metric"], out["previous"]["metric"]
            line += f"\n  {m['name']} on the held-back slice: {_num(old['value'])} (previous) -> {_num(m['value'])} (new)"
        return f"{line}\n{evidence_line(out['evidence'])}"

    ctx.emit(out, text)


def evidence_line(e: dict[str, Any]) -> str:
    """The benchmark verdict for the method on this task, as one line."""
    if e["status"] == "not measured":
        return f"evidence: {e['method']} rebuilds of {e['task']} models are not measured ({e['source']})"
    return f"evidence: {e['method']} on {e['task']}: {e['target']}: {e['measured']} ({e['status']}; BENCHMARKS.md, {e['source']})"


def cmd_monitor(ctx: Context, args: argparse.Namespace) -> None:
    import sys

    log = (lambda s: None) if ctx.as_json else (lambda s: print(s, file=sys.stderr, flush=True))
    results = ctx.repo.monitor.run(args.inference, args.watch, reference=args.reference, method=args.method,
                                   rebuild=args.rebuild, cooldown_s=args.cooldown, interval_s=args.interval, once=args.once,
                                   max_batches=args.max_batches, alpha=args.alpha, max_drop=args.max_drop, log=log)
    ctx.emit({"batches": results}, lambda: f"checked {len(results)} batches")


def cmd_coreset(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress("embedding", "sample") as bar:
        node = ctx.repo.coresets.coreset(args.data, k=args.k, embedder=args.embedder, seed=args.seed, progress=bar)
    out = node.to_json()
    ctx.emit(out, lambda: f"{node.name}: k={out['k']} of {out['n']} samples, embedder {out['embedder']}, "
                          f"covering radius {out['radius']:.4g} (id {node.id})")


def cmd_similar(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress("embedding", "sample") as bar:
        out = ctx.repo.similarity.rank(args.data, top=args.top, method=args.method, with_lifecycle=args.with_lifecycle,
                                       k=args.k, embedder=args.embedder, progress=bar,
                                       include_related=args.include_related)

    def text() -> str:
        lines = [f"nearest to {out['target_name']} ({out['method']} on {out['embedder']} core sets, k={out['k']}):"]
        for i, r in enumerate(out["ranking"], 1):
            extra = ""
            if "lifecycle" in r:
                m = r["lifecycle"]["metric"]
                extra = f"  lifecycle: training {r['lifecycle']['training']}, {m['name']}={_num(m['value'])}"
            if "scores" in r:  # the ensemble: its mean rank, and the scores it averaged the ranks of
                parts = ", ".join(f"{k} {_num(v)}" for k, v in r["scores"].items())  # None: a score that could not run
                value = f"mean rank {r['distance']:.3g} ({parts})"
            else:
                value = f"score {r['score']:.5g}" if "score" in r else f"{r['distance']:.5g}"
            lines.append(f"{i:>3}. {r['name']:<32} {value}{extra}")
        lines += [f"  skipped {s['name']}: {s['reason']}" for s in out["skipped"]]
        if out["related_left_out"]:
            lines.append(f"  ({out['related_left_out']} versions sharing samples with it left out: --include-related ranks them)")
        return "\n".join(lines)

    ctx.emit(out, text)


def cmd_transfer(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress("embedding", "sample") as bar:
        out = ctx.repo.transfer.transfer(args.data, source=args.source, sets=args.sets or None, test=args.test,
                                         name=args.name, method=args.method, progress=bar)

    def text() -> str:
        src, m = out["source_lifecycle"], out["metric"]
        dist = "" if out["distance"] is None else f" (distance {out['distance']:.4g})"
        return "\n".join([
            f"transferred the lifecycle of {out['source_name']}{dist}: training {out['training']}, inference {out['inference']}",
            f"  new:    {m['name']}={_num(m['value'])}  train {_num(out['train_s'])} s  ({out['params'].get('epochs')} epochs)",
            f"  source: {src['metric']['name']}={_num(src['metric']['value'])}  train {_num(src['train_s'])} s  ({src['epochs']} epochs)",
            *([f"  kept:   {out['kept']}" + (f" ({out['selection']['reason']})" if (out['selection'] or {}).get('reason') else "")]
              if out.get("selection") else []),
        ])

    ctx.emit(out, text)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
