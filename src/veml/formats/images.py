"""Reading image files as they are: bytes kept encoded, header checked, nothing re-encoded."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from veml.errors import InvalidInput

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4, "LA": 2, "I": 1, "F": 1, "I;16": 1, "CMYK": 4, "YCbCr": 3}


@dataclass(frozen=True)
class ImageFile:
    payload: bytes
    format: str
    width: int
    height: int
    channels: int


def read_image(path: Path, label: str | None = None) -> ImageFile:
    """Read and check one image; any problem is one :class:`InvalidInput` naming the file."""
    where = label or str(path)
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{where}: image file not found") from None
    except IsADirectoryError:
        raise InvalidInput(f"{where}: is a directory, not an image") from None
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read image: {exc.strerror}") from None
    if not payload:
        raise InvalidInput(f"{where}: image file is empty")
    try:
        with Image.open(io.BytesIO(payload)) as im:
            fmt = (im.format or "").lower()
            width, height = im.size
            mode = im.mode
            im.verify()  # checks the file's structure (e.g. PNG chunk CRCs) without decoding pixels
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{where}: not a readable image ({exc})") from None
    return ImageFile(payload, "jpeg" if fmt == "jpg" else fmt, int(width), int(height), _CHANNELS.get(mode, 3))


def decode(payload: bytes) -> Image.Image:
    """Decode stored bytes to an RGB image (the one pixel layout checkout hands out)."""
    with Image.open(io.BytesIO(payload)) as im:
        return im.convert("RGB")
