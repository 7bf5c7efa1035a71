"""``veml alias set|list|history|delete``: movable names for versions."""

from __future__ import annotations

import argparse

from veml.cli.common import Context
from veml.entities import Alias


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("alias", parents=[common], help="movable names for versions (accepted wherever a version is)")
    asub = p.add_subparsers(dest="alias_command", metavar="SUBCOMMAND", required=True)
    q = asub.add_parser("set", parents=[common], help="point ALIAS at VERSION (creating or moving it)")
    q.add_argument("alias")
    q.add_argument("version")
    q.set_defaults(handler=cmd_set)
    q = asub.add_parser("list", parents=[common], help="every alias and the version it points at")
    q.set_defaults(handler=cmd_list)
    q = asub.add_parser("history", parents=[common], help="every set, move and deletion of ALIAS, oldest first")
    q.add_argument("alias")
    q.set_defaults(handler=cmd_history)
    q = asub.add_parser("delete", parents=[common], help="remove ALIAS (its history keeps it)")
    q.add_argument("alias")
    q.set_defaults(handler=cmd_delete)


def _line(a: Alias) -> str:
    j = a.to_json()
    target = f"{j['kind']} {j['version_id']} {j['version']!r}" if a.version_id is not None else "(deleted)"
    return f"{j['set_at']}  {j['alias']} -> {target}"


def cmd_set(ctx: Context, args: argparse.Namespace) -> None:
    a = ctx.repo.aliases.set(args.alias, args.version)
    ctx.emit(a.to_json(), _line(a))


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    found = ctx.repo.aliases.list()
    ctx.emit([a.to_json() for a in found], "\n".join(_line(a) for a in found) or "no aliases")


def cmd_history(ctx: Context, args: argparse.Namespace) -> None:
    found = ctx.repo.aliases.history(args.alias)
    ctx.emit([a.to_json() for a in found], "\n".join(_line(a) for a in found))


def cmd_delete(ctx: Context, args: argparse.Namespace) -> None:
    j = ctx.repo.aliases.delete(args.alias).to_json()
    ctx.emit(j, f"deleted alias {j['alias']!r} (it pointed at {j['kind']} {j['version']!r})")


__all__ = ["register"]
