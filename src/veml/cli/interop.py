"""``veml import mlflow`` and ``veml export mlflow``: MLflow tracking stores in and out of the graph."""

from __future__ import annotations

import argparse

from veml.cli.common import Context

IMPORT_EXAMPLE = """examples:
  veml import mlflow sqlite:///mlflow.db --experiment churn
  veml import mlflow ./mlruns --json      # a file store; again: nothing new, all "skipped"
"""
EXPORT_EXAMPLE = """example:
  veml export mlflow sqlite:///mlflow.db --experiment veml && mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="bring another tool's history into the graph")
    isub = p.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    q = isub.add_parser("mlflow", parents=[common], epilog=IMPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="runs, registered models and aliases of an MLflow tracking store (idempotent)")
    q.add_argument("tracking_uri", metavar="TRACKING_URI", help="a file store folder, sqlite:///FILE, postgresql://… or http(s)://")
    q.add_argument("--experiment", metavar="NAME", help="only this experiment's runs (and the model versions made from them)")
    q.set_defaults(handler=cmd_import_mlflow)
    # ``veml export`` is ml.py's (``export onnx``): the MLflow target joins its sub-commands
    export = sub.choices["export"]
    esub = next(a for a in export._actions if isinstance(a, argparse._SubParsersAction))
    q = esub.add_parser("mlflow", parents=[common], epilog=EXPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="training and inference versions as runs of an MLflow experiment (idempotent)")
    q.add_argument("tracking_uri", metavar="TRACKING_URI", help="a file store folder, sqlite:///FILE, postgresql://… or http(s)://")
    q.add_argument("--experiment", metavar="NAME", default="veml", help="the experiment to write to (default: veml, created if missing)")
    q.set_defaults(handler=cmd_export_mlflow)


def cmd_import_mlflow(ctx: Context, args: argparse.Namespace) -> None:
    r = ctx.repo.mlflow.import_from(args.tracking_uri, args.experiment)

    def text() -> str:
        lines = [f"{b.kind:<6} {b.id:>6}  {b.name}  <- {b.source}" for b in r.brought]
        lines += [f"warning: {w}" for w in r.warnings]
        lines.append(f"from {r.tracking_uri}: {r.experiments} experiments, {r.runs} runs ({r.metrics} metric points, "
                     f"{r.artifacts} artifact files), {r.models} model versions, {r.aliases} aliases; "
                     f"{r.skipped} already here (skipped)")
        return "\n".join(lines)

    ctx.emit(r.to_json(), text)


def cmd_export_mlflow(ctx: Context, args: argparse.Namespace) -> None:
    r = ctx.repo.mlflow.export_to(args.tracking_uri, args.experiment)

    def text() -> str:
        lines = [f"{kind:<9} {vid:>6}  {name}  -> run {run_id}" for vid, name, kind, run_id in r.runs]
        lines += [f"warning: {w}" for w in r.warnings]
        lines.append(f"to {r.tracking_uri}, experiment {r.experiment!r} ({r.experiment_id}): {r.training} training and "
                     f"{r.inference} inference versions, {r.metrics} metric points; {r.skipped} already there (skipped)")
        return "\n".join(lines)

    ctx.emit(r.to_json(), text)


__all__ = ["register"]
