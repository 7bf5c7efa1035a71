"""``veml doctor``: which extras and services this machine has, and whether the repository answers."""

from __future__ import annotations

import argparse
from typing import Any

from veml.cli.common import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[common], help="which extras and services are available, and what is missing")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    from veml.doctor import diagnose

    report = diagnose(ctx.repo_path)
    ctx.emit(report, lambda: _text(report))
    repo = report["repository"]
    return 1 if repo is not None and not repo["ok"] else 0


def _mark(ok: bool) -> str:
    return "ok " if ok else "-- "


def _text(r: dict[str, Any]) -> str:
    lines = [f"veml {r['veml']} on Python {r['python']} ({r['platform']})", "extras:"]
    if r["extras"] is None:
        lines.append("  (VeML runs from a source tree that is not installed: pip install -e . to see its extras)")
    for name, e in (r["extras"] or {}).items():
        detail = "" if e["available"] else f"  missing: {', '.join(e['missing'])}"
        lines.append(f"  {_mark(e['available'])}{name}{detail}")
    lines.append("services:")
    for name, s in r["services"].items():
        where = s["version"] if s.get("version") else s["path"]
        lines.append(f"  {_mark(s['available'])}{name}  {where or 'not found'}  (for {s['needed_for']})")
    t = r["threads"]
    lines.append(f"training threads: {t['threads'] or 'torch default'} ({t['source']}"
                 + (f": {t['cores']} cores, load {t['load']}" if t.get("load") is not None else "") + ")")
    repo = r["repository"]
    if repo is None:
        lines.append("repository: none here (--repo PATH or $VEML_REPO)")
        return "\n".join(lines)
    lines.append(f"repository: {repo['path']}  {'ok' if repo['ok'] else 'BROKEN: ' + str(repo['error'])}")
    for key, s in repo["stores"].items():
        lines.append(f"  {_mark(s['reachable'])}{key} {s['url']}" + (f"  ({s['error']})" if s.get("error") else ""))
    return "\n".join(lines)


__all__ = ["register"]
