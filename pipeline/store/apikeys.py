"""api_keys: per-tenant gateway keys, stored as HMAC-SHA256 under a server-side pepper.

A key reads `sak_<key_id>_<secret>`: `key_id` (12 hex characters) is public and is the
primary-key lookup; `secret` is `secrets.token_urlsafe(32)` (256 bits). Why HMAC and not
argon2id: argon2id exists to slow down guessing of low-entropy passwords; a 256-bit random
secret cannot be guessed however fast the hash, while argon2id would cost tens of
milliseconds of CPU on every gateway request (a denial-of-service lever, and far over the
gateway's latency budget). The pepper lives outside the database, so a leaked table alone
cannot even confirm a guess. Verification compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg import AsyncConnection

from pipeline.config import Settings

PREFIX = "sak"
_KEY_ID_BYTES = 6


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class StoredKey:
    tenant_id: str
    key_hash: bytes
    revoked: bool


def load_pepper(settings: Settings) -> bytes:
    """The configured pepper, else one created once (0600) under the state directory."""
    if settings.gateway.api_key_pepper is not None:
        return settings.gateway.api_key_pepper.get_secret_value().encode()
    path = settings.state_dir / "gateway" / "api-key-pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created by a concurrent process meanwhile
            return _read_pepper(path)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return _read_pepper(path)


def _read_pepper(path: Path) -> bytes:
    value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds a pepper shorter than 32 characters")
    return value.encode()


def hash_key(pepper: bytes, key: str) -> bytes:
    return hmac.new(pepper, key.encode(), hashlib.sha256).digest()


def new_key() -> tuple[str, str]:
    """(key_id, full key)."""
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key_id(key: str) -> str | None:
    """The key id of a well-formed key, else None (no database lookup for garbage)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 2 * _KEY_ID_BYTES:
        return None
    if any(c not in "0123456789abcdef" for c in parts[1]) or len(parts[2]) < 32:
        return None
    return parts[1]


def verify(pepper: bytes, key: str, stored: StoredKey | None) -> str | None:
    """The tenant the key belongs to, or None when unknown, revoked or wrong."""
    if stored is None or stored.revoked:
        return None
    if not hmac.compare_digest(hash_key(pepper, key), stored.key_hash):
        return None
    return stored.tenant_id


async def create_key(conn: AsyncConnection, pepper: bytes, tenant_id: str,
                     name: str = "") -> tuple[str, str]:
    """Store a new key for the tenant; return (key_id, full key). The full key is never
    stored: show it once. (On the owner's connection or a tenant's, under the policies.)"""
    key_id, key = new_key()
    await conn.execute("INSERT INTO api_keys (key_id, tenant_id, name, key_hash) "
                       "VALUES (%s, %s, %s, %s)",
                       (key_id, tenant_id, name, hash_key(pepper, key)))
    return key_id, key


async def revoke_key(conn: AsyncConnection, key_id: str) -> bool:
    """Revoke; False when no such active key (or, under the policies, another tenant's)."""
    cur = await conn.execute("UPDATE api_keys SET revoked_at = now() "
                             "WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
    return cur.rowcount == 1


async def list_keys(conn: AsyncConnection, tenant_id: str | None = None) -> list[ApiKey]:
    """Every key (or `tenant_id`'s) by tenant, oldest first; never a hash."""
    cur = await conn.execute(
        """SELECT key_id, tenant_id, name, created_at, revoked_at FROM api_keys
           WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text
           ORDER BY tenant_id, created_at""", {"tenant": tenant_id})
    return [ApiKey(*row) for row in await cur.fetchall()]


async def fetch_key(conn: AsyncConnection, key_id: str) -> StoredKey | None:
    cur = await conn.execute(
        "SELECT tenant_id, key_hash, revoked_at IS NOT NULL FROM api_keys WHERE key_id = %s",
        (key_id,))
    row = await cur.fetchone()
    return None if row is None else StoredKey(row[0], bytes(row[1]), bool(row[2]))
