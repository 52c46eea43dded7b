"""Decoding an rq job's `data` field: zlib(serialized (func_name, instance, args, kwargs)).

rq's JSON serializer is decoded as is. Pickle (rq's default) is only decoded when the operator
allows it, and then by an unpickler whose `find_class` admits nothing but plain data
containers, so a job cannot run code on the migrating host just by being read.
"""

from __future__ import annotations

import io
import json
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The only globals a pickled job may name: containers of plain data, built by REDUCE.
PLAIN_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
    }
)


PICKLE_PROTO = b"\x80"  # the first byte of every pickle of protocol 2 or later (rq's)


class Undecodable(Exception):
    """The job's data could not be decoded safely; `str(exc)` is the quarantine reason."""


class NeedsPickle(Undecodable):
    """Pickled data while pickle is not allowed: left where it is, not quarantined, so a
    rerun with --allow-pickle can still move it."""


@dataclass(frozen=True)
class DecodedJob:
    func_name: str | None
    instance: Any
    args: list[Any]
    kwargs: dict[str, Any]
    serializer: str  # "json" or "pickle"


class PlainDataUnpickler(pickle.Unpickler):
    """Refuses every class and function except `PLAIN_GLOBALS`, and persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise Undecodable(f"pickle names {module}.{name}, which is not a plain data type")

    def persistent_load(self, pid: Any) -> Any:
        raise Undecodable("pickle uses persistent ids, which are not plain data")


def decode_job(fields: Mapping[bytes, bytes], *, allow_pickle: bool) -> DecodedJob:
    """The job's call, or Undecodable with the reason."""
    data = fields.get(b"data")
    if data is None:
        raise Undecodable("job hash has no data field")
    payload = _decompress(data)
    as_json = _try_json(payload)
    if as_json is not None:
        return _as_call(as_json, "json")
    if not allow_pickle:
        if payload[:1] == PICKLE_PROTO:
            raise NeedsPickle("data is pickle; rerun with --allow-pickle to decode plain data")
        raise Undecodable("data is neither JSON nor pickle")
    return _as_call(_unpickle(payload), "pickle")


def decode_meta(fields: Mapping[bytes, bytes], *, allow_pickle: bool) -> dict[str, Any]:
    """The job's `meta` (written with the job's serializer, uncompressed), for a mapper to
    read; informational, so what cannot be read safely is an empty dict, never a failure."""
    raw = fields.get(b"meta")
    if not raw:
        return {}
    value = _try_json(raw)
    if value is None and allow_pickle and raw[:1] == PICKLE_PROTO:
        try:
            value = _unpickle(raw)
        except Undecodable:
            value = None
    return value if isinstance(value, dict) else {}


def _decompress(data: bytes) -> bytes:
    """rq compresses with zlib, but reads uncompressed data too; so do we."""
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


def _try_json(payload: bytes) -> Any | None:
    if payload.lstrip()[:1] not in (b"[", b"{"):
        return None
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _unpickle(payload: bytes) -> Any:
    try:
        return PlainDataUnpickler(io.BytesIO(payload)).load()
    except Undecodable:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise Undecodable(f"data is neither JSON nor a readable pickle: {exc}") from None


def _as_call(value: Any, serializer: str) -> DecodedJob:
    """Check the shape rq writes: a 4-sequence (func_name, instance, args, kwargs)."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise Undecodable(f"{serializer} data is not rq's (func, instance, args, kwargs)")
    func_name, instance, args, kwargs = value
    if func_name is not None and not isinstance(func_name, str):
        raise Undecodable(f"{serializer} data names no function")
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise Undecodable(f"{serializer} data has malformed args or kwargs")
    return DecodedJob(func_name, instance, list(args), dict(kwargs), serializer)
