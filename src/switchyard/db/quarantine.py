"""What a migration cannot decode or map is kept, byte for byte, never dropped or guessed at.

A quarantine row's `raw` is a JSON document holding the whole job hash with every field name
and value base64-encoded (and the job's score, if it was found in a sorted set), so
`decode_raw(encode_raw(...))` gives back the exact bytes: the job can be put back into Redis
exactly as it was.

A row is open until an operator resolves it (`switchyard quarantine`): `remapped` (a mapper
turned it into tasks, in the same transaction), `released` (its bytes are back in Redis; a
later migration treats the job as new, and reopens this row if it still cannot map it) or
`dropped` (discarded on purpose; the bytes stay). Rows are never deleted.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.schema import quarantine
from switchyard.db.store import TaskStore, utcnow

FORMAT = "switchyard/rq-job-hash@1"
MAX_REASON = 4000
MAX_JOB_ID = 255


@dataclass(frozen=True)
class Quarantined:
    """One job to quarantine: its id, where it was found, its raw hash and why."""

    job_id: str
    source: str  # the list or registry key it was found in
    raw: bytes  # `encode_raw` output
    reason: str


@dataclass(frozen=True)
class QuarantinedJob:
    """A decoded quarantine document."""

    job_id: bytes
    found_in: str
    fields: dict[bytes, bytes]
    hash_present: bool = True  # False: the entry had no job hash (fields is empty)
    score: float | None = None  # its score, when found in a sorted set


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def encode_raw(
    job_id: str, found_in: str, fields: Mapping[bytes, bytes] | None, score: float | None = None
) -> bytes:
    """The whole hash (None: there was none) as a reversible JSON document."""
    doc: dict[str, object] = {
        "format": FORMAT,
        "job_id": _b64(job_id.encode("utf-8", "surrogateescape")),
        "found_in": found_in,
        "hash_present": fields is not None,
        "fields": [[_b64(k), _b64(v)] for k, v in (fields or {}).items()],
    }
    if score is not None:
        doc["score"] = score
    return json.dumps(doc, sort_keys=True).encode("utf-8")


def decode_raw(raw: bytes) -> QuarantinedJob:
    doc = json.loads(raw)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    fields = {base64.b64decode(k): base64.b64decode(v) for k, v in doc["fields"]}
    job_id = base64.b64decode(doc["job_id"])
    present = bool(doc.get("hash_present", True))
    return QuarantinedJob(job_id, doc["found_in"], fields, present, doc.get("score"))


def storable_job_id(job_id: str) -> str:
    """The id as the `job_id` column can hold it: text, or `b64:` + base64 for odd bytes."""
    raw = job_id.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and len(text) <= MAX_JOB_ID and not text.startswith(("b64:", "sha256:")):
        return text
    encoded = "b64:" + _b64(raw)
    if len(encoded) <= MAX_JOB_ID:
        return encoded
    # Too long to keep whole: a digest is unique and stable, so a rerun finds the row and two
    # different ids never collide; the full id stays in the row's raw document.
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def quarantine_row(item: Quarantined, now: datetime) -> dict[str, object]:
    return {
        "job_id": storable_job_id(item.job_id),
        "source": item.source[:255],
        "raw": item.raw,
        "reason": item.reason[:MAX_REASON],
        "created_at": now,
    }


# -- the rows, for `switchyard quarantine` -------------------------------------------------


class Resolution(enum.StrEnum):
    REMAPPED = "remapped"
    RELEASED = "released"
    DROPPED = "dropped"


# Which resolution may follow which (None: open). Releasing a remapped job would run it twice;
# a released job is in Redis again, where the next migration decides about it.
MAY_FOLLOW: dict[Resolution, tuple[Resolution | None, ...]] = {
    Resolution.REMAPPED: (None,),
    Resolution.RELEASED: (None, Resolution.DROPPED),
    Resolution.DROPPED: (None,),
}


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    job_id: str
    source: str
    reason: str
    created_at: datetime
    resolution: Resolution | None
    resolved_at: datetime | None
    raw: bytes

    @property
    def job(self) -> QuarantinedJob:
        return decode_raw(self.raw)


def _row(r: sa.Row[Any]) -> QuarantineRow:
    resolution = Resolution(r.resolution) if r.resolution else None
    raw = bytes(r.raw)
    return QuarantineRow(
        r.id, r.job_id, r.source, r.reason, r.created_at, resolution, r.resolved_at, raw
    )


def list_rows(store: TaskStore, *, include_resolved: bool, limit: int) -> list[QuarantineRow]:
    """Oldest first; open rows only unless `include_resolved`."""
    query = sa.select(quarantine).order_by(quarantine.c.id).limit(limit)
    if not include_resolved:
        query = query.where(quarantine.c.resolution.is_(None))
    with translated("reading the quarantine"), store.connections.connect() as conn:
        return [_row(r) for r in conn.execute(query)]


def count_rows(store: TaskStore) -> dict[str, int]:
    """Rows by resolution (`open` for unresolved)."""
    query = sa.select(quarantine.c.resolution, sa.func.count()).group_by(quarantine.c.resolution)
    with translated("counting the quarantine"), store.connections.connect() as conn:
        return {str(res or "open"): int(n) for res, n in conn.execute(query)}


def find_row(store: TaskStore, ident: str) -> QuarantineRow | None:
    """A row by its number, or by its rq job id."""
    if ident.isascii() and ident.isdigit():
        where = quarantine.c.id == int(ident)
    else:
        where = quarantine.c.job_id == storable_job_id(ident)
    with translated("reading the quarantine"), store.connections.connect() as conn:
        found = conn.execute(sa.select(quarantine).where(where)).first()
    return None if found is None else _row(found)


def resolve(store: TaskStore, row_id: int, resolution: Resolution) -> bool:
    """Compare-and-set the row to `resolution` from a state that may precede it; False if
    the row was in another state (a concurrent resolution won)."""
    allowed = MAY_FOLLOW[resolution]
    states = [s.value for s in allowed if s is not None]
    prior = sa.or_(quarantine.c.resolution.is_(None), quarantine.c.resolution.in_(states))
    if None not in allowed:
        prior = quarantine.c.resolution.in_(states)
    stmt = (
        quarantine.update()
        .where(quarantine.c.id == row_id, prior)
        .values(resolution=resolution.value, resolved_at=utcnow())
    )
    with translated("resolving a quarantine row"), store.connections.begin() as conn:
        return bool(conn.execute(stmt).rowcount)


def reopen(store: TaskStore, row_id: int, prior: Resolution | None) -> None:
    """Undo a release whose put-back was refused: back to the state it had before."""
    stmt = (
        quarantine.update()
        .where(quarantine.c.id == row_id, quarantine.c.resolution == Resolution.RELEASED.value)
        .values(
            resolution=None if prior is None else prior.value,
            resolved_at=None if prior is None else utcnow(),
        )
    )
    with translated("reopening a quarantine row"), store.connections.begin() as conn:
        conn.execute(stmt)
