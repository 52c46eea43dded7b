"""The one conversion of a typed value to its wire shape: the JSON of `--json` and of the
HTTP API. Values below the faces are frozen dataclasses; a face calls `to_dict()`, which is
`as_json` unless the wire shape needs more (a computed figure, a renamed key).

Datetimes are naive UTC and go out as ISO 8601 with a `Z`; enums by value (a `Priority` by
its label); UUIDs as text; dataclasses, lists and dicts are converted item by item, keys in
field order."""

from __future__ import annotations

import enum
import uuid
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

from switchyard.domain import Priority


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


def as_json(value: Any) -> Any:
    """`value` with every dataclass, datetime, enum and UUID in it made JSON-ready; a
    dataclass's own fields are converted here, one it holds by its own `to_dict`."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _wire(getattr(value, f.name)) for f in fields(value)}
    return _wire(value)


def _wire(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if callable(to_dict) else as_json(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Priority):
        return value.label
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


__all__ = ["as_json", "iso"]
