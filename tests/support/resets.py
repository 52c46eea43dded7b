"""A private database reached through a proxy that resets connections."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from tests.support.servers import ResettingProxy


@dataclass(frozen=True)
class Proxied:
    url: str
    direct: sa.Engine
    proxy: ResettingProxy


def server_name(dialect: str) -> str:
    return "postgres" if dialect == "postgresql" else "mariadb"
