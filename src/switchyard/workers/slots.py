"""The polling worker's threads: a fixed number of slots, any of which can be written off.

`concurrent.futures.ThreadPoolExecutor` cannot do what the worker needs when a handler
hangs: its threads cannot be replaced, so a thread stuck in a handler takes a slot for good
and the tasks queued behind it wait, unstarted. Here each slot is a daemon thread that takes
the next task from a shared queue and runs it; `retire` writes off the thread of an attempt
that timed out (it exits if its handler ever returns) and starts a fresh one in its place,
so the pool keeps `size` working slots. Daemon threads never hold the process open.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
POLL = 0.5  # seconds an idle slot waits for work before it looks at `closed` again


class Slots(Generic[Item]):
    """`size` threads running `run(item)` for items given to `put`, in order.

    `begin(item)` is called on the slot's thread just before `run`; returning False skips
    the item (it was withdrawn meanwhile). The caller makes `begin` and its withdrawal of
    items agree under one lock."""

    def __init__(
        self,
        size: int,
        begin: Callable[[Item], bool],
        run: Callable[[Item], None],
        name: str = "task",
    ) -> None:
        self._begin = begin
        self._run = run
        self._name = name
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._size = size
        self._retired: set[threading.Thread] = set()
        self._closed = threading.Event()

    def start(self) -> None:
        for _ in range(self._size):
            self._spawn()

    def put(self, item: Item) -> None:
        self._queue.put(item)

    def retire(self, thread: threading.Thread) -> None:
        """Write off `thread` (stuck in `run`) and start a fresh slot in its place."""
        self._retired.add(thread)
        self._spawn()

    def stuck(self) -> int:
        """How many written-off threads are still inside `run`."""
        self._retired = {thread for thread in self._retired if thread.is_alive()}
        return len(self._retired)

    def close(self) -> None:
        """Idle slots end within POLL seconds; busy ones after their item."""
        self._closed.set()

    def _spawn(self) -> None:
        threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        me = threading.current_thread()
        while not self._closed.is_set() and me not in self._retired:
            try:
                item = self._queue.get(timeout=POLL)
            except queue.Empty:
                continue
            if self._begin(item):
                self._run(item)
