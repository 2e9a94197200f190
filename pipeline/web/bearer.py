"""The one bearer-auth dependency of the gateway and the ingest server: the request's
`Authorization: Bearer <api key>` → the key's tenant, or 401 (the same answer for a
missing, malformed, unknown or revoked key).

The app's lifespan hands it the key checker with `use_key_authenticator`.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request

from pipeline.web.app_state import opened
from pipeline.web.auth import KeyAuthenticator
from pipeline.web.errors import unauthorized

_STATE = "key_authenticator"


def use_key_authenticator(app: FastAPI, auth: KeyAuthenticator) -> None:
    setattr(app.state, _STATE, auth)


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, else None."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


# `async def` although it may not await: FastAPI runs a plain `def` dependency in a worker
# thread, a hop that costs more than the rest of a refusal.
async def bearer_tenant(request: Request,
                        authorization: Annotated[str | None, Header()] = None) -> str:
    key = bearer_key(authorization)
    if key is None:
        raise unauthorized()
    auth: KeyAuthenticator = opened(request, _STATE)
    tenant_id = await auth.tenant_for(key)
    if tenant_id is None:
        raise unauthorized()
    return tenant_id


BearerTenant = Annotated[str, Depends(bearer_tenant)]
