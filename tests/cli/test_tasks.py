"""The operator's CLI end to end, in real subprocesses: init, submit, status, tasks, cancel,
retry; exit codes 0 / 1 (not found, refused) / 2 (bad usage); one-line errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from switchyard.db import migrate
from switchyard.db.store import NewTask, Outcome, TaskStore
from switchyard.domain import Status
from tests.support.cli import cli, cli_many

pytestmark = pytest.mark.backends("sqlite", "postgresql")

IDS = ("--user-id", "7", "--platform-connection-id", "3")


def test_an_operator_session(db_url: str, store: TaskStore, tmp_path: Path) -> None:
    urls_file = tmp_path / "urls.txt"  # comments, blank lines, many URLs
    lines = [f"  http://example.org/m{i}.png\n" for i in range(600)]
    long_url = "https://files.example.social/media_attachments/files/" + "1" * 60 + ".png"
    lines.append(long_url + "\n")
    urls_file.write_text("# from the backlog export\n\n" + "".join(lines))
    init, by_args, by_file = cli_many(
        db_url,
        ("init", "--json"),  # the database is already migrated: init is idempotent
        ("submit", "http://example.org/a.png", "http://example.org/b.png", "-p", "high",
         "-s", "max_length=120", *IDS, "--json"),
        ("submit", "--file", str(urls_file), "--user-id", "99", "--platform-connection-id", "3"),
    )  # fmt: skip
    assert init.json() == {"database": store.dialect, "revision": migrate.head_revision()}
    created = by_args.json()
    assert [(t["image_url"], t["priority"], t["status"]) for t in created] == [
        ("http://example.org/a.png", "high", "queued"),
        ("http://example.org/b.png", "high", "queued"),
    ]
    assert created[0]["settings"] == {"max_length": 120} and created[0]["user_id"] == 7
    assert by_file.code == 0 and by_file.out.count("queued ") == len(lines), by_file
    assert "normal http://example.org/m0.png" in by_file.out
    assert f"normal {long_url}\n" in by_file.out  # one line a task, however long
    first, second = created[0]["id"], created[1]["id"]

    # Commands run side by side only where none changes what another reads.
    overview, one, high = cli_many(
        db_url,
        ("status", "--json"),
        ("status", first, "--json"),
        ("tasks", "--status", "queued", "--priority", "high", "--json"),
    )
    assert overview.json()["totals"] == {
        "queued": len(lines) + 2, "running": 0, "completed": 0, "failed": 0, "cancelled": 0
    }  # fmt: skip
    assert overview.json()["counts"]["queued"] == {"high": 2, "normal": len(lines)}
    detail = one.json()
    assert (detail["id"], detail["status"], detail["priority"]) == (first, "queued", "high")
    assert [(e["actor"], e["from_status"], e["to_status"]) for e in detail["events"]] == [
        ("cli", None, "queued")
    ]
    assert {t["id"] for t in high.json()["tasks"]} == {first, second}

    cancelled = cli(db_url, "cancel", second, "--reason", "duplicate post", "--json")
    assert cancelled.json()["status"] == "cancelled"
    assert store.events(uuid.UUID(second))[-1].reason == "duplicate post"
    retried = cli(db_url, "retry", second, "--json")
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    assert [e.to_status for e in store.events(uuid.UUID(second))] == [
        "queued",
        "cancelled",
        "queued",
    ]


def test_text_reports(sqlite_url: str, sqlite_store: TaskStore) -> None:
    """The tables an operator reads; the same on every database, so SQLite only."""
    sqlite_store.submit([NewTask(f"http://example.org/{i}.png", 99, 3) for i in range(7)], "t")
    sqlite_store.claim("w", 2)
    table, listing, one = cli_many(
        sqlite_url,
        ("status",),
        ("tasks", "--user-id", "99", "--status", "queued", "--limit", "3"),
        ("status", str(sqlite_store.list_tasks(status=Status.RUNNING)[0].id)),
    )
    assert table.code == 0 and "│ queued    │ 5 " in table.out and "│ running   │ 2 " in table.out
    assert listing.code == 0 and "3 tasks" in listing.out and listing.out.count("queued") == 3
    assert one.code == 0 and "status: running" in one.out and "history" in one.out


def test_exit_codes_and_one_line_errors(sqlite_url: str, sqlite_store: TaskStore) -> None:
    done, queued = sqlite_store.submit(
        [NewTask("http://example.org/d.png", 1, 1), NewTask("http://example.org/q.png", 1, 1)],
        "test",
    )
    sqlite_store.claim("w", 1)
    sqlite_store.complete("w", [Outcome(done.id, 1, "done", 0.5)])
    unknown = str(uuid.uuid4())
    runs = cli_many(
        sqlite_url,
        ("status", unknown),
        ("status", "not-a-task-id"),
        ("cancel", str(done.id)),
        ("retry", str(queued.id)),
    )
    expected = [
        f"error: no task {unknown}",
        "error: no task 'not-a-task-id': not a task id",
        f"error: task {done.id} is completed; cannot move it to cancelled",
        f"error: task {queued.id} is queued; cannot move it to queued",
    ]
    for run, line in zip(runs, expected, strict=True):
        assert (run.code, run.error_line()) == (1, line)


def test_bad_usage_exits_2_and_writes_nothing(
    sqlite_url: str, sqlite_store: TaskStore, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("".join(f"http://example.org/{i}.png\n" for i in range(30)) + "ftp://x/y\n")
    runs = cli_many(
        sqlite_url,
        ("submit", "http://example.org/ok.png", "ftp://x/y", *IDS),
        ("submit", "--file", str(mixed), *IDS),
        ("submit", "http://example.org/a.png", *IDS, "-s", "colour"),
        ("submit", "--file", str(tmp_path / "absent.txt"), *IDS),
        ("submit", *IDS),
        ("tasks", "--status", "done"),
    )
    expected = [
        "invalid image_url 'ftp://x/y'",
        "invalid image_url 'ftp://x/y'",
        "invalid --setting 'colour': use key=value",
        "cannot read",
        "give at least one image URL",
        "invalid status 'done'",
    ]
    for run, fragment in zip(runs, expected, strict=True):
        assert run.code == 2, run
        assert run.error_line().startswith("error: ") and fragment in run.error_line(), run
    assert sqlite_store.counts()["queued"] == {}
    assert sqlite_store.list_tasks() == []


def test_typer_usage_errors_exit_2(sqlite_url: str) -> None:
    missing_option, bad_engine = cli_many(
        sqlite_url,
        ("submit", "http://example.org/a.png"),
        ("worker", "--engine", "carrier-pigeon", "--burst"),
    )
    assert missing_option.code == 2 and "--user-id" in missing_option.err
    assert bad_engine.code == 2 and "--engine" in bad_engine.err
    for run in (missing_option, bad_engine):
        assert len(run.err.strip().splitlines()) == 1, run.err  # not a boxed panel
        assert run.error_line().startswith("error: ")


def test_bad_input_is_one_line_and_exit_2_never_an_internal_error(
    sqlite_url: str, sqlite_store: TaskStore, tmp_path: Path
) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"http://example.org/ok.png\nhttp://example.org/caf\xe9.png\n")
    runs = cli_many(
        sqlite_url,
        ("submit", "--file", str(latin1), *IDS),
        ("tasks", "--user-id", "9223372036854775808"),  # one past BIGINT
        ("tasks", "--user-id", "-5"),
        ("tasks", "--user-id", "five"),
    )
    expected = [
        f"error: cannot read {latin1}: not UTF-8 text (byte 0xe9 at offset 48)",
        "error: invalid user_id 9223372036854775808: must be an integer from 1 to ",
        "error: invalid user_id -5: must be an integer from 1 to ",
        "error: Invalid value for '--user-id': ",
    ]
    for run, start in zip(runs, expected, strict=True):
        assert run.code == 2, run
        assert len(run.err.strip().splitlines()) == 1 and run.error_line().startswith(start), run
    assert sqlite_store.list_tasks() == []


def test_a_database_url_with_a_bad_port_is_exit_2_and_its_password_is_masked() -> None:
    for url in (
        "postgresql://ops:hunter2-secret@db.internal:fivefourthreetwo/switchyard",
        "postgresql:/ops:hunter2-secret@db.internal/switchyard",  # does not parse at all
    ):
        run = cli(url, "tasks")
        assert run.code == 2, run
        assert "hunter2-secret" not in run.err + run.out, run
        assert run.error_line().startswith("error: invalid DATABASE_URL"), run


def test_debug_shows_the_traceback_and_a_missing_schema_is_one_line(tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    debug, plain = cli_many(fresh, ("--debug", "status", str(uuid.uuid4())), ("status", "--json"))
    assert debug.code == 1 and "Traceback (most recent call last)" in debug.err
    assert "switchyard.errors.StoreError" in debug.err
    assert plain.code == 1 and plain.error_line().startswith(
        "error: database error while counting live tasks: no such table: tasks"
    )
    init = cli(fresh, "init")
    assert init.code == 0 and f"schema at revision {migrate.head_revision()}" in init.out
    assert set(TaskStore.from_url(fresh).counts()) == {s.value for s in Status}


def test_a_long_error_stays_on_one_line(sqlite_url: str) -> None:
    run = cli(sqlite_url, "submit", "ftp://example.org/" + "a" * 200 + ".png", *IDS)
    assert run.code == 2
    assert len(run.err.strip().splitlines()) == 1, run.err


def test_a_big_file_is_submitted_all_or_nothing(
    sqlite_url: str, sqlite_store: TaskStore, tmp_path: Path
) -> None:
    """A rerun after a failure must not duplicate the part that got in, so none may get in."""
    with sqlite_store.connections.begin() as conn:  # the database fails part-way through
        conn.exec_driver_sql(
            "CREATE TRIGGER full_disk BEFORE INSERT ON tasks"
            " WHEN (SELECT count(*) FROM tasks) >= 550"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://example.org/{i}.png\n" for i in range(600)))
    run = cli(sqlite_url, "submit", "--file", str(urls), *IDS)
    assert run.code == 1
    assert len(sqlite_store.list_tasks(limit=1000)) == 0
    assert "database or disk is full" in run.error_line()
