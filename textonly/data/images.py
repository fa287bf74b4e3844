"""The one way the study opens an image: confined to its folder and guarded against decompression bombs.

:func:`load_image` is what every reader calls (evaluation, training, conversion, token
counts, pretraining, the report): it refuses an image path that leaves its folder (``..``,
an absolute path, a symlink pointing out), refuses an image with more than
:data:`MAX_IMAGE_PIXELS` pixels before decoding it, and returns the image decoded in RGB.
:func:`check_image` applies the same guard without decoding the pixels, for checks of a
whole dataset and for image bytes about to be written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from PIL import Image

from textonly.core.errors import DatasetError

#: Images larger than this many pixels are refused before decoding (a decompression bomb
#: or a wrong file; the study's images are at most a few megapixels).
MAX_IMAGE_PIXELS = 40_000_000

T = TypeVar("T")


def confined_file(folder: str | os.PathLike, image_path: str, where: str) -> Path:
    """The file that ``image_path`` names inside ``folder``, resolved; a path (or symlink) that leaves it is refused."""
    if os.path.isabs(image_path) or Path(image_path).drive:
        raise DatasetError(f"{where}: image_path {image_path!r} is absolute; it must be relative to {folder}")
    inside = Path(folder).resolve()
    candidate = (inside / image_path).resolve()
    if inside not in candidate.parents:
        raise DatasetError(f"{where}: image_path {image_path!r} escapes the folder {folder}; refused")
    return candidate


def _guarded(source: Path | BinaryIO, where: str, name: str, use: Callable[[Image.Image], T]) -> T:
    """``use(image)`` on the opened image, once its size (read from the header) is known to be safe."""
    try:
        with warnings.catch_warnings():
            # Pillow's own, higher limit: a warning first, which must refuse too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DatasetError(f"{where}: image {name} is {width}x{height} pixels, over the safe limit of "
                                       f"{MAX_IMAGE_PIXELS:,} pixels; refused")
                return use(image)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(f"{where}: image {name} is too large to decode safely; refused") from None
    except FileNotFoundError:
        raise DatasetError(f"{where}: image {name} is missing") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DatasetError(f"{where}: image {name} cannot be read as an image ({exc})") from None


def check_image(source: Path | BinaryIO, where: str, name: str | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file or stream known to be one, without decoding its pixels.

    The same guard as :func:`load_image`; ``Image.verify`` checks the file's structure.
    """
    name = name or getattr(source, "name", None) or "(in memory)"

    def verify(image: Image.Image) -> tuple[int, int]:
        image.verify()
        return image.size

    return _guarded(source, where, Path(name).name, verify)


def load_image(folder: str | os.PathLike, image_path: str, where: str | None = None) -> Image.Image:
    """The image ``image_path`` (relative to ``folder``, which it must not leave) decoded in RGB.

    For a dataset in the study's layout, ``folder`` is its ``images/`` folder and
    ``image_path`` a record's ``image_path``. Raises :class:`DatasetError` (one line) for a
    path that leaves ``folder``, an image over :data:`MAX_IMAGE_PIXELS` pixels, or a file
    that is not a readable image. The source's ``format`` (``"PNG"``, ``"JPEG"``, ...) is
    kept on the returned image, so that a caller can name its MIME type.
    """
    where = where or str(folder)
    file = confined_file(folder, image_path, where)

    def decode(image: Image.Image) -> Image.Image:
        rgb = image.convert("RGB")  # decodes every pixel, so a truncated file fails here
        rgb.format = image.format
        return rgb

    return _guarded(file, where, image_path, decode)
