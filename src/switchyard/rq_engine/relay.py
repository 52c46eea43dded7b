"""The forking rq worker's work horse records its task's outcome through its parent.

A horse is a fresh fork per job. Talking to the database itself, it would connect anew and
compile every statement anew per job (the parent's pool and statement cache are not its to
use), which cost more than the job. So the parent claims the task before it forks (on its
own long-lived connection), and the horse sends its outcome (complete, fail or release) over
a pipe to a thread of the parent, which writes it and answers; the horse acknowledges the job
to rq only after that answer, so the write is durable first, as before.

If the parent is gone (SIGKILLed), the horse's pipe breaks and it writes the outcome itself,
on a connection of its own: each write is a compare-and-set under the worker's name and the
attempt, so it takes at most once whichever way it went. If the horse dies, the task stays
`running` under the worker and its heartbeat lapses once the parent stops beating for it
(at the horse's end), so the lapsed-heartbeat recovery requeues it, exactly as before.

Messages are a 4-byte length and a pickle, between a process and its own fork.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import threading
from typing import Any, Protocol

from switchyard.db.store import Outcome
from switchyard.domain import Status
from switchyard.errors import SwitchyardError

_HEADER = struct.Struct("!I")


class TaskWrites(Protocol):
    """The writes a job makes once its task is claimed (TaskStore has them)."""

    def complete_one(self, worker: str, outcome: Outcome, wait_up_to: float = 0.0) -> bool: ...

    def fail(
        self,
        worker: str,
        task_id: Any,
        error: str,
        *,
        attempt: int | None = None,
        retryable: bool = True,
    ) -> Status | None: ...

    def release(self, worker: str, task_ids: Any, reason: str, *, delay: float = 0.0) -> int: ...


class RelayBroken(SwitchyardError):
    """The parent stopped answering (it is gone)."""


class Relay:
    """Two pipes and a thread of the parent serving one horse's writes on `store`."""

    def __init__(self, store: TaskWrites) -> None:
        self.store = store
        self.parent = os.getpid()
        self._asks_in, self._asks_out = os.pipe()
        self._answers_in, self._answers_out = os.pipe()
        self._horse_side = False
        self._thread = threading.Thread(target=self._serve, name="rq-horse-relay", daemon=True)
        self._thread.start()

    # -- the parent --------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while (ask := _read(self._asks_in)) is not None:
                name, args, kwargs = ask
                try:
                    answer: tuple[str, Any] = ("ok", getattr(self.store, name)(*args, **kwargs))
                except Exception as exc:  # the horse raises it, as a direct call would
                    answer = ("error", _portable(exc))
                with contextlib.suppress(OSError):  # the horse died meanwhile
                    _write(self._answers_out, answer)
        finally:
            os.close(self._asks_in)
            os.close(self._answers_out)

    def close(self) -> None:
        """After the horse has exited: end the thread (it sees the end of the asks once the
        last writer is closed) and wait for a write it may still be making."""
        os.close(self._asks_out)
        self._thread.join()
        os.close(self._answers_in)

    # -- the horse ---------------------------------------------------------------------------

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run `store.<name>(*args, **kwargs)` in the parent; its result or its exception.
        RelayBroken if the parent is gone."""
        if not self._horse_side:  # the parent's ends, inherited by the fork
            os.close(self._asks_in)
            os.close(self._answers_out)
            self._horse_side = True
        try:
            _write(self._asks_out, (name, args, kwargs))
            answer = _read(self._answers_in)
        except OSError as exc:
            raise RelayBroken(f"the worker process is gone: {exc}") from exc
        if answer is None:
            raise RelayBroken("the worker process is gone")
        kind, value = answer
        if kind == "error":
            raise value
        return value


class RelayedWrites:
    """TaskWrites through the parent, falling back to `store` itself when the parent is gone."""

    def __init__(self, relay: Relay, store: TaskWrites) -> None:
        self.relay = relay
        self.store = store
        self.broken = False

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self.broken:
            try:
                return self.relay.call(name, *args, **kwargs)
            except RelayBroken:
                self.broken = True
        return getattr(self.store, name)(*args, **kwargs)

    def complete_one(self, worker: str, outcome: Outcome, wait_up_to: float = 0.0) -> bool:
        return bool(self._call("complete_one", worker, outcome, wait_up_to=wait_up_to))

    def fail(
        self,
        worker: str,
        task_id: Any,
        error: str,
        *,
        attempt: int | None = None,
        retryable: bool = True,
    ) -> Status | None:
        status = self._call("fail", worker, task_id, error, attempt=attempt, retryable=retryable)
        return status if status is None else Status(status)

    def release(self, worker: str, task_ids: Any, reason: str, *, delay: float = 0.0) -> int:
        return int(self._call("release", worker, list(task_ids), reason, delay=delay))


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives a pickle round trip, else a SwitchyardError saying the same."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return SwitchyardError(f"{type(exc).__name__}: {exc}")
    return exc


def _write(fd: int, message: Any) -> None:
    body = pickle.dumps(message)
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def _read(fd: int) -> Any:
    """The next message, or None at the end of the pipe (a message cut short counts as the
    end: its writer died)."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
