"""Images through Pillow: bounded in pixels, metadata stripped by re-encoding, a thumbnail.

Runs in a worker thread (`asyncio.to_thread`): decoding is CPU work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's name for each format we take, by the sniffed content type.
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
THUMBNAIL_TYPE = "image/webp"


class ImageTooLarge(Exception):
    """More pixels than `max_image_pixels` (a decompression bomb, or just too big)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    reencoded: bool  # `out` holds the stripped image (else the original is kept: a GIF)


def bound_pixels(max_pixels: int) -> None:
    """Make Pillow itself refuse to decode more than `max_pixels` (and 2x: an error):
    a second guard behind the explicit check of `process`."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def process(
    src: Path, content_type: str, out: Path, thumb: Path, max_pixels: int, thumb_px: int
) -> ImageInfo | None:
    """Check, strip and thumbnail the image in `src`; None when it is not one Pillow
    can decode as the sniffed type (it is then kept as an opaque file).

    The size comes from the header before anything is decoded: over `max_pixels`
    (frames included) raises `ImageTooLarge`. JPEG, PNG and WebP are re-encoded into
    `out` with the EXIF orientation applied and no metadata (EXIF, GPS, XMP, text
    chunks); a GIF, which has no EXIF, keeps its bytes (and its animation).
    """
    try:
        with Image.open(src, formats=[FORMATS[content_type]]) as im:
            width, height = im.size
            frames = getattr(im, "n_frames", 1)
            if width * height * max(1, frames if im.format != "GIF" else 1) > max_pixels:
                raise ImageTooLarge(f"{width}x{height} pixels, over {max_pixels}")
            _thumbnail(im, thumb, thumb_px)
            if im.format == "GIF":
                return ImageInfo(width, height, reencoded=False)
            if frames > 1:  # an animated PNG or WebP: every frame, metadata left out
                im.seek(0)
                im.save(out, im.format, save_all=True)
                return ImageInfo(width, height, reencoded=True)
            upright = ImageOps.exif_transpose(im)
            width, height = upright.size
            options: dict[str, object] = {}
            if im.format == "JPEG":
                options["quality"] = 90
                if upright.mode not in ("RGB", "L", "CMYK"):
                    upright = upright.convert("RGB")
            if icc := im.info.get("icc_profile"):  # colours, not metadata about the user
                options["icc_profile"] = icc
            upright.save(out, im.format, **options)
            return ImageInfo(width, height, reencoded=True)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


def _thumbnail(im: Image.Image, thumb: Path, px: int) -> None:
    im.seek(0)
    small = ImageOps.exif_transpose(im.copy())
    small.thumbnail((px, px))
    has_alpha = small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info
    small = small.convert("RGBA" if has_alpha else "RGB")
    small.save(thumb, "WEBP", quality=80)
