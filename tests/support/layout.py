"""The test suite's layout rule, checked by tests/project/test_layout.py.

- A test file of src/switchyard/<package>/<module>.py is tests/<package>/test_<module>.py or
  tests/<package>/test_<module>_<aspect>.py; a test file of a top-level module (config.py,
  switch.py, ...) is tests/test_<module>[_<aspect>].py.
- The folders that are no package are the cross-cutting suites and the suite's own parts
  (`CROSS_CUTTING`); their files are not named after a module.
- No test module imports another test module or a conftest: what tests share is a fixture
  (in a conftest.py) or a helper (in tests/support/).
- Fixtures are defined only in conftest.py files and in tests/support/.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

# Suites of a whole deployment or of the repository, and the suite's own parts.
CROSS_CUTTING = frozenset(
    {"bench", "caption_app", "deploy", "drills", "fixtures", "project", "support"}
)


def problems(root: Path) -> list[str]:
    """Every breach of the layout rule in the repository at `root`, one line each."""
    tests = root / "tests"
    found = list(_name_problems(root, tests))
    for path in sorted(tests.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=name)
        imported = _imported(tree, path.parent.relative_to(root).parts)
        found += [f"{name}: imports {m}" for m in imported if _is_test_module(root, m)]
        if path.name != "conftest.py" and "support" not in path.relative_to(tests).parts:
            found += [f"{name}: defines the fixture {f}" for f in _fixtures(tree)]
    return found


def _name_problems(root: Path, tests: Path) -> Iterator[str]:
    """Test files named after no module of the package their folder mirrors."""
    source = root / "src" / "switchyard"
    yield from _unnamed(root, tests, _modules(source))
    for folder in _folders(tests):
        if folder.name in CROSS_CUTTING:
            continue
        if not (source / folder.name / "__init__.py").exists():
            yield f"{_rel(root, folder)}: mirrors no package (src/switchyard/{folder.name})"
            continue
        yield from _unnamed(root, folder, _modules(source / folder.name))
        yield from (
            f"{_rel(root, sub)}: a folder inside a package's tests" for sub in _folders(folder)
        )


def _unnamed(root: Path, folder: Path, modules: set[str]) -> Iterator[str]:
    for path in sorted(folder.glob("test_*.py")):
        stem = path.stem.removeprefix("test_")
        if not any(stem == m or stem.startswith(f"{m}_") for m in modules):
            yield f"{_rel(root, path)}: starts with no module of {', '.join(sorted(modules))}"


def _folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__")


def _modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _imported(tree: ast.Module, package: tuple[str, ...]) -> Iterator[str]:
    """The absolute names `tree` imports: modules, and `from` names that may be modules."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _is_test_module(root: Path, module: str) -> bool:
    """A test module or a conftest of this suite (a file, so a support function named
    test_... is not one)."""
    parts = module.split(".")
    named = parts[-1] == "conftest" or parts[-1].startswith("test_")
    return parts[0] == "tests" and named and root.joinpath(*parts).with_suffix(".py").is_file()


def _fixtures(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    yield node.name
