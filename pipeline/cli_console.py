"""Commands of the review console: `serve`, `tenants create`, `users create`."""

from __future__ import annotations

import os
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from pipeline.config import Settings, load_settings
from pipeline.logging import configure_logging

tenants_app = typer.Typer(help="Tenants of the review console.", no_args_is_help=True)
users_app = typer.Typer(help="Analyst accounts of the review console.", no_args_is_help=True)
console = Console()
PASSWORD_ENV = "SECANALYST_NEW_USER_PASSWORD"


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def serve(host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
          port: Annotated[int | None, typer.Option(help="Listen port.")] = None) -> None:
    """Serve the analysts' review console (verdict queue, feedback, usage, /api/)."""
    import uvicorn

    from pipeline.web.console.app import create_console_app

    settings = _settings()
    uvicorn.run(create_console_app(settings), host=host or settings.console.host,
                port=port or settings.console.port, access_log=False, log_config=None)


def add_user(settings: Settings, tenant: str, email: str, role: str, password: str) -> int:
    """Create the tenant if new, then the user (or reset an existing user's password and
    role); audited."""
    from psycopg.types.json import Jsonb

    from pipeline.store.console import create_tenant, create_user
    from pipeline.web.console.security import hash_password

    with psycopg.connect(settings.database_url) as conn:
        created_tenant = create_tenant(conn, tenant)
        user_id = create_user(conn, tenant, email, role, hash_password(password))
        conn.execute(
            """INSERT INTO audit_log (tenant_id, user_email, action, target, detail)
               VALUES (%s, 'cli', 'user.create', %s, %s)""",
            (tenant, f"user:{user_id}", Jsonb({"email": email, "role": role,
                                               "new_tenant": created_tenant})))
    return user_id


@users_app.command("create")
def users_create(
        tenant: Annotated[str, typer.Option(help="Tenant the user belongs to.")],
        email: Annotated[str, typer.Option(help="Sign-in email.")],
        role: Annotated[str, typer.Option(help="analyst or admin.")] = "analyst") -> None:
    """Create an account; the password comes from $SECANALYST_NEW_USER_PASSWORD or a
    prompt (at least 12 characters)."""
    if role not in {"analyst", "admin"}:
        raise typer.BadParameter("choose analyst or admin", param_hint="--role")
    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    try:
        user_id = add_user(_settings(), tenant, email, role, password)
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from exc
    console.print(f"user {user_id}: {email} ({role}) in tenant {tenant}")


@tenants_app.command("create")
def tenants_create(tenant: Annotated[str, typer.Argument(help="Tenant id.")],
                   name: Annotated[str | None, typer.Option(help="Display name.")] = None,
                   ) -> None:
    """Create a tenant (idempotent)."""
    from pipeline.store.console import create_tenant

    with psycopg.connect(_settings().database_url) as conn:
        created = create_tenant(conn, tenant, name)
    console.print(f"tenant {tenant}: {'created' if created else 'already exists'}")
