"""The builtin provider on images drawn with Pillow, and `caption_image` end to end.

`caption_image` fetches over real HTTP from a server on 127.0.0.1, so those tests build
settings with `fetch_allow_private=True`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from PIL import Image

import switchyard.captioning as captioning
from switchyard.captioning import Caption, caption_image, make_provider
from switchyard.captioning.builtin import BuiltinProvider, colour_name, open_image
from switchyard.config import Settings, load_settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, FetchRefused
from tests.support.drawn_images import encode, navy_and_white

DEFAULT = CaptionSettings()


def describe(data: bytes, max_pixels: int = 50_000_000) -> str:
    return BuiltinProvider(max_pixels).describe(data, DEFAULT)


# --- the builtin provider --------------------------------------------------------------


def test_landscape_with_named_colours_and_brightness() -> None:
    assert describe(encode(navy_and_white())) == (
        "A landscape image, 1200 by 800 pixels, mostly white and dark blue, bright overall."
    )


def test_portrait_dark_image() -> None:
    image = Image.new("RGB", (300, 600), (10, 60, 10))
    assert describe(encode(image)) == (
        "A portrait image, 300 by 600 pixels, mostly dark green, dark overall."
    )


def test_square_medium_brightness_three_colours() -> None:
    image = Image.new("RGB", (90, 90), (220, 20, 20))
    image.paste((20, 20, 220), (30, 0, 60, 90))
    image.paste((240, 200, 0), (60, 0, 90, 90))
    assert describe(encode(image)) == (
        "A square image, 90 by 90 pixels, mostly blue, red and yellow, of medium brightness."
    )


def test_greyscale_is_detected_for_grey_modes_and_grey_rgb() -> None:
    grey = Image.new("L", (100, 50), 128)
    expected = "A greyscale landscape image, 100 by 50 pixels, mostly grey, of medium brightness."
    assert describe(encode(grey)) == expected
    assert describe(encode(grey.convert("RGB"))) == expected


def test_transparency_is_mentioned() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((255, 200, 0, 255), (0, 0, 50, 100))
    assert describe(encode(image)) == (
        "A square image, 100 by 100 pixels, mostly yellow, bright overall, with transparent areas."
    )


def test_fully_transparent_image() -> None:
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    assert describe(encode(image)) == ("A landscape image, 20 by 10 pixels, fully transparent.")


def test_animated_gif_frames_are_counted() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert describe(data) == (
        "An animated square image, 40 by 40 pixels, 3 frames, mostly red, of medium brightness."
    )


def test_output_is_deterministic() -> None:
    bands = [Image.effect_noise((256, 160), sigma) for sigma in (30, 60, 90)]
    data = encode(Image.merge("RGB", bands), "JPEG", quality=80)
    first = describe(data)
    assert all(describe(data) == first for _ in range(3))
    assert first.startswith("A landscape image, 256 by 160 pixels, mostly ")


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((0, 0, 0), "black"),
        ((255, 255, 255), "white"),
        ((128, 128, 128), "grey"),
        ((60, 60, 60), "dark grey"),
        ((200, 200, 200), "light grey"),
        ((255, 0, 0), "red"),
        ((0, 0, 128), "dark blue"),
        ((135, 206, 235), "light blue"),
        ((0, 128, 0), "dark green"),
        ((255, 165, 0), "orange"),
        ((139, 69, 19), "brown"),
        ((255, 255, 0), "yellow"),
        ((128, 0, 128), "dark purple"),
        ((255, 105, 180), "pink"),
        ((255, 192, 203), "pink"),
        ((64, 224, 208), "turquoise"),
    ],
)
def test_colour_names(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(*rgb) == name


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = encode(Image.new("L", (2000, 1000)))
    with pytest.raises(CaptionError) as info:
        describe(data, max_pixels=1_000_000)
    assert str(info.value) == (
        "refused: image is 2000 by 1000 pixels, over the 1000000 pixel limit"
    )


def test_non_image_bytes_are_refused() -> None:
    with pytest.raises(CaptionError, match=r"^not a decodable image: cannot identify image file"):
        describe(b"<html>definitely not a picture</html>")


def test_truncated_image_is_refused() -> None:
    data = encode(Image.effect_noise((200, 200), 80), "PNG")
    with pytest.raises(CaptionError, match=r"^not a decodable image: "):
        describe(data[: len(data) // 2])


def test_open_image_returns_a_loaded_image() -> None:
    with open_image(encode(navy_and_white((30, 20))), 1000) as image:
        assert image.size == (30, 20)
        assert image.getpixel((29, 19)) == (255, 255, 255)


# --- make_provider ---------------------------------------------------------------------


def test_make_provider_defaults_to_builtin_with_the_pixel_limit() -> None:
    provider = make_provider(load_settings(caption_provider="builtin", fetch_max_pixels=1234))
    assert isinstance(provider, BuiltinProvider)
    assert (provider.name, provider.max_pixels) == ("builtin", 1234)


def test_public_surface_is_explicit() -> None:
    assert sorted(captioning.__all__) == sorted(
        [
            "Caption",
            "CaptionProvider",
            "Captioner",
            "ProviderState",
            "caption_image",
            "fetch_image",
            "make_captioner",
            "make_provider",
            "score_caption",
        ]
    )
    caption = Caption("A cat.", 0.3, "builtin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        caption.text = "changed"  # type: ignore[misc]


# --- caption_image ---------------------------------------------------------------------


def local(**overrides: Any) -> Settings:
    return load_settings(caption_provider="builtin", fetch_allow_private=True, **overrides)


class FixedText:
    """A provider that always answers with the same text (a real Protocol implementation)."""

    name = "fixed"

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        self.calls += 1
        return self.text


def test_caption_image_with_the_builtin_provider(base_url: str) -> None:
    caption = caption_image(f"{base_url}/photo.png", DEFAULT, local())
    assert caption == Caption(
        "A landscape image, 600 by 400 pixels, mostly white and dark blue, bright overall.",
        1.0,
        "builtin",
    )


def test_caption_is_truncated_to_max_length_and_scored(base_url: str) -> None:
    provider = FixedText("A harbour at dawn with fishing boats tied along a long wooden pier")
    caption = caption_image(
        f"{base_url}/photo.png", CaptionSettings(max_length=40), local(), provider
    )
    assert caption.text == "A harbour at dawn with fishing boats…"
    assert len(caption.text) <= 40
    assert caption.provider == "fixed"
    assert caption.quality_score == 0.9  # only the missing sentence end costs


def test_empty_provider_answer_is_an_error(base_url: str) -> None:
    with pytest.raises(CaptionError, match=r"^provider fixed returned an empty caption$"):
        caption_image(f"{base_url}/photo.png", DEFAULT, local(), FixedText(" \n "))


def test_corrupt_image_is_refused_before_the_provider_runs(base_url: str) -> None:
    provider = FixedText("never used")
    with pytest.raises(FetchRefused, match=r"^not a decodable image: "):
        caption_image(f"{base_url}/corrupt.png", DEFAULT, local(), provider)
    assert provider.calls == 0


def test_pixel_bomb_is_refused_before_the_provider_runs(base_url: str) -> None:
    provider = FixedText("never used")
    with pytest.raises(FetchRefused) as info:
        caption_image(f"{base_url}/bomb.png", DEFAULT, local(fetch_max_pixels=1_000_000), provider)
    assert str(info.value) == (
        "refused: image is 3000 by 3000 pixels, over the 1000000 pixel limit"
    )
    assert provider.calls == 0


def test_caption_image_refuses_loopback_by_default(base_url: str) -> None:
    settings = load_settings(caption_provider="builtin", fetch_allow_private=False)
    with pytest.raises(FetchRefused, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
        caption_image(f"{base_url}/photo.png", DEFAULT, settings)
