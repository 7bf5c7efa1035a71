"""Reading image files as they are: bytes kept encoded, header and pixels checked, nothing re-encoded.

An image is untrusted until checked: its pixel count, read from the header before any decode, is
capped (a 30000×30000 PNG of a few kilobytes would otherwise take gigabytes to decode), its
structure is verified, and by default its pixels are decoded once so a corrupt payload behind a
valid header (garbage IDAT, a truncated JPEG) is refused at import instead of failing in training.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from veml.errors import InvalidInput, StorageError
from veml.formats.paths import ENV_MAX_PIXELS, ReadPolicy, read_regular

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4, "LA": 2, "I": 1, "F": 1, "I;16": 1, "CMYK": 4, "YCbCr": 3}
_BAD_IMAGE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, MemoryError)
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageFile:
    payload: bytes
    format: str
    width: int
    height: int
    channels: int


def _open(payload: bytes, max_pixels: int | None) -> Image.Image:
    """Parse the header only; PIL's own bomb check is replaced by VeML's cap, checked right here.

    PIL's limit (``Image.MAX_IMAGE_PIXELS``, a process-wide setting) would warn on stderr or refuse
    at a size other than the one configured; it is lifted only while the header is parsed, under a
    lock, and VeML's cap applies instead before anything can decode.
    """
    with _OPEN_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(io.BytesIO(payload))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise InvalidInput(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            f"(--max-pixels or {ENV_MAX_PIXELS})"
        )
    return im


def read_image(path: Path, label: str | None = None, policy: ReadPolicy | None = None) -> ImageFile:
    """Read and check one image; any problem is one :class:`InvalidInput` naming the file."""
    where = label or str(path)
    policy = policy or ReadPolicy.from_options()
    return check_image(read_regular(path, where, policy), where, policy)


def check_image(payload: bytes, where: str, policy: ReadPolicy) -> ImageFile:
    """Check encoded image bytes already in memory (an embedded image, e.g. a Hugging Face dataset's)."""
    if not payload:
        raise InvalidInput(f"{where}: image file is empty")
    try:
        with _open(payload, policy.max_pixels) as im:
            fmt = (im.format or "").lower()
            width, height = im.size
            mode = im.mode
            im.verify()  # checks the file's structure (e.g. PNG chunk CRCs) without decoding pixels
        if policy.decode_check:
            with _open(payload, policy.max_pixels) as im:  # verify() leaves the image unusable: reopen
                im.load()  # decodes every pixel: garbage IDAT, a truncated JPEG fail here
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: not a readable image (unknown or corrupt format)") from None
    except _BAD_IMAGE as exc:
        raise InvalidInput(f"{where}: not a readable image ({exc or type(exc).__name__})") from None
    return ImageFile(payload, "jpeg" if fmt == "jpg" else fmt, int(width), int(height), _CHANNELS.get(mode, 3))


def check_decodes(payload: bytes) -> None:
    """Raise :class:`InvalidInput` unless stored bytes decode completely (``veml verify --deep``).

    Stored images passed the pixel cap in force when they were imported; that one is not re-applied.
    """
    try:
        with _open(payload, None) as im:
            im.load()
    except _BAD_IMAGE as exc:
        raise InvalidInput(f"cannot be decoded ({exc or type(exc).__name__})") from None


def decode(payload: bytes, what: str = "stored image") -> Image.Image:
    """Decode stored bytes to an RGB image (the one pixel layout checkout hands out).

    Stored bytes that do not decode (imported without the decode check, or damaged) raise one
    :class:`StorageError` naming ``what`` (checkout passes the sample id and version).  Their pixel
    count passed the cap in force at import.
    """
    try:
        with _open(payload, None) as im:
            return im.convert("RGB")
    except _BAD_IMAGE as exc:
        raise StorageError(f"{what} cannot be decoded: {exc or type(exc).__name__}") from None


def decode_array(payload: bytes, what: str = "stored image", size: tuple[int, int] | None = None) -> np.ndarray:
    """Stored bytes as RGB pixels (H, W, 3) uint8, resized to ``size`` = (height, width) with PIL's
    bilinear filter where they differ: the one decode that training and the pixel cache share."""
    im = decode(payload, what)
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im)
