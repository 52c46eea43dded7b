"""The offline default provider: factual alt text computed from the pixels, with Pillow.

It cannot say what a picture *shows*, so it says only what it can measure — size,
orientation, dominant colours in plain words, brightness, transparency, greyscale and
animation — rather than guess. Output is deterministic for the same image bytes: the
image is reduced to a fixed-size thumbnail, quantised with median cut (no randomness) and
every tie is broken by name.

Example: "A landscape image, 1200 by 800 pixels, mostly dark blue and white, bright overall."
"""

from __future__ import annotations

import colorsys
import io
from collections import Counter
from typing import cast

from PIL import Image, ImageChops, ImageStat

from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError

THUMBNAIL_SIZE = (64, 64)
QUANTIZE_COLOURS = 12
MIN_COLOUR_SHARE = 0.1  # a colour must cover a tenth of the visible area to be named
MAX_COLOURS_NAMED = 3
OPAQUE = 128  # alpha at or above this counts as visible
GREY_TOLERANCE = 8  # max channel spread (0-255) still called grey

# Upper hue bound (degrees) -> plain colour word.
_HUES = (
    (15, "red"),
    (40, "orange"),
    (65, "yellow"),
    (165, "green"),
    (195, "turquoise"),
    (250, "blue"),
    (320, "purple"),
    (345, "pink"),
    (361, "red"),
)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode `data` fully, refusing decompression bombs before any pixels are decoded.

    Image.open only reads the header, so the explicit size check runs before the
    expensive part; Pillow's own global bomb guard is a second line of defence.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise CaptionError(f"refused: image exceeds the {max_pixels} pixel limit") from None
    except Exception as exc:  # Pillow raises many types on hostile input; all mean "no"
        raise CaptionError(f"not a decodable image: {_reason(exc)}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise CaptionError(
            f"refused: image is {width} by {height} pixels, over the {max_pixels} pixel limit"
        )
    try:
        image.load()
    except Exception as exc:
        image.close()
        raise CaptionError(f"not a decodable image: {_reason(exc)}") from None
    return image


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def colour_name(red: int, green: int, blue: int) -> str:
    """Name an sRGB colour with everyday words ("dark blue", "light grey", "brown")."""
    hue, lightness, _ = colorsys.rgb_to_hls(red / 255, green / 255, blue / 255)
    if lightness < 0.1:
        return "black"
    if lightness > 0.93:
        return "white"
    if max(red, green, blue) - min(red, green, blue) < 0.12 * 255:
        return _shade(lightness) + "grey"
    base = next(name for bound, name in _HUES if hue * 360 < bound)
    if base == "orange" and lightness < 0.45:
        return "brown"
    if base == "red" and lightness > 0.72:
        return "pink"
    return _shade(lightness) + base


def _shade(lightness: float) -> str:
    if lightness < 0.3:
        return "dark "
    if lightness > 0.72:
        return "light "
    return ""


def _thumbnail(image: Image.Image) -> Image.Image:
    """A small RGBA copy of the first frame: cheap to analyse, and the same every time."""
    small = image.convert("RGBA") if image.mode in ("P", "PA", "1") else image.copy()
    small.thumbnail(THUMBNAIL_SIZE, Image.Resampling.BOX)
    return small.convert("RGBA")


def dominant_colours(rgba: Image.Image) -> list[str]:
    """Up to three colour names covering the most visible pixels, biggest share first."""
    indexed = rgba.convert("RGB").quantize(QUANTIZE_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = indexed.getpalette() or []
    names = {i: colour_name(*palette[i * 3 : i * 3 + 3]) for i in range(len(palette) // 3)}
    alpha = rgba.getchannel("A").tobytes()
    counts = Counter(
        names[index] for index, a in zip(indexed.tobytes(), alpha, strict=True) if a >= OPAQUE
    )
    total = sum(counts.values())
    if not total:
        return []
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    chosen = [name for name, count in ranked if count / total >= MIN_COLOUR_SHARE]
    return (chosen or [ranked[0][0]])[:MAX_COLOURS_NAMED]


def brightness(rgba: Image.Image) -> str:
    """'dark', 'bright' or 'medium' from the mean luminance of the visible pixels.

    Luma (ITU-R 601, 0-255) under 70 is dark and over 170 bright, so pure red (76) reads
    as medium and navy (15) as dark, matching what a sighted reader would say.
    """
    mask = rgba.getchannel("A").point(lambda a: 255 if a >= OPAQUE else 0)
    mean = ImageStat.Stat(rgba.convert("L"), mask=mask).mean[0]
    if mean < 70:
        return "dark"
    if mean > 170:
        return "bright"
    return "medium"


def _extrema(band: Image.Image) -> tuple[float, float]:
    """(min, max) of a single-band image; Pillow's return type covers multi-band too."""
    return cast(tuple[float, float], band.getextrema())


def is_greyscale(image: Image.Image, rgba: Image.Image) -> bool:
    """True for grey modes, and for colour images whose channels never noticeably differ."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    red, green, blue, _ = rgba.split()
    spread = max(
        _extrema(ImageChops.difference(red, green))[1],
        _extrema(ImageChops.difference(green, blue))[1],
    )
    return spread <= GREY_TOLERANCE


def has_transparency(rgba: Image.Image) -> bool:
    """True if some visible area is see-through (thumbnail alpha smooths away single pixels)."""
    return _extrema(rgba.getchannel("A"))[0] < 250


def orientation(width: int, height: int) -> str:
    """'square' within 3%, else landscape or portrait."""
    if abs(width - height) <= 0.03 * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


_BRIGHTNESS_PHRASES = {
    "dark": "dark overall",
    "bright": "bright overall",
    "medium": "of medium brightness",
}


def _list_words(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe_image(image: Image.Image) -> str:
    """One sentence of measured facts about an already decoded image."""
    width, height = image.size
    frames = int(getattr(image, "n_frames", 1))
    image.seek(0)
    rgba = _thumbnail(image)
    colours = dominant_colours(rgba)
    adjectives = ["animated"] if frames > 1 else []
    if colours and is_greyscale(image, rgba):
        adjectives.append("greyscale")
    adjectives += [orientation(width, height), "image"]
    article = "An" if adjectives[0][0] in "aeiou" else "A"
    parts = [f"{article} {' '.join(adjectives)}", f"{width} by {height} pixels"]
    if frames > 1:
        parts.append(f"{frames} frames")
    if not colours:
        parts.append("fully transparent")
    else:
        parts += [f"mostly {_list_words(colours)}", _BRIGHTNESS_PHRASES[brightness(rgba)]]
        if has_transparency(rgba):
            parts.append("with transparent areas")
    return ", ".join(parts) + "."


class BuiltinProvider:
    """Offline provider: needs no model and no network, and never invents content."""

    name = "builtin"

    def __init__(self, max_pixels: int = 50_000_000) -> None:
        self.max_pixels = max_pixels

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Describe `image`; `settings.max_length` is applied by the caller, prompt/model unused."""
        with open_image(image, self.max_pixels) as decoded:
            return describe_image(decoded)
