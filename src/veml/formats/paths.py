"""Where dataset readers may read from, and how much: the one place every reader's paths are checked.

A dataset file is untrusted input.  A name inside it (a COCO ``file_name``) resolves under the
directory it belongs to: absolute names and ``..`` are refused, and so is a symlink whose target
leaves that directory unless the user opted in (``--follow-symlinks``).  Only regular files are
read: a FIFO would block the import forever and a device (``/dev/zero``) never ends, so the file
type is checked with ``stat`` before opening and again with ``fstat`` on the open descriptor
(opened non-blocking, so even a FIFO swapped in between cannot hang).  Every file has a size cap.
Readers take the file's bytes from :func:`read_regular` and parse them from memory, so what was
checked is what is parsed.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

from veml.errors import InvalidInput

DEFAULT_MAX_FILE_MB = 1024  # a real COCO train2017 annotation file is 448 MB
DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: 300 MB decoded as RGB
ENV_MAX_FILE_MB = "VEML_MAX_FILE_MB"
ENV_MAX_PIXELS = "VEML_MAX_IMAGE_PIXELS"


@dataclass(frozen=True)
class ReadPolicy:
    """Limits on what an import reads (DESIGN section 8: ``veml data import`` options)."""

    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    decode_check: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "ReadPolicy":
        """Defaults, then the environment, then explicit options (``max_file_mb``, ``max_pixels``, …)."""
        options = options or {}
        mb = options.get("max_file_mb")
        if mb is None:
            mb = _env_number(ENV_MAX_FILE_MB, DEFAULT_MAX_FILE_MB)
        pixels = options.get("max_pixels")
        if pixels is None:
            pixels = _env_number(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS)
        if not _positive(mb):
            raise InvalidInput(f"--max-file-mb must be a positive finite number, not {mb}")
        if not _positive(pixels):
            raise InvalidInput(f"--max-pixels must be a positive finite number, not {pixels}")
        policy = cls(max_file_bytes=int(float(mb) * 1024 * 1024), max_pixels=int(pixels))
        return replace(
            policy,
            follow_symlinks=bool(options.get("follow_symlinks", False)),
            decode_check=bool(options.get("decode_check", True)),
        )


def _positive(value: float) -> bool:
    """A usable limit: positive and finite (``inf`` or ``1e400`` would overflow ``int()``)."""
    return value > 0 and (isinstance(value, int) or math.isfinite(value))


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number") from None
    if not _positive(value):
        raise InvalidInput(f"{name}={raw!r} must be a positive finite number")
    return value


def resolve_under(root: Path, name: str, where: str, policy: ReadPolicy) -> Path:
    """``root / name``, refused unless it stays inside ``root`` (``where`` names the entry in errors)."""
    if "\x00" in name:
        raise InvalidInput(f"{where}: file name contains a NUL byte")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise InvalidInput(f"{where}: absolute file name {name!r} is refused: names are relative to {root}")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise InvalidInput(f"{where}: file name {name!r} contains '..': names must stay inside {root}")
    return check_inside(root, Path(root) / name, where, policy)


def check_inside(root: Path, path: Path, where: str, policy: ReadPolicy) -> Path:
    """``path`` (under ``root`` by name), refused if a symlink on the way leads out of ``root``."""
    if policy.follow_symlinks:
        return path
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and not real.is_relative_to(real_root):
        raise InvalidInput(
            f"{where}: {path} is a symlink leading outside {root} (to {real}); pass --follow-symlinks to allow it"
        )
    return path


def read_regular(path: Path, where: str | None, policy: ReadPolicy, too_big: str | None = None) -> bytes:
    """The bytes of a regular file no larger than the policy's cap; anything else is one InvalidInput
    (``too_big``: the message when the file is over the cap, if not the default naming --max-file-mb)."""
    where = where or str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidInput(f"{where}: file not found") from None
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read: {exc.strerror}") from None
    _check_stat(st, where, policy, too_big)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read: {exc.strerror}") from None
    try:
        _check_stat(os.fstat(fd), where, policy, too_big)  # the file opened is the file checked
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_file_bytes:  # grew since fstat
                raise InvalidInput(too_big or _too_big(where, total, policy))
            chunks.append(chunk)
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _check_stat(st: os.stat_result, where: str, policy: ReadPolicy, too_big: str | None) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise InvalidInput(f"{where}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise InvalidInput(f"{where}: is {kind}: only regular files are read")
    if st.st_size > policy.max_file_bytes:
        raise InvalidInput(too_big or _too_big(where, st.st_size, policy))


def _too_big(where: str, size: int, policy: ReadPolicy, what: str = "file is") -> str:
    return (f"{where}: {what} {size / 2**20:.1f} MiB, over the {policy.max_file_bytes / 2**20:g} MiB limit "
            f"(--max-file-mb or {ENV_MAX_FILE_MB})")


def check_unpacked(size: int, where: str, policy: ReadPolicy) -> None:
    """Refuse a compressed file (npz, Parquet, HDF5 dataset) whose contents would unpack past the per-file cap."""
    if size > policy.max_file_bytes:
        raise InvalidInput(_too_big(where, size, policy, "unpacks to"))


def walk_files(start: Path, root: Path, policy: ReadPolicy) -> list[Path]:
    """Every non-hidden entry below ``start`` (inside ``root``) that is not a directory, sorted.

    Directories are entered (a symlinked one only if it stays inside ``root`` or symlinks are
    followed; each real directory once, so a symlink loop ends).  Non-regular entries are returned
    too: the reader refuses them by name rather than skipping them silently.
    """
    out: list[Path] = []
    seen: set[str] = set()

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:
            return
        seen.add(real)
        for entry in sorted(d.iterdir()):
            if entry.name.startswith("."):
                continue
            check_inside(root, entry, f"{root}: {entry.relative_to(root)}", policy)
            if entry.is_dir():
                visit(entry)
            else:
                out.append(entry)

    visit(Path(start))
    return out
