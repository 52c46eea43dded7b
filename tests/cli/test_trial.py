"""`switchyard try`, as a newcomer runs it: a caption from the bundled sample on a machine with
nothing set up, the operator's database untouched, and clear failures."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.cli import cli


def test_try_captions_the_bundled_sample_without_touching_the_database(tmp_path: Path) -> None:
    database = tmp_path / "operator.db"  # the operator's (never created by `try`)
    run = cli(f"sqlite:///{database}", "try", "--json", FETCH_ALLOW_PRIVATE="false")
    result = run.json()
    assert result["ok"] is True
    assert "480 by 320 pixels" in result["task"]["caption"]
    assert result["task"]["caption_provider"] == "builtin"
    assert [(e["from_status"], e["to_status"]) for e in result["events"]] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "completed"),
    ]
    assert not database.exists()


def test_try_with_an_image_that_is_not_one_is_refused_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    run = cli(f"sqlite:///{tmp_path / 'x.db'}", "try", "--image", str(text))
    assert run.code == 2
    assert run.error_line().startswith("error: not an image switchyard can caption:")


def test_try_says_why_when_the_provider_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = cli(
        f"sqlite:///{tmp_path / 'x.db'}",
        "try",
        "--timeout",
        "2",
        CAPTION_PROVIDER="ollama",
        OLLAMA_URL=f"http://127.0.0.1:{port}",
    )
    assert run.code == 1
    assert f"warning: Ollama at http://127.0.0.1:{port} is not usable" in run.err
    assert "no caption after" in run.err and "could not reach Ollama" in run.err
