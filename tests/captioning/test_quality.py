"""The caption quality score and word-boundary truncation."""

from __future__ import annotations

import random

import pytest

from switchyard.captioning import score_caption
from switchyard.captioning.quality import truncate_caption
from switchyard.domain import CaptionSettings

DEFAULT = CaptionSettings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A red bicycle leans against a brick wall.", 1.0),
        ("", 0.0),
        ("   \n ", 0.0),
        ("A cat.", 0.3),  # fewer than 3 words (-0.5) and under 20 characters (-0.2)
        ("A dog dog dog sits on the grass.", 0.7),  # a word three times running
        ("The cat the cat the cat the cat.", 0.7),  # 8 words, only 2 distinct
        ("An image of a red bicycle leaning on a wall.", 0.85),  # one filler phrase
        ("Alt text: a picture of a red bicycle by a wall.", 0.7),  # two fillers
        ("Alt text: this image shows a photo of a red bicycle.", 0.7),  # filler capped at -0.3
        ("I'm sorry, but I cannot describe this picture.", 0.2),  # refusal, counted once
        ("I\u2019m sorry, I can\u2019t help with that request.", 0.2),  # typographic apostrophe
        ("12 34 56 78 90 11 22 ab.", 0.6),  # mostly not letters
        ("A red bicycle leaning on a brick wall", 0.9),  # no sentence end
        ("A red bicycle leaning on a brick…", 0.9),  # a truncation mark is not an end
        ("a red bicycle leaning on a brick wall.", 0.95),  # lowercase start
        ("i cannot i cannot", 0.0),  # penalties beyond 1.0 clamp to zero
    ],
)
def test_score_rules(text: str, expected: float) -> None:
    assert score_caption(text, DEFAULT) == expected


def test_longer_than_max_length_is_penalised() -> None:
    text = "A brown dog runs along the wet sand at low tide."
    assert score_caption(text, CaptionSettings(max_length=len(text))) == 1.0
    assert score_caption(text, CaptionSettings(max_length=20)) == 0.7


def test_builtin_style_caption_scores_full_marks() -> None:
    text = "A landscape image, 1200 by 800 pixels, mostly dark blue and white, bright overall."
    assert score_caption(text, DEFAULT) == 1.0


def test_scores_always_lie_in_the_unit_interval() -> None:
    rng = random.Random(7)
    alphabet = "abc XYZ .,!?#1 image of sorry"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert 0.0 <= score_caption(text, CaptionSettings(max_length=40)) <= 1.0


def test_short_text_is_only_whitespace_normalised() -> None:
    assert truncate_caption("  A cat\n on a   mat. ", 40) == "A cat on a mat."


def test_truncation_prefers_a_whole_sentence() -> None:
    text = "A cat sleeps on a mat. Behind it, a window shows a rainy street at dusk."
    assert truncate_caption(text, 40) == "A cat sleeps on a mat."


def test_truncation_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta"
    assert truncate_caption(text, 20) == "alpha beta gamma…"


def test_truncation_drops_trailing_punctuation_before_the_ellipsis() -> None:
    assert (
        truncate_caption("Red, green, blue, yellow, purple, orange", 26)
        == "Red, green, blue, yellow…"
    )


def test_one_enormous_word_is_cut_hard() -> None:
    assert truncate_caption("x" * 50, 20) == "x" * 19 + "…"


def test_truncation_never_exceeds_the_limit_or_splits_a_word() -> None:
    rng = random.Random(11)
    words = ["a", "cat", "on", "the", "window", "sill.", "Outside,", "rain", "falls."]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        limit = rng.randint(20, 120)
        result = truncate_caption(text, limit)
        assert len(result) <= limit
        stem = result.removesuffix("…")
        assert text.startswith(stem)
        if stem != text:  # the cut fell before a space (or stripped comma): last word whole
            assert text[len(stem)] in " ,"
