"""Image folders with one sub-folder per class (torchvision's ImageFolder layout), or, for unlabeled data,
images directly in the folder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pyarrow as pa

from veml.errors import InvalidInput
from veml.formats.batch import ImportBatch, annotation_schema
from veml.formats.detection import image_samples
from veml.formats.images import IMAGE_SUFFIXES, read_image
from veml.formats.paths import ReadPolicy, check_inside, walk_files
from veml.progress import ProgressLike, as_progress


def parse_image_folder(root: Path, progress: ProgressLike | None = None,
                       policy: ReadPolicy | None = None, unlabeled: bool = False) -> ImportBatch:
    """``unlabeled``: a folder without class sub-folders is read as it is (every image in it, no labels)."""
    root = Path(root)
    policy = policy or ReadPolicy.from_options()
    if not root.is_dir():
        raise InvalidInput(f"{root}: directory not found")
    for p in root.iterdir():  # a class folder that is a symlink out of the root is refused by name
        if not p.name.startswith("."):
            check_inside(root, p, f"{root}: {p.name}", policy)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat = not classes and unlabeled
    if not classes and not flat:
        raise InvalidInput(f"{root}: no class sub-folders (expected DIR/<class>/<image>; "
                           "a flat folder of images imports with --role unlabeled)")
    entries: list[tuple[str | None, Path]] = []
    for cls in [None] if flat else classes:
        for f in walk_files(root if cls is None else root / cls, root, policy):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise InvalidInput(f"{f}: not an image file (suffix {f.suffix or 'missing'})")
            entries.append((cls, f))
    if not entries:
        raise InvalidInput(f"{root}: no images in {'the folder' if flat else 'the class sub-folders'}")
    bar = as_progress(progress)
    bar.add_total(len(entries))
    files = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in pool.map(lambda e: read_image(e[1], None, policy), entries):
            files.append(f)
            bar.advance(1)
    rel = [str(p.relative_to(root)) for _, p in entries]
    samples = image_samples(files, rel, [{} for _ in files])
    labelled = [(i, cls) for i, (cls, _) in enumerate(entries) if cls is not None]
    labels = pa.table(
        {
            "sample_index": [i for i, _ in labelled],
            "category": [cls for _, cls in labelled],
            "value": [float("nan")] * len(labelled),
        },
        schema=annotation_schema("labels"),
    )
    return ImportBatch(
        modality="image",
        samples=samples,
        annotations={"labels": labels} if labelled else {},
        category_ids={c: i + 1 for i, c in enumerate(classes)},
        source={"format": "images", "path": str(root.resolve())},
    )


def write_image_folder(out_dir: Path, samples: pa.Table, labels: pa.Table) -> Path:
    """One sub-folder per class; a sample with several labels is written under each of them."""
    out_dir = Path(out_dir)
    by_id = {}
    for row in samples.select(["data_id", "file_name", "format", "payload"]).to_pylist():
        by_id[row["data_id"]] = row
    if labels.num_rows == 0:
        raise InvalidInput("this version has no class labels: export it as coco instead")
    for a in labels.select(["data_id", "category"]).to_pylist():
        row = by_id.get(a["data_id"])
        if row is None:
            continue
        cls = _safe_component(a["category"])
        target = out_dir / cls / f"{row['data_id']}_{_safe_component(Path(row['file_name']).name)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(row["payload"])
    return out_dir


def _safe_component(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "_" for c in str(name)).strip(" .")
    return cleaned or "_"
