"""Refusals of the console become answers here, in one place: JSON under /api/, an HTML
page (or a redirect to sign-in) elsewhere."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates


class ConsoleError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class NotSignedIn(ConsoleError):
    def __init__(self) -> None:
        super().__init__(401, "sign in first")


def not_found() -> ConsoleError:
    # Same answer for "does not exist" and "belongs to another tenant": no oracle.
    return ConsoleError(404, "no such verdict")


def forbidden() -> ConsoleError:
    return ConsoleError(403, "your role does not allow this")


def bad_csrf() -> ConsoleError:
    return ConsoleError(403, "the form expired; reload the page and try again")


def invalid(param: str, message: str) -> ConsoleError:
    return ConsoleError(422, f"{param}: {message}")


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install_error_handlers(app: FastAPI, templates: Jinja2Templates) -> None:
    async def on_console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        if _is_api(request):
            return JSONResponse({"error": {"message": exc.message}},
                                status_code=exc.status_code)
        if isinstance(exc, NotSignedIn):
            return RedirectResponse("/login", status_code=303)
        return templates.TemplateResponse(
            request, "error.html", {"message": exc.message, "status": exc.status_code,
                                    "user": None},
            status_code=exc.status_code)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        message = f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}"
        return await on_console_error(request, ConsoleError(422, message))

    app.add_exception_handler(ConsoleError, on_console_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
