"""Console sessions (owner connection): only the cookie token's SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

from pipeline.store.users import User


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()



async def create_session(conn: AsyncConnection, user_id: int, ttl_s: float
                         ) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token). Only the token's SHA-256 is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO console_sessions (token_hash, user_id, csrf_token, expires_at)
           VALUES (%s, %s, %s, %s)""",
        (hash_token(token), user_id, csrf, datetime.now(UTC) + timedelta(seconds=ttl_s)))
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token, csrf


async def find_session(conn: AsyncConnection, token: str) -> Session | None:
    cur = await conn.execute(
        """SELECT u.id, u.tenant_id, u.email, u.role, u.password_hash, s.csrf_token
           FROM console_sessions s JOIN console_users u ON u.id = s.user_id
           WHERE s.token_hash = %s AND s.expires_at > now() AND u.disabled_at IS NULL""",
        (hash_token(token),))
    row = await cur.fetchone()
    if row is None:
        return None
    return Session(User(int(row[0]), row[1], row[2], row[3], row[4]), row[5])


async def delete_session(conn: AsyncConnection, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = %s",
                       (hash_token(token),))
