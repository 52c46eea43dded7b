"""Fixtures of the drills: the database of each backend (`db_url`, from tests/conftest.py),
this session's Redis database (`redis_url`), a local image server, and a `Cluster` of real
`switchyard` processes that is always stopped (SIGTERM, then SIGKILL) and whose processes'
logs are attached to the report of a failed drill."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.support.deployment import DRILL_SETTINGS, Cluster, ImageServer, Submitter
from tests.support.env import cli_env

IMAGE_DELAY = 0.01  # seconds per image fetch: about 60 tasks/s for one worker thread


@pytest.fixture
def drill_images() -> Iterator[ImageServer]:
    server = ImageServer(delay=IMAGE_DELAY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_submitter(drill_images: ImageServer) -> Iterator[Callable[[str], Submitter]]:
    """`start_submitter(api)`: a submitter posting to serve at `api` (not yet started);
    stopped at teardown if the drill did not stop it."""
    made: list[Submitter] = []

    def make(api: str) -> Submitter:
        made.append(Submitter(api, drill_images.base))
        return made[-1]

    yield make
    for submitter in made:
        submitter.stop()


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, db_url: str, redis_url: str, tmp_path: Path
) -> Generator[Cluster]:
    """The drill's processes, on this test's database and the session's Redis database."""
    # Nothing of the caller's own rq, canary or handler settings leaks into the drill.
    stray = ("RQ_", "REDIS_", "HYBRID_", "CANARY_", "TASK_", "SWITCHYARD_", "EMERGENCY_")
    env = {k: v for k, v in cli_env(db_url).items() if not k.startswith(stray)}
    env.update(REDIS_URL=redis_url, RQ_REDIS_URL=redis_url, **DRILL_SETTINGS)
    made = Cluster(tmp_path, env)
    request.node.drill_cluster = made
    try:
        yield made
    finally:
        made.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failed drill shows every process (exit code, last log lines) and every command."""
    report = yield
    made: Cluster | None = getattr(item, "drill_cluster", None)
    if made is not None and report.failed and call.when in ("setup", "call"):
        report.sections.append(("drill processes and commands", made.report()))
    return report
