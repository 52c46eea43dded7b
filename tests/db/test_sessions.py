"""The dashboard's session rows and the server's secrets on every database: a session is open
only under its own token's fingerprint and before it expires; a secret is made once."""

from __future__ import annotations

import threading
from datetime import timedelta

from switchyard.db.clock import utcnow
from switchyard.db.store import TaskStore


def test_a_session_is_open_only_under_its_token_and_until_it_expires(store: TaskStore) -> None:
    later = utcnow() + timedelta(hours=1)
    store.open_session("a" * 64, "fp-old", later)
    store.open_session("b" * 64, "fp-new", later)
    store.open_session("c" * 64, "fp-new", utcnow() - timedelta(seconds=1))
    assert store.session_open("a" * 64, "fp-old")
    assert not store.session_open("a" * 64, "fp-new")  # the token was rotated
    assert not store.session_open("c" * 64, "fp-new")  # expired
    assert not store.session_open("d" * 64, "fp-new")  # never opened

    assert store.end_stale_sessions("fp-new") == 2  # the old token's and the expired one
    assert store.session_open("b" * 64, "fp-new")
    store.end_session("b" * 64)
    assert not store.session_open("b" * 64, "fp-new")


def test_a_server_secret_is_made_once_even_by_racing_processes(store: TaskStore) -> None:
    found: list[str] = []
    threads = [
        threading.Thread(target=lambda: found.append(store.server_secret("race"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 4 and len(set(found)) == 1 and len(found[0]) == 64
    assert store.server_secret("other") != found[0]
