"""The suite mirrors the source tree (tests/support/layout.py states the rule): checked on
this repository, and shown to fail on a planted tree that breaks each part of it."""

from __future__ import annotations

from pathlib import Path

from tests.support.layout import problems

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_follows_the_layout_rule() -> None:
    assert problems(ROOT) == []


def plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


GOOD = {
    "src/switchyard/__init__.py": "",
    "src/switchyard/config.py": "",
    "src/switchyard/db/__init__.py": "",
    "src/switchyard/db/store.py": "",
    "tests/__init__.py": "",
    "tests/test_config.py": "def test_x() -> None: ...\n",
    "tests/db/__init__.py": "",
    "tests/db/conftest.py": "import pytest\n\n@pytest.fixture\ndef store() -> None: ...\n",
    "tests/db/test_store.py": "from tests.support.helpers import test_data\n",
    "tests/db/test_store_claims.py": "def test_x(store: None) -> None: ...\n",
    "tests/support/__init__.py": "",
    "tests/support/helpers.py": "import pytest\n\n@pytest.fixture()\ndef shared() -> None: ...\n"
    "def test_data() -> None: ...\n",
    "tests/drills/test_whole_deployment.py": "",
}


def test_a_tree_that_follows_the_rule_passes(tmp_path: Path) -> None:
    plant(tmp_path, GOOD)
    assert problems(tmp_path) == []


def test_each_breach_of_the_rule_is_named(tmp_path: Path) -> None:
    plant(tmp_path, GOOD)
    plant(
        tmp_path,
        {
            "tests/test_chaos.py": "",
            "tests/db/test_stores.py": "",
            "tests/db/test_claims.py": "",
            "tests/db/deep/test_store.py": "",
            "tests/unit/test_config.py": "",
            "tests/db/test_store_reuse.py": "from tests.db.test_store_claims import test_x\n"
            "from . import test_store\nimport tests.db.conftest\n",
            "tests/test_config_fixture.py": "import pytest\n\n@pytest.fixture(scope='module')\n"
            "def server() -> None: ...\n",
        },
    )
    assert sorted(problems(tmp_path)) == sorted(
        [
            "tests/test_chaos.py: starts with no module of config",
            "tests/db/test_stores.py: starts with no module of store",
            "tests/db/test_claims.py: starts with no module of store",
            "tests/db/deep: a folder inside a package's tests",
            "tests/unit: mirrors no package (src/switchyard/unit)",
            "tests/db/test_store_reuse.py: imports tests.db.test_store_claims",
            "tests/db/test_store_reuse.py: imports tests.db.test_store",
            "tests/db/test_store_reuse.py: imports tests.db.conftest",
            "tests/test_config_fixture.py: defines the fixture server",
        ]
    )
