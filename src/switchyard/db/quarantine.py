"""What a migration cannot decode or map is kept, byte for byte, never dropped or guessed at.

A quarantine row's `raw` is a JSON document holding the whole job hash with every field name
and value base64-encoded, so `decode_raw(encode_raw(...))` gives back the exact bytes: the
job can be put back into Redis exactly as it was.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

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


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def encode_raw(job_id: str, found_in: str, fields: Mapping[bytes, bytes] | None) -> bytes:
    """The whole hash (None: there was none) as a reversible JSON document."""
    doc = {
        "format": FORMAT,
        "job_id": _b64(job_id.encode("utf-8", "surrogateescape")),
        "found_in": found_in,
        "hash_present": fields is not None,
        "fields": [[_b64(k), _b64(v)] for k, v in (fields or {}).items()],
    }
    return json.dumps(doc, sort_keys=True).encode("utf-8")


def decode_raw(raw: bytes) -> QuarantinedJob:
    doc = json.loads(raw)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    fields = {base64.b64decode(k): base64.b64decode(v) for k, v in doc["fields"]}
    return QuarantinedJob(base64.b64decode(doc["job_id"]), doc["found_in"], fields)


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
