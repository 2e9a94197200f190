"""What an app's lifespan opened, read back from `app.state` by the dependencies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request


def opened(request: Request, name: str) -> Any:
    """`app.state.<name>`, which the app's lifespan sets; an error naming it otherwise
    (a TestClient used without `with`, a router mounted into an app that does not open
    what it needs)."""
    found = getattr(request.app.state, name, None)
    if found is None:
        raise RuntimeError(f"app.state.{name} is not set: run the app's lifespan")
    return found
