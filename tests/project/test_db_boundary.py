"""The database behind one door: outside `switchyard/db/`, no code touches a store's
connections (the SQLAlchemy Engine) or opens its own. Code there hands the store to the named
read and write modules of `db/`, which alone take connections from it.

import-linter keeps SQLAlchemy itself out of those packages; this check keeps out the object,
which needs no import to be used (`services.store.connections.begin()`). (A legacy
application's database, read by mappers, is another database: `db/legacy.py` hands them a
read-only connection.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import switchyard

PACKAGE = Path(switchyard.__file__).parent
FORBIDDEN_ATTRIBUTES = {"connections"}  # TaskStore.connections, RunRecorder.connections
FORBIDDEN_NAMES = {"open_connections", "Connection"}  # the pool, a connection's type


def breaches(package: Path) -> list[str]:
    """`path:line name` for each use of the database's connections outside `db/`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "db":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
                found.append(f"{relative}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
                found.append(f"{relative}:{node.lineno} {node.id}")
            elif isinstance(node, ast.alias) and node.name in FORBIDDEN_NAMES:
                found.append(f"{relative}:{node.lineno} import {node.name}")
    return found


def test_nothing_outside_db_touches_the_connections() -> None:
    assert breaches(PACKAGE) == []


def test_the_check_sees_a_breach(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "store.py").write_text("def f(store):\n    return store.connections\n")
    (tmp_path / "operations").mkdir()
    (tmp_path / "operations" / "tasks.py").write_text(
        "from switchyard.db.connections import open_connections\n"
        "from switchyard.db.bulk import Connection\n"
        "def count(services):\n"
        "    with services.store.connections.connect() as conn:\n"
        "        return conn\n"
    )
    assert breaches(tmp_path) == [
        "operations/tasks.py:1 import open_connections",
        "operations/tasks.py:2 import Connection",
        "operations/tasks.py:4 .connections",
    ]
