"""A model folder (a Hugging Face ``save_pretrained`` directory, a SavedModel) as one tar file.

``run.log_model(path)`` on a directory stores it as one artifact, content-addressed like any other:
the same files give the same bytes (entries sorted, times, owners and modes normalised), so logging
an unchanged folder twice stores nothing new.  Packing refuses what a folder a user did not write
may hold: a symlink leading out of it, something not a regular file, a file or a total over
``VEML_MAX_FILE_MB``, more than :data:`MAX_FILES` files.  Unpacking writes only regular files under
the destination (tarfile's ``data`` filter: no absolute names, no ``..``, no links), into a
destination that does not exist yet, so it never overwrites anything.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from veml.errors import InvalidInput
from veml.formats.paths import ReadPolicy, read_regular, walk_files

MAX_FILES = 10_000
FORMAT = "directory"  # LoggedModel.framework of a folder logged this way


def pack_folder(folder: Path, policy: ReadPolicy) -> tuple[bytes, int]:
    """The folder's files (hidden ones left out) as an uncompressed tar; (its bytes, how many files)."""
    folder = Path(folder)
    files = walk_files(folder, folder, policy)
    if len(files) > MAX_FILES:
        raise InvalidInput(f"{folder}: {len(files)} files, over the {MAX_FILES} a logged model folder may hold")
    if not files:
        raise InvalidInput(f"{folder}: the folder holds no files")
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            rel = path.relative_to(folder).as_posix()
            raw = read_regular(path, f"{folder}: {rel}", policy)
            total += len(raw)
            if total > policy.max_file_bytes:
                raise InvalidInput(f"{folder}: its files add up to over the {policy.max_file_bytes / 2**20:g} MiB "
                                   "limit of one logged model (VEML_MAX_FILE_MB)")
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(raw), 0o644, 0
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue(), len(files)


def unpack_folder(raw: bytes, dest: Path) -> Path:
    """Write a folder :func:`pack_folder` packed into ``dest`` (which must not exist yet); ``dest``."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise InvalidInput(f"{dest} already exists: give a new folder to write the model into")
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES or any(not m.isfile() for m in members):
                raise InvalidInput("the logged folder's archive holds something other than files: not unpacked")
            os.makedirs(dest)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInput(f"cannot unpack the logged folder into {dest}: {exc}") from None
    return dest
