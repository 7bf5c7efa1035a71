"""``veml data …``: import, add, filter, merge, update, diff, list, show, export, prepare, cache, tag."""

from __future__ import annotations

import argparse
from typing import Any

from veml.cli.common import Context, version_line
from veml.errors import InvalidInput
from veml.formats import EXPORT_FORMATS, IMPORT_FORMATS


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", metavar="DIR", help="image directory (coco, bdd)")
    p.add_argument("--label", metavar="COL", help="label column (table)")
    p.add_argument("--adjacency", metavar="FILE", help="sensor adjacency matrix .npy/.npz/.csv (timeseries)")
    p.add_argument("--window", type=int, metavar="STEPS", help="steps per sample window (timeseries, default 288)")
    p.add_argument("--missing-value", type=float, metavar="X", help="value marking a missing reading (timeseries, default 0.0)")
    p.add_argument("--max-file-mb", type=float, metavar="MB",
                   help="largest file read, per file (default 1024, or $VEML_MAX_FILE_MB)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="largest image, in pixels, read from its header before decoding (default 100000000, or $VEML_MAX_IMAGE_PIXELS)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="allow symlinks that lead outside the dataset's directory (default: refused)")
    p.add_argument("--no-decode-check", dest="decode_check", action="store_false",
                   help="skip decoding every image at import (faster; `veml verify --deep` checks later)")


_IMPORT_EXAMPLES = """examples:
  veml data import coco ann.json --images imgs/ --name day    # also CVAT and Label Studio COCO exports
  veml data import yolo yolo_dir/ --name day                  # images/, labels/*.txt, data.yaml or classes.txt
  veml data import voc VOC2012/ --name voc                    # Annotations/*.xml, JPEGImages/
  veml data import hf saved_dataset/ --name hf                # a datasets.save_to_disk directory (extra [hf])
  veml data import bdd det_train.json --images images/100k/train --name bdd"""

_OPTION_KEYS = ("images", "label", "adjacency", "window", "missing_value", "max_file_mb", "max_pixels", "follow_symlinks", "decode_check")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _OPTION_KEYS if getattr(args, k, None) is not None}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    data = sub.add_parser("data", parents=[common], help="data versions")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = dsub.add_parser("import", parents=[common], help="import a data set as a new version",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_IMPORT_EXAMPLES)
    p.add_argument("format", choices=IMPORT_FORMATS)
    p.add_argument("source", nargs="+")
    p.add_argument("--name", required=True)
    p.add_argument("--role", choices=["train", "test", "unlabeled"], default="train")
    _source_options(p)
    p.set_defaults(handler=cmd_import)

    p = dsub.add_parser("add", parents=[common], help="a version with new samples added to BASE")
    p.add_argument("base")
    p.add_argument("format", choices=IMPORT_FORMATS)
    p.add_argument("source", nargs="+")
    p.add_argument("--name", required=True)
    _source_options(p)
    p.set_defaults(handler=cmd_add)

    p = dsub.add_parser("filter", parents=[common], help="samples of BASE with a row matching an SQL expression")
    p.add_argument("base")
    p.add_argument("--where", required=True, metavar="EXPR")
    p.add_argument("--name", required=True)
    p.add_argument("--keep-annotations", choices=["all", "matching"], default="all")
    p.set_defaults(handler=cmd_filter)

    p = dsub.add_parser("merge", parents=[common], help="union of versions")
    p.add_argument("versions", nargs="+")
    p.add_argument("--name", required=True)
    p.set_defaults(handler=cmd_merge)

    p = dsub.add_parser("update", parents=[common], help="same samples, new annotations")
    p.add_argument("base")
    p.add_argument("--coco", required=True, metavar="ANN.json")
    p.add_argument("--name", required=True)
    p.set_defaults(handler=cmd_update)

    p = dsub.add_parser("diff", parents=[common], help="samples added/removed from A to B")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(handler=cmd_diff)

    p = dsub.add_parser("list", parents=[common], help="all data versions")
    p.add_argument("--role", choices=["train", "test", "unlabeled"])
    p.set_defaults(handler=cmd_list)

    p = dsub.add_parser("show", parents=[common], help="a version with its statistics")
    p.add_argument("version")
    p.add_argument("--grid", metavar="FILE.png", help="write a thumbnail grid with boxes and labels drawn")
    p.add_argument("--grid-size", type=int, default=32, metavar="N", help="thumbnails in the grid (default 32)")
    p.add_argument("--plot", metavar="FILE.png", help="write the distributions as a chart")
    p.set_defaults(handler=cmd_show)

    p = dsub.add_parser("export", parents=[common], help="write a version out as COCO, YOLO, VOC, BDD100K, "
                        "a Hugging Face dataset or an image folder", formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  veml data export day --format yolo --out exported/day-yolo")
    p.add_argument("version")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_export)

    p = dsub.add_parser("prepare", parents=[common], help="a version with preparation steps recorded")
    p.add_argument("base")
    p.add_argument("--name", required=True)
    p.add_argument("--resize", metavar="WxH")
    p.add_argument("--normalize", choices=["auto", "imagenet"])
    p.add_argument("--impute", choices=["mean", "median", "zero", "ffill"])
    p.set_defaults(handler=cmd_prepare)

    p = dsub.add_parser("cache", parents=[common], help="decode a version's images once into the pixel cache "
                        "(data loaders and training read it), or --clear it")
    p.add_argument("version", nargs="?")
    p.add_argument("--size", metavar="N|WxH", help="output size: N (square) or WxH as in prepare --resize "
                   "(default: the version's resize step, else the images' own size)")
    p.add_argument("--workers", type=int, metavar="N", help="decoding threads (default: one per core, at most 8)")
    p.add_argument("--clear", action="store_true", help="remove every cached pixel (rebuilt on next use)")
    p.set_defaults(handler=cmd_cache)

    p = dsub.add_parser("tag", parents=[common], help="tag a version (or --delete a tag)")
    p.add_argument("version", nargs="?")
    p.add_argument("tag")
    p.add_argument("--delete", action="store_true")
    p.set_defaults(handler=cmd_tag)


def _emit_version(ctx: Context, node, verb: str) -> None:
    v = node.to_json()
    ctx.emit(v, f"{verb} {v['kind']} version {v['id']} {v['name']!r}: {v.get('samples', 0)} samples, {v.get('annotations', 0)} annotations")


def _emit_imported(ctx: Context, node) -> None:
    """An import's version, with ``new_samples``: how many of its samples brought bytes not stored before
    (every table row: rows are stored as they come)."""
    v = node.to_json()
    v["new_samples"] = node.props.get("source", {}).get("new_samples")
    ctx.emit(v, f"created {v['kind']} version {v['id']} {v['name']!r}: {v.get('samples', 0)} samples "
                f"({v['new_samples']} new), {v.get('annotations', 0)} annotations")


#: what an import's progress bar counts, by format (images otherwise)
_UNITS = {"table": "row", "timeseries": "window"}


def cmd_import(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress(f"importing {args.format}", unit=_UNITS.get(args.format, "img")) as bar:
        node = ctx.repo.data.import_(args.format, args.source, args.name, role=args.role, progress=bar, **_options(args))
    _emit_imported(ctx, node)


def cmd_add(ctx: Context, args: argparse.Namespace) -> None:
    with ctx.progress(f"importing {args.format}", unit=_UNITS.get(args.format, "img")) as bar:
        node = ctx.repo.data.add(args.base, args.format, args.source, args.name, progress=bar, **_options(args))
    _emit_imported(ctx, node)


def cmd_filter(ctx: Context, args: argparse.Namespace) -> None:
    _emit_version(ctx, ctx.repo.data.filter(args.base, args.where, args.name, args.keep_annotations), "created")


def cmd_merge(ctx: Context, args: argparse.Namespace) -> None:
    _emit_version(ctx, ctx.repo.data.merge(args.versions, args.name), "created")


def cmd_update(ctx: Context, args: argparse.Namespace) -> None:
    _emit_version(ctx, ctx.repo.data.update(args.base, args.coco, args.name), "created")


def cmd_diff(ctx: Context, args: argparse.Namespace) -> None:
    d = ctx.repo.data.diff(args.a, args.b).to_json()
    ctx.emit(d, f"added {d['added']}, removed {d['removed']}, common {d['common']}")


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    versions = [n.to_json() for n in ctx.repo.data_versions(role=args.role)]
    ctx.emit(versions, "\n".join(version_line(v) for v in versions) or "no data versions yet")


def cmd_show(ctx: Context, args: argparse.Namespace) -> None:
    from veml.versions.stats import compute_stats
    from veml.viz import plot_distributions, thumbnail_grid

    repo = ctx.repo
    node = repo.data.get(args.version)
    view = repo.data.checkout(node)
    stats = compute_stats(view)
    out = node.to_json()
    out["categories"] = stats["categories"]
    out["stats"] = stats
    if args.grid:
        if node.props.get("modality") != "image":
            raise InvalidInput("--grid applies to image versions")
        n = min(len(view), max(args.grid_size, 1))
        items = list(zip(view.read_images(range(n)), (view.annotations_of(d) for d in view.data_ids[:n])))
        out["grid"] = str(thumbnail_grid(items, args.grid, categories=sorted(node.props.get("category_ids", {}))))
    if args.plot:
        out["plot"] = str(plot_distributions(stats, args.plot, title=node.name))
    ctx.emit(out, lambda: _show_text(out))


def _show_text(v: dict[str, Any]) -> str:
    s = v["stats"]
    lines = [version_line(v), f"  parents: {v['parents'] or '-'}   created: {v['created_at']}"]
    if v.get("preparation"):
        lines.append("  preparation: " + " -> ".join(_step_text(st) for st in v["preparation"]))
    if s["categories"]:
        lines.append("  categories: " + ", ".join(f"{k}={n}" for k, n in s["categories"].items()))
    if "image_sizes" in s:
        lines.append("  image sizes: " + ", ".join(f"{k} ({n})" for k, n in list(s["image_sizes"].items())[:5]))
    if "boxes" in s:
        b = s["boxes"]
        lines.append(f"  boxes: {b['count']}, per image median {b['per_image']['median']:.1f}, "
                     f"width median {b['width']['median']:.1f}px, height median {b['height']['median']:.1f}px")
    if "pixels" in s:
        p = s["pixels"]
        lines.append(f"  pixel mean {p['mean']} std {p['std']} (from {p['images_used']} images)")
    if "series" in s:
        x = s["series"]
        lines.append(f"  series: {x['windows']} windows x {x['sensors']} sensors, {x['total_steps']} steps, "
                     f"missing {x['missing_values']} ({x['missing_fraction']:.2%})")
    if "columns" in s:
        for name, c in s["columns"].items():
            lines.append(f"  column {name}: {c}")
    for key in ("grid", "plot"):
        if key in v:
            lines.append(f"  wrote {v[key]}")
    return "\n".join(lines)


def _step_text(step: dict[str, Any]) -> str:
    parts = []
    for k, val in step.items():
        if k == "op":
            continue
        parts.append(f"{k}=[{len(val)} values]" if isinstance(val, list) and len(val) > 4 else f"{k}={val}")
    return f"{step['op']}({', '.join(parts)})"


def cmd_export(ctx: Context, args: argparse.Namespace) -> None:
    path = ctx.repo.data.export(args.version, args.format, args.out)
    ctx.emit({"path": str(path)}, f"exported to {path}")


def cmd_prepare(ctx: Context, args: argparse.Namespace) -> None:
    from veml.versions.preparation import parse_step_args

    steps = parse_step_args(args.resize, args.normalize, args.impute)
    _emit_version(ctx, ctx.repo.data.prepare(args.base, args.name, steps), "created")


def _size(text: str | None) -> tuple[int, int] | None:
    """``--size 224`` or ``--size 320x240`` (width x height) as (height, width)."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise InvalidInput(f"--size must look like 224 or 320x240 (width x height), not {text!r}")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[1], parts[0])


def cmd_cache(ctx: Context, args: argparse.Namespace) -> None:
    if args.clear:
        if args.version is not None or args.size is not None:
            raise InvalidInput("--clear takes no VERSION or --size: it removes every cached pixel")
        c = ctx.repo.data.clear_pixel_cache().to_json()
        ctx.emit(c, f"removed {c['transforms']} pixel cache(s), {c['bytes_freed']} bytes")
        return
    if args.version is None:
        raise InvalidInput("usage: veml data cache VERSION [--size N|WxH] (or --clear)")
    if args.workers is not None and args.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    with ctx.progress("decoding", unit="img") as bar:
        r = ctx.repo.data.cache_pixels(args.version, _size(args.size), workers=args.workers, progress=bar).to_json()
    repaired = f", {r['repaired']} damaged segment(s) dropped and rebuilt" if r["repaired"] else ""
    ctx.emit(r, f"{r['version']}: {r['samples']} samples at {r['width']}x{r['height']}, {r['decoded']} decoded, "
                f"{r['reused']} already cached{repaired}; cache {r['cache_bytes']} bytes in {r['path']}")


def cmd_tag(ctx: Context, args: argparse.Namespace) -> None:
    if args.delete:
        ctx.repo.data.untag(args.tag)
        ctx.emit({"tag": args.tag, "deleted": True}, f"deleted tag {args.tag!r}")
        return
    if args.version is None:
        raise InvalidInput("usage: veml data tag VERSION TAG (or --delete TAG)")
    node = ctx.repo.data.tag(args.version, args.tag)
    ctx.emit(node.to_json(), f"tagged {node.id} {node.name!r} as {args.tag!r}")
