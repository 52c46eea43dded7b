"""`switchyard backup`: a snapshot of everything in play, taken without changing anything.

Layout of a backup directory (written as `<dir>.partial`, renamed when complete, so a crash
never leaves something that looks like a finished backup):

    manifest.json            format, time, counts, sha256 of every file, notes
    redis/structures.jsonl   every rq queue list, registry (wip, scheduled, deferred, ready,
                             failed, finished, canceled) and rq:queues: one key a line
    redis/jobs.jsonl         every rq:job:<id> hash, field names and values base64 (exact bytes)
    redis/markers.jsonl      every rq 3.0 `rq:queue:<q>:intermediate:first_seen:<id>` string
                             (a crash marker, not a queue): value base64 (exact bytes), pttl
    redis/dump.rdb           Redis's own snapshot, when Redis persists to disk and the file
                             is readable here (after a BGSAVE that has really finished)
    db/tasks.jsonl           every task row
    db/quarantine.jsonl      every quarantined job, raw bytes base64
    db/system_state.jsonl    mode, pause and maintenance flags at the time

The structures are read in one MULTI/EXEC, so the queues and registries are one instant;
job hashes are read after (a job finishing meanwhile may lose its hash; the manifest says so).
A key is a structure only when its name and its TYPE agree (`survey`); any other key of
rq's under those names is listed in the manifest (`redis.skipped_keys`: key -> TYPE), never
read with a list or sorted-set command, and never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis import Redis

from switchyard.config import masked_url
from switchyard.db.snapshot import TABLES, b64, snapshot
from switchyard.db.store import TaskStore
from switchyard.errors import NotFound, UsageError
from switchyard.migration.rq_reader import PREFIX, QUEUES_SET, is_wrongtype, key_types
from switchyard.rq_engine import keys
from switchyard.rq_engine.connection import BrokerUnavailable, translated_redis
from switchyard.rq_engine.inventory import unknown_keys
from switchyard.rq_engine.keys import REGISTRIES, Role

FORMAT = "switchyard-backup@1"
JOB_PREFIX = f"{PREFIX}:job:"
# What a backup reads as a structure (or a marker); the rest of rq's keys are not queued work.
STRUCTURE_ROLES = REGISTRIES | {Role.QUEUES, Role.QUEUE, Role.INTERMEDIATE, Role.MARKER}
# One SCAN walk finds every structure above and the markers (rq:queue:...), but skips the
# job hashes (rq:job:*) by their first letter: c(anceled) d f q r s w.
STRUCTURE_PATTERN = f"{PREFIX}:[cdfqrsw]*"
BGSAVE_TIMEOUT = 300.0
CHUNK = 1000


# -- value encoding: exact bytes, readable where they are text --------------------------------


def text(raw: bytes | str) -> str:
    """Keys and members as JSON strings; non-UTF-8 bytes survive as surrogate escapes."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def raw_bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


# -- writing files with their checksums ---------------------------------------------------


@dataclass
class FileRecord:
    sha256: str
    bytes: int
    records: int | None = None


def write_jsonl(path: Path, docs: Iterable[dict[str, Any]]) -> FileRecord:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, size, n = hashlib.sha256(), 0, 0
    with path.open("wb") as fh:
        for doc in docs:
            line = json.dumps(doc, sort_keys=True).encode("utf-8") + b"\n"
            fh.write(line)
            digest.update(line)
            size += len(line)
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    return FileRecord(digest.hexdigest(), size, n)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            yield json.loads(line)


# -- reading Redis ---------------------------------------------------------------------------


def expected_type(key: str) -> str | None:
    """The TYPE an rq key must have to be read as a structure (a queue or intermediate list,
    a registry, rq:queues) or as a marker, by `keys.name_of`; None for any other key."""
    name = keys.name_of(key)
    if name is None or name.role not in STRUCTURE_ROLES:
        return None
    return name.expected_type


@dataclass
class Survey:
    """rq's structures (key, type), its markers, and the keys whose TYPE did not match."""

    structures: list[tuple[bytes, str]]
    markers: list[bytes]
    skipped: dict[str, str]


def survey(r: Redis) -> Survey:
    """One SCAN walk, then every candidate's TYPE in one pipeline: a key is a structure (or
    a marker) only when its name and its TYPE both say so."""
    with translated_redis("scanning rq keys"):
        keys = set(r.scan_iter(match=STRUCTURE_PATTERN, count=CHUNK))
        named = {text(k): k for k in keys if expected_type(text(k)) is not None}
        named.setdefault(QUEUES_SET, QUEUES_SET.encode())
        types = key_types(r, sorted(named))
    found = Survey([], [], {})
    for name, key in sorted(named.items()):
        want, kind = expected_type(name), types[name]
        if kind == "none":
            continue  # gone since the SCAN (or rq:queues never made)
        if kind != want:
            found.skipped[name] = kind
        elif kind == "string":
            found.markers.append(key)
        else:
            found.structures.append((key, kind))
    found.structures.sort()
    return found


def structure_keys(r: Redis) -> list[tuple[bytes, str]]:
    """(key, type) of every rq queue list and registry, and rq:queues, found by SCAN."""
    return survey(r).structures


def read_structures(
    r: Redis, keys: list[tuple[bytes, str]], skipped: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """All of them in one MULTI/EXEC: one instant. A key that is no longer of its type
    (WRONGTYPE: it changed since the SCAN) is left out, and noted in `skipped`."""
    with translated_redis("reading rq queues and registries"):
        pipe = r.pipeline(transaction=True)
        for key, kind in keys:
            if kind == "list":
                pipe.lrange(key, 0, -1)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            else:
                pipe.smembers(key)
        values = pipe.execute(raise_on_error=False)
        for value in values:
            if isinstance(value, Exception) and not is_wrongtype(value):
                raise value
    docs = []
    for (key, kind), value in zip(keys, values, strict=True):
        if isinstance(value, Exception):
            if skipped is not None:
                skipped[text(key)] = "wrongtype"
            continue
        if kind == "zset":
            members: list[Any] = [[text(m), s] for m, s in value]
        else:
            members = [text(m) for m in (value if kind == "list" else sorted(value))]
        docs.append({"key": text(key), "type": kind, "members": members})
    return docs


def iter_job_hashes(r: Redis) -> Iterator[dict[str, Any]]:
    """Every rq:job:<id> hash, with its remaining time to live, exact bytes in base64."""
    with translated_redis("scanning rq job hashes"):
        keys = [
            k
            for k in r.scan_iter(match=f"{JOB_PREFIX}*", count=CHUNK, _type="hash")
            if ":" not in text(k)[len(JOB_PREFIX) :]
        ]
    for start in range(0, len(keys), CHUNK):
        chunk = sorted(keys[start : start + CHUNK])
        with translated_redis("reading rq job hashes"):
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
                pipe.pttl(key)
            values = pipe.execute()
        for i, key in enumerate(chunk):
            fields, pttl = values[2 * i], values[2 * i + 1]
            if fields:
                yield {
                    "key": text(key),
                    "pttl": int(pttl),
                    "fields": [[b64(k), b64(v)] for k, v in fields.items()],
                }


def iter_markers(r: Redis, keys: list[bytes]) -> Iterator[dict[str, Any]]:
    """rq 3.0's `first_seen` markers, exact bytes in base64, with their time to live."""
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        with translated_redis("reading rq markers"):
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.get(key)
                pipe.pttl(key)
            values = pipe.execute(raise_on_error=False)
        for i, key in enumerate(chunk):
            value, pttl = values[2 * i], values[2 * i + 1]
            if isinstance(value, bytes) and not isinstance(pttl, Exception):
                yield {"key": text(key), "pttl": int(pttl), "value": b64(value)}


# -- Redis's own snapshot ------------------------------------------------------------------


@dataclass
class Persistence:
    enabled: bool | None  # None: the server would not say (CONFIG disabled)
    note: str
    dump_path: str | None = None


def redis_persistence(r: Redis) -> Persistence:
    try:
        save = r.config_get("save").get("save", "")
        aof = r.config_get("appendonly").get("appendonly", "no")
    except redis.ResponseError as exc:
        return Persistence(None, f"cannot read Redis persistence settings ({exc}); logical only")
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"redis error while reading persistence settings: {exc}") from exc
    if not save and aof != "yes":
        return Persistence(False, "redis persistence disabled; logical backup only")
    folder = str(r.config_get("dir").get("dir") or "")
    name = str(r.config_get("dbfilename").get("dbfilename") or "dump.rdb")
    return Persistence(True, f"save={save!r} appendonly={aof}", str(Path(folder) / name))


def bgsave_and_wait(r: Redis, timeout: float = BGSAVE_TIMEOUT) -> int:
    """Start a BGSAVE and return LASTSAVE once it has really finished (not the old one)."""
    with translated_redis("taking a Redis snapshot"):
        _wait_no_bgsave(r, timeout)
        before = int(r.lastsave().timestamp())
        saves_before = r.info("persistence").get("rdb_saves")
        if time.time() - before < 1.5:
            time.sleep(1.5)  # LASTSAVE has one-second resolution: make a new save visible
        r.bgsave()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = r.info("persistence")
            last = int(r.lastsave().timestamp())
            done = last > before or (
                saves_before is not None and info.get("rdb_saves", 0) > saves_before
            )
            if done and info.get("rdb_bgsave_in_progress") == 0:
                if info.get("rdb_last_bgsave_status") != "ok":
                    raise BrokerUnavailable("redis BGSAVE failed; see the Redis log")
                return last
            time.sleep(0.1)
    raise BrokerUnavailable(f"redis BGSAVE did not finish within {timeout:g}s")


def _wait_no_bgsave(r: Redis, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while r.info("persistence").get("rdb_bgsave_in_progress"):
        if time.monotonic() > deadline:
            raise BrokerUnavailable("a Redis BGSAVE already running did not finish in time")
        time.sleep(0.1)


def copy_dump(persistence: Persistence, lastsave: int, dest: Path) -> str | None:
    """Copy the dump if it is the file Redis has just written (same host); else say why not."""
    source = Path(persistence.dump_path or "")
    try:
        stat = source.stat()
    except OSError:
        return f"dump {source} is not readable from here (remote Redis?): copy it from its host"
    if abs(stat.st_mtime - lastsave) > 2:
        return f"dump {source} here is not the one Redis just saved (another host?); not copied"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return None


# -- the backup ------------------------------------------------------------------------------


def default_backup_dir(root: Path = Path("backups")) -> Path:
    return root / f"switchyard-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def take_backup(store: TaskStore, r: Redis, out: Path, *, redis_url: str = "") -> dict[str, Any]:
    """Write a complete backup to `out` (which must not exist yet); returns the manifest."""
    if out.exists():
        raise UsageError(f"{out} already exists; a backup never overwrites another")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    created_at = datetime.now(UTC).isoformat()
    files: dict[str, FileRecord] = {}
    counts: dict[str, Any] = {}
    notes: list[str] = []
    redis_info = _backup_redis(r, work, files, counts, notes)
    _backup_database(store, work, files, counts)
    manifest = {
        "format": FORMAT,
        "created_at": created_at,
        "redis": {**redis_info, "url": masked_url(redis_url)},
        "database": {"dialect": store.dialect},
        "counts": counts,
        "files": {name: rec.__dict__ for name, rec in sorted(files.items())},
        "notes": notes,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    work.rename(out)
    return {**manifest, "path": str(out)}


def _backup_redis(
    r: Redis, work: Path, files: dict[str, FileRecord], counts: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    persistence = redis_persistence(r)
    notes.append(persistence.note)
    dump_note = None
    if persistence.enabled:
        lastsave = bgsave_and_wait(r)
        dump_note = copy_dump(persistence, lastsave, work / "redis" / "dump.rdb")
        if dump_note:
            notes.append(dump_note)
        else:
            path = work / "redis" / "dump.rdb"
            files["redis/dump.rdb"] = FileRecord(file_sha256(path), path.stat().st_size)
    found = survey(r)
    structures = read_structures(r, found.structures, found.skipped)
    files["redis/structures.jsonl"] = write_jsonl(work / "redis" / "structures.jsonl", structures)
    files["redis/jobs.jsonl"] = write_jsonl(work / "redis" / "jobs.jsonl", iter_job_hashes(r))
    markers = iter_markers(r, found.markers)
    files["redis/markers.jsonl"] = write_jsonl(work / "redis" / "markers.jsonl", markers)
    counts["redis_keys"] = {d["key"]: len(d["members"]) for d in structures}
    counts["failed_jobs"] = {
        d["key"]: len(d["members"])
        for d in structures
        if (name := keys.name_of(d["key"])) and name.role is Role.FAILED and d["members"]
    }
    unknown = unknown_keys(r)
    counts["job_hashes"] = files["redis/jobs.jsonl"].records
    counts["markers"] = files["redis/markers.jsonl"].records
    notes.append("job hashes are read after the queues; a job finishing meanwhile may lack one")
    if found.skipped:
        notes.append(
            f"{len(found.skipped)} rq key(s) of an unexpected type were not read as queues or "
            "registries (see redis.skipped_keys)"
        )
    if unknown:
        notes.append(
            f"{len(unknown)} rq key(s) of no known rq layout were left alone, not backed up "
            "(see redis.unknown_keys)"
        )
    return {
        "persistence": persistence.enabled,
        "dump": "redis/dump.rdb" if "redis/dump.rdb" in files else None,
        "skipped_keys": dict(sorted(found.skipped.items())),
        "unknown_keys": unknown,
    }


def _backup_database(
    store: TaskStore, work: Path, files: dict[str, FileRecord], counts: dict[str, Any]
) -> None:
    with snapshot(store) as snap:
        for name in TABLES:
            rel = f"db/{name}.jsonl"
            files[rel] = write_jsonl(work / rel, snap.rows(name))
            counts[name] = files[rel].records
        counts["tasks_by_status_engine"] = snap.tasks_by_status_engine()


# -- reading a backup back -----------------------------------------------------------------


def load_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise NotFound(f"no backup at {path}: manifest.json is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a {FORMAT} backup")
    return dict(manifest)


def verify_checksums(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Every file the manifest lists, checked against its sha256: the list of problems."""
    problems = []
    for name, rec in manifest["files"].items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(file) != rec["sha256"]:
            problems.append(f"{name} does not match its sha256")
    return problems
