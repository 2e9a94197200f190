"""What an app's lifespan opens onto `app.state`, and the dependencies reading it back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI
from starlette.requests import Request

from pipeline.config import Settings

R = TypeVar("R")
# What opens an app's resources from the settings (tests pass their own).
ResourceFactory = Callable[[Settings], AbstractAsyncContextManager[R]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def opening(settings: Settings, open_resources: ResourceFactory[R], name: str,
            then: Callable[[FastAPI, R], None] | None = None) -> Lifespan:
    """A lifespan that opens the app's resources for as long as it runs, as
    `app.state.<name>` (read back with `opened`); `then(app, resources)` once open."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            setattr(app.state, name, resources)
            if then is not None:
                then(app, resources)
            yield

    return lifespan


def opened(request: Request, name: str) -> Any:
    """`app.state.<name>`, which the app's lifespan sets; an error naming it otherwise
    (a TestClient used without `with`, a router mounted into an app that does not open
    what it needs)."""
    found = getattr(request.app.state, name, None)
    if found is None:
        raise RuntimeError(f"app.state.{name} is not set: run the app's lifespan")
    return found
