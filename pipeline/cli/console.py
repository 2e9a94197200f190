"""Commands of the review console: `serve`, `tenants create`, `users create`."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from pipeline.cli.preflight import Need, command_settings
from pipeline.config import Settings

tenants_app = typer.Typer(help="Tenants of the review console.", no_args_is_help=True)
users_app = typer.Typer(help="Analyst accounts of the review console.", no_args_is_help=True)
console = Console()
PASSWORD_ENV = "SECANALYST_NEW_USER_PASSWORD"


def serve(host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
          port: Annotated[int | None, typer.Option(help="Listen port.")] = None) -> None:
    """Serve the analysts' review console (verdict queue, feedback, usage, /api/)."""
    import uvicorn

    from pipeline.web.console.app import create_console_app

    settings = command_settings(Need.DATABASE)
    uvicorn.run(create_console_app(settings), host=host or settings.console.host,
                port=port or settings.console.port, access_log=False, log_config=None)


def add_user(settings: Settings, tenant: str, email: str, role: str, password: str) -> int:
    """Create the tenant if new, then the user (or reset an existing user's password and
    role); audited."""
    from pipeline.store.audit import audit_event
    from pipeline.store.users import create_tenant, create_user
    from pipeline.web.console.security import hash_password

    password_hash = hash_password(password)

    async def add() -> int:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            created_tenant = await create_tenant(conn, tenant)
            user_id = await create_user(conn, tenant, email, role, password_hash)
            await audit_event(conn, tenant, None, "cli", "user.create", f"user:{user_id}",
                              {"email": email, "role": role, "new_tenant": created_tenant})
            return user_id

    return asyncio.run(add())


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
        user_id = add_user(command_settings(Need.DATABASE), tenant, email, role, password)
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from exc
    console.print(f"user {user_id}: {email} ({role}) in tenant {tenant}")


@tenants_app.command("create")
def tenants_create(tenant: Annotated[str, typer.Argument(help="Tenant id.")],
                   name: Annotated[str | None, typer.Option(help="Display name.")] = None,
                   ) -> None:
    """Create a tenant (idempotent)."""
    from pipeline.store.users import create_tenant

    async def create() -> bool:
        async with await psycopg.AsyncConnection.connect(
                command_settings(Need.DATABASE).database_url) as conn:
            return await create_tenant(conn, tenant, name)

    created = asyncio.run(create())
    console.print(f"tenant {tenant}: {'created' if created else 'already exists'}")


@tenants_app.command("export")
def tenants_export(
        tenant: Annotated[str, typer.Argument(help="Tenant id.")],
        output: Annotated[str, typer.Option("--output", "-o", help=(
            "JSON-lines file to write; - for stdout."))] = "-") -> None:
    """Write everything held about a tenant (alerts, verdicts, feedback, usage, audit, API
    keys' and users' metadata; never key or password hashes) as JSON lines
    ({"table": ..., "row": {...}})."""
    import sys

    from pipeline.store.tenant_data import write_export

    with psycopg.connect(command_settings(Need.DATABASE).database_url) as conn:
        if output == "-":
            counts = write_export(conn, tenant, sys.stdout)
        else:
            with open(output, "w", encoding="utf-8") as out:
                counts = write_export(conn, tenant, out)
    summary = ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "no rows"
    Console(stderr=True).print(f"tenant {tenant}: exported {summary}")


@tenants_app.command("purge")
def tenants_purge(
        tenant: Annotated[str, typer.Argument(help="Tenant id.")],
        yes: Annotated[bool, typer.Option("--yes", help=(
            "Do not ask; for scripts that already confirmed."))] = False) -> None:
    """Delete everything held about a tenant from every table, after a confirmation; prints
    the rows deleted per table. Export first (`tenants export`) if you need a copy."""
    from pipeline.store.tenant_data import count_rows, purge

    with psycopg.connect(command_settings(Need.DATABASE).database_url) as conn:
        held = {t: n for t, n in count_rows(conn, tenant).items() if n}
        if not held:
            console.print(f"tenant {tenant}: nothing held")
            return
        console.print(f"tenant {tenant} holds: "
                      + ", ".join(f"{t} {n}" for t, n in sorted(held.items())))
        if not yes and not typer.confirm(f"Delete all of it for tenant {tenant!r}?"):
            console.print("nothing deleted")
            raise typer.Exit(1)
        deleted = purge(conn, tenant)
    console.print(f"tenant {tenant}: deleted "
                  + ", ".join(f"{t} {n}" for t, n in sorted(deleted.items()) if n))
