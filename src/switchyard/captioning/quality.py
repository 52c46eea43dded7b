"""A cheap, explainable quality score for a caption, and word-boundary truncation.

The score is a number in [0, 1] that lets operators find captions worth a human look; it
does not judge whether the caption is *true*. It starts at 1.0, each failed check
subtracts its penalty once, and the result is clamped to [0, 1] and rounded to 2 places:

* empty or whitespace only ............................. score is 0.0 outright
* a refusal/apology ("I'm sorry", "I cannot", "as an AI") ......... -0.8
* fewer than 3 words ....................................... -0.5
* under 20 characters ...................................... -0.2
* longer than the task's max_length ........................ -0.3
* repetition: a word 3+ times in a row, or (8+ words) fewer
  than half of the words distinct ........................... -0.3
* generic filler ("image of", "picture of", "this image shows", "alt text",
  "description:" ...): -0.15 per distinct phrase, at most ... -0.3
* mostly not letters (under half of the non-space characters) -0.4
* no sentence end (., ! or ?; a truncation "…" does not count)  -0.1
* starts with a lowercase letter ........................... -0.05
"""

from __future__ import annotations

import re

from switchyard.domain import CaptionSettings

ELLIPSIS = "…"

REFUSALS = (
    "i'm sorry",
    "i am sorry",
    "i cannot",
    "i can't",
    "as an ai",
    "i am unable",
    "i'm unable",
)
FILLERS = (
    "image of",
    "picture of",
    "photo of",
    "photograph of",
    "this image shows",
    "the image shows",
    "this picture shows",
    "alt text",
    "alt-text",
    "description:",
    "caption:",
)
_WORD = re.compile(r"[\w']+")


def _has_repetition(words: list[str]) -> bool:
    """A word three times running, or a long text with little variety (a looping model)."""
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    return len(words) >= 8 and len(set(words)) < len(words) / 2


def _filler_penalty(lowered: str) -> float:
    return min(0.3, 0.15 * sum(phrase in lowered for phrase in FILLERS))


def _mostly_symbols(text: str) -> bool:
    visible = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in visible) < len(visible) / 2


def score_caption(text: str, settings: CaptionSettings) -> float:
    """Score `text` in [0, 1] by the rules in the module docstring."""
    text = text.strip()
    if not text:
        return 0.0
    lowered = text.lower().replace("\u2019", "'")
    words = _WORD.findall(lowered)
    penalties = [
        0.8 if any(phrase in lowered for phrase in REFUSALS) else 0.0,
        0.5 if len(words) < 3 else 0.0,
        0.2 if len(text) < 20 else 0.0,
        0.3 if len(text) > settings.max_length else 0.0,
        0.3 if _has_repetition(words) else 0.0,
        _filler_penalty(lowered),
        0.4 if _mostly_symbols(text) else 0.0,
        0.1 if text[-1] not in ".!?" else 0.0,
        0.05 if text[0].islower() else 0.0,
    ]
    return round(min(1.0, max(0.0, 1.0 - sum(penalties))), 2)


def truncate_caption(text: str, max_length: int) -> str:
    """Fit `text` into `max_length` characters without cutting a word in half.

    A whole sentence is preferred: if a sentence ends in the second half of the allowance,
    cut there. Otherwise cut at the last space and mark the cut with "…" (which counts
    toward the limit). A single word longer than half the limit is cut hard.
    """
    text = " ".join(text.split())
    if len(text) <= max_length:
        return text
    window = text[: max_length + 1]
    sentence_end = max(window.rfind(mark + " ") for mark in ".!?")
    if sentence_end + 1 >= max_length // 2:
        return text[: sentence_end + 1]
    room = text[: max_length - len(ELLIPSIS) + 1]
    space = room.rfind(" ")
    cut = room[:space] if space >= max_length // 2 else room[:-1]
    return cut.rstrip(" ,;:-") + ELLIPSIS
