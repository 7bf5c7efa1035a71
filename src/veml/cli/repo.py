"""Repository-level commands: init, lineage, serve, demo, upgrade, verify, gc."""

from __future__ import annotations

import argparse
import sys

import veml
from veml.cli.common import Context, version_line
from veml.errors import InvalidInput
from veml.versions.lineage import DEFAULT_PAGE, MAX_PAGE, check_limit, parse_cursor, to_cypher, to_dot


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a repository")
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--metadata-url", help="graph/metadata database (default sqlite:///meta.db inside .veml/)")
    p.add_argument("--storage-url", help="sample store location: a path or s3://bucket/prefix (default .veml/data)")
    p.add_argument("--artifacts-url", help="artifact store location: a path or s3://bucket/prefix (default .veml/artifacts)")
    p.add_argument("--embeddings-url", help="embedding cache location: a path or s3://bucket/prefix (default .veml/embeddings)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("lineage", parents=[common], help="ancestors/descendants of a version")
    p.add_argument("version")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--up", dest="direction", action="store_const", const="up", help="ancestors (default)")
    d.add_argument("--down", dest="direction", action="store_const", const="down", help="descendants")
    d.add_argument("--both", dest="direction", action="store_const", const="both")
    p.add_argument("--hops", type=int, default=None, help="hop limit")
    o = p.add_mutually_exclusive_group()
    o.add_argument("--format", choices=["json", "dot", "cypher"], default=None)
    o.add_argument("--ids-only", action="store_true", help="every version id of the answer at once, no nodes or edges")
    p.add_argument("--limit", type=_page_size, default=None, metavar="N",
                   help=f"versions per page, in id order (default {DEFAULT_PAGE:,}, at most {MAX_PAGE:,})")
    p.add_argument("--cursor", type=_cursor, default=None, metavar="C", help="the next page: the next_cursor of the previous one")
    p.set_defaults(handler=cmd_lineage, direction="up")

    p = sub.add_parser("serve", parents=[common], help="the REST API under /api/v1 (OpenAPI at /api/v1/openapi.json)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (anything but loopback needs a token: --token-file or $VEML_TOKEN)")
    p.add_argument("--port", type=int, default=8000)
    t = p.add_mutually_exclusive_group()
    t.add_argument("--token-file", metavar="PATH",
                   help="require 'Authorization: Bearer TOKEN' on every request, TOKEN being this file's first line "
                        "(default: $VEML_TOKEN, if set)")
    t.add_argument("--token", help="as --token-file, but the token shows in the process list (ps): avoid")
    p.add_argument("--max-body-mb", type=float, metavar="MB", help="cap on a JSON request body (default 1)")
    p.add_argument("--max-upload-mb", type=float, metavar="MB", help="cap on an upload to predict (default 32)")
    p.add_argument("--workers", type=int, help="threads for CPU-bound requests: predict, filter, images (default: CPUs, at most 4)")
    p.add_argument("--queue", type=int, help="requests that may wait for a worker before the server answers 503 (default 16)")
    p.add_argument("--request-timeout", type=float, metavar="SECONDS",
                   help="time budget of a request until its answer starts; past it 504 (default 60)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("demo", parents=[common], help="the self-driving walk-through on generated data")
    p.add_argument("--path", default="veml-demo", help="where to build the demo repository (default ./veml-demo)")
    p.add_argument("--images", type=int, default=300, help="generated images per driving domain (default 300)")
    p.add_argument("--no-train", action="store_true", help="only the data-versioning part (no model training)")
    p.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                   help="then serve the UI on 127.0.0.1 and print its URL, Ctrl-C stops (default: on a terminal, without --json)")
    p.add_argument("--port", type=int, default=8000, help="with --serve (default 8000)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("verify", parents=[common], help="check every version against its digests")
    p.add_argument("--deep", action="store_true", help="also decode every stored image completely (slower)")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("upgrade", parents=[common], help="migrate the metadata database to this VeML's schema")
    p.set_defaults(handler=cmd_upgrade)

    p = sub.add_parser("gc", parents=[common], help="reclaim rows no version references")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="keep rows of a stalled writer gc cannot see (another host) this long after it started; "
                        "a live writer's rows are always kept, a dead one's reclaimed at once (default 3600)")
    p.set_defaults(handler=cmd_gc)


def cmd_init(ctx: Context, args: argparse.Namespace) -> None:
    repo = veml.init(args.path, metadata_url=args.metadata_url, storage_url=args.storage_url,
                     artifacts_url=args.artifacts_url, embeddings_url=args.embeddings_url)
    repo.close()
    ctx.emit({"path": str(repo.root)}, f"initialised VeML repository in {repo.dir}")


def _page_size(text: str) -> int:
    try:
        return check_limit(int(text))
    except (ValueError, InvalidInput):
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_PAGE:,}, not {text!r}") from None


def _cursor(text: str) -> str:
    try:
        parse_cursor(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_lineage(ctx: Context, args: argparse.Namespace) -> None:
    if args.ids_only:
        if args.limit is not None or args.cursor is not None:
            raise InvalidInput("--ids-only lists every id at once: --limit and --cursor page versions and edges")
        found = ctx.repo.lineage.ids(args.version, args.direction, args.hops)
        ctx.emit(found.to_json(), lambda: "\n".join(map(str, found.ids)))
        return
    lin = ctx.repo.lineage.page(args.version, args.direction, args.hops, args.limit or DEFAULT_PAGE, args.cursor)
    if lin.next_cursor is not None and not ctx.as_json:
        print(f"note: versions {len(lin.nodes):,} of {lin.total:,}; the next page: --cursor {lin.next_cursor}", file=sys.stderr)
    more = {"total": lin.total, "next_cursor": lin.next_cursor}
    if args.format in ("dot", "cypher"):
        text = to_dot(lin) if args.format == "dot" else to_cypher(lin)
        ctx.emit({"format": args.format, "text": text, **more}, text)
    elif args.format == "json":
        ctx.emit(lin.to_json())
    else:
        nodes = "\n".join(version_line(n.to_json()) for n in lin.nodes)
        edges = "\n".join(f"  {e.src} -[{e.kind}]-> {e.dst}" for e in lin.edges + lin.boundary_edges)
        ctx.emit(lin.to_json(), nodes + (f"\nedges:\n{edges}" if edges else ""))


def cmd_serve(ctx: Context, args: argparse.Namespace) -> None:
    import sys

    from veml.server import serve
    from veml.server.main import check_bind

    from veml.server.limits import Limits
    from veml.server.main import TOKEN_ENV, resolve_token

    root = ctx.repo.root  # resolve (and refuse a missing repository) before binding
    token = resolve_token(args.token, args.token_file)
    limits = Limits.of(args.max_body_mb, args.max_upload_mb, args.workers, args.queue, args.request_timeout)
    check_bind(args.host, args.port, token)
    if args.token is not None:
        print(f"warning: --token shows the token to every user of this machine (ps); pass it in ${TOKEN_ENV} "
              "or --token-file instead", file=sys.stderr)
    print(f"serving {root} on http://{args.host}:{args.port}/api/v1 (Ctrl-C stops)", file=sys.stderr)
    serve(root, host=args.host, port=args.port, token=token, limits=limits)


def cmd_demo(ctx: Context, args: argparse.Namespace) -> None:
    import sys

    from veml.demo import run_demo

    log = (lambda m: None) if ctx.as_json else (lambda m: print(m, file=sys.stderr))
    summary = run_demo(args.path, images=args.images, log=log, train=not args.no_train)
    lines = [f"demo repository: {summary['path']}  ({summary['seconds']} s, verify {'ok' if summary['verify_ok'] else 'FAILED'})",
             f"lineage of {summary['lineage_of']}: " + ", ".join(summary["lineage"]["nodes"])]
    for key, lc in summary.get("lifecycles", {}).items():
        metric = next((f"{k}={v:.3f}" for k, v in lc.items() if k in ("accuracy", "map50", "mae")), "")
        lines.append(f"lifecycle {key}: {metric} on {lc['evaluated_on']}, {lc['latency_ms']:.2f} ms per sample ({lc['seconds']} s)")
    lines.append("next:")
    lines += [f"  {c}" for c in summary["next"]]
    if args.serve is None:  # a person at a terminal gets the UI; scripts and --json get their summary and the prompt back
        args.serve = not ctx.as_json and sys.stdout.isatty() and sys.stdin.isatty()
    if args.serve:
        from veml.server.main import check_bind

        check_bind("127.0.0.1", args.port, None)
        summary["ui"] = f"http://127.0.0.1:{args.port}/"
        lines.append(f"UI: {summary['ui']}  (serving; Ctrl-C stops)")
    ctx.emit(summary, "\n".join(lines))
    if args.serve:
        sys.stdout.flush()
        from veml.server import serve

        serve(summary["path"], host="127.0.0.1", port=args.port)


def cmd_upgrade(ctx: Context, args: argparse.Namespace) -> None:
    from veml.repository import upgrade

    report = upgrade(ctx.repo_path)
    text = (f"upgraded {report['path']}: metadata schema {report['from']} -> {report['to']}" if report["upgraded"]
            else f"{report['path']} is up to date (metadata schema {report['to']})")
    ctx.emit(report, text)


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.repo.verify(deep=args.deep)
    lines = [f"checked {report.versions} versions, {report.samples} samples, {report.annotations} annotations, {report.artifacts} artifacts"]
    lines += [f"DAMAGED: {p}" for p in report.problems]
    lines.append("ok" if report.ok else f"{len(report.problems)} problem(s)")
    ctx.emit(report.to_json(), "\n".join(lines))
    return 0 if report.ok else 1


def cmd_gc(ctx: Context, args: argparse.Namespace) -> None:
    report = ctx.repo.gc(grace_s=args.grace)
    r = report.to_json()
    ctx.emit(r, f"reclaimed {r['samples_reclaimed']} samples and {r['annotations_reclaimed']} annotation rows; "
                f"sample store {r['bytes_before']} -> {r['bytes_after']} bytes; "
                f"pixel cache {r['pixel_cache_bytes_freed']} bytes freed")
