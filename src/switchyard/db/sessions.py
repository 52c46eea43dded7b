"""The dashboard's server-side sessions (`admin_sessions`) and the server's own secrets
(`server_secrets`). Callers pass hashes and fingerprints, never a session id or a token."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa

from switchyard.db.clock import utcnow
from switchyard.db.connections import translated
from switchyard.db.schema import admin_sessions, server_secrets


class SessionStore:
    """`TaskStore`'s sessions and secrets (a mixin over its connections)."""

    connections: sa.Engine

    def server_secret(self, name: str) -> str:
        """The secret called `name`, made (random, 256 bits) by whichever process asks first."""
        with translated("reading a server secret"):
            found = self._secret(name)
            if found is not None:
                return found
            try:
                with self.connections.begin() as conn:
                    made = secrets.token_hex(32)
                    row = {"name": name, "value": made, "created_at": utcnow()}
                    conn.execute(server_secrets.insert().values(row))
                    return made
            except sa.exc.IntegrityError:  # another process made it first: use theirs
                raced = self._secret(name)
                assert raced is not None
                return raced

    def _secret(self, name: str) -> str | None:
        query = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
        with self.connections.connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        return None if value is None else str(value)

    def open_session(self, session_hash: str, token_fp: str, expires_at: datetime) -> None:
        row = {
            "id": session_hash,
            "token_fp": token_fp,
            "created_at": utcnow(),
            "expires_at": expires_at,
        }
        with translated("opening a session"), self.connections.begin() as conn:
            conn.execute(admin_sessions.insert().values(row))

    def session_open(self, session_hash: str, token_fp: str) -> bool:
        """Whether the session exists, has not expired, and belongs to the token in force."""
        query = sa.select(sa.literal(1)).where(
            admin_sessions.c.id == session_hash,
            admin_sessions.c.token_fp == token_fp,
            admin_sessions.c.expires_at > utcnow(),
        )
        with translated("reading a session"), self.connections.connect() as conn:
            return conn.execute(query).first() is not None

    def end_session(self, session_hash: str) -> None:
        with translated("ending a session"), self.connections.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.id == session_hash))

    def end_stale_sessions(self, token_fp: str) -> int:
        """Delete expired sessions and those of any other token (a rotated one)."""
        stale = sa.or_(
            admin_sessions.c.token_fp != token_fp, admin_sessions.c.expires_at <= utcnow()
        )
        with translated("ending stale sessions"), self.connections.begin() as conn:
            return conn.execute(admin_sessions.delete().where(stale)).rowcount or 0
