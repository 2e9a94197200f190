"""Commands of the gateway side: `gateway`, `apikeys create|revoke|list`,
`usage report|retention`; plus the partition upkeep `db migrate` runs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.preflight import Need, command_settings
from pipeline.config import Settings

if TYPE_CHECKING:
    from pipeline.store.apikeys import ApiKey

usage_app = typer.Typer(help="LLM usage: reports and retention.", no_args_is_help=True)
apikeys_app = typer.Typer(help="API keys of the gateway, per tenant.", no_args_is_help=True)
console = Console()


def maintain_partitions(settings: Settings) -> list[str]:
    """Create the usage partitions of this month and the months ahead (idempotent)."""
    from pipeline.store.usage_partitions import ensure_partitions

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return ensure_partitions(conn, months_ahead=settings.usage.partitions_ahead_months)


async def new_api_key(settings: Settings, tenant: str, name: str = "") -> tuple[str, str]:
    """(key_id, full key) of a new key of `tenant` (owner connection)."""
    from pipeline.store.apikeys import create_key, load_pepper

    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        return await create_key(conn, load_pepper(settings), tenant, name)


def create_api_key(settings: Settings, tenant: str, name: str = "") -> tuple[str, str]:
    """`new_api_key` for a caller outside an event loop (the command, sync tests)."""
    return asyncio.run(new_api_key(settings, tenant, name))


def revoke_api_key(settings: Settings, key_id: str) -> bool:
    from pipeline.store.apikeys import revoke_key

    async def revoke() -> bool:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            return await revoke_key(conn, key_id)

    return asyncio.run(revoke())


def gateway(host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
            port: Annotated[int | None, typer.Option(help="Listen port.")] = None) -> None:
    """Serve the OpenAI-compatible gateway (/v1/chat/completions, /v1/models, /metrics)."""
    import uvicorn

    from pipeline.web.gateway import create_gateway_app

    settings = command_settings(Need.DATABASE)
    uvicorn.run(create_gateway_app(settings), host=host or settings.gateway.host,
                port=port or settings.gateway.port, access_log=False, log_config=None)


@apikeys_app.command("create")
def apikeys_create(tenant: Annotated[str, typer.Option(help="Tenant the key acts for.")],
                   name: Annotated[str, typer.Option(help="A label for the key.")] = "",
                   ) -> None:
    """Create a key; it is printed once and never stored (only its HMAC is)."""
    key_id, key = create_api_key(command_settings(Need.DATABASE), tenant, name)
    console.print(f"key id: {key_id}  tenant: {tenant}")
    console.print("API key (shown once, store it now):")
    print(key)


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from list).")],
                   ) -> None:
    """Revoke a key (the gateway stops accepting it within gateway.api_key_cache_s)."""
    if not revoke_api_key(command_settings(Need.DATABASE), key_id):
        console.print(f"no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@apikeys_app.command("list")
def apikeys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
                 ) -> None:
    """List keys (ids, tenants, names, dates; never secrets)."""
    from pipeline.store.apikeys import list_keys

    async def listed() -> list[ApiKey]:
        async with await psycopg.AsyncConnection.connect(
                command_settings(Need.DATABASE).database_url) as conn:
            return await list_keys(conn, tenant)

    keys = asyncio.run(listed())
    table = Table("key id", "tenant", "name", "created", "revoked")
    for k in keys:
        table.add_row(k.key_id, k.tenant_id, k.name, f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    console.print(table)


def _when(value: str | None, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@usage_app.command("report")
def usage_report_command(
        since: Annotated[str | None, typer.Option(help="ISO start (default: 30 days ago).")]
        = None,
        until: Annotated[str | None, typer.Option(help="ISO end, exclusive (default: now).")]
        = None,
        tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
        format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
        ) -> None:
    """Requests, tokens, p50/p95 TTFT, rejections and estimated cost per tenant and model."""
    from pipeline.store.usage_report import usage_report

    if format not in {"table", "csv", "json"}:
        raise typer.BadParameter("choose table, csv or json", param_hint="--format")
    settings = command_settings(Need.DATABASE)
    now = datetime.now(UTC)
    start, end = _when(since, now - timedelta(days=30)), _when(until, now)
    with psycopg.connect(settings.database_url) as conn:
        rows = usage_report(conn, since=start, until=end, pricing=settings.usage.pricing,
                            tenant=tenant)
    if format == "json":
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0].as_dict()) if rows else [])
        writer.writeheader()
        writer.writerows(r.as_dict() for r in rows)
        print(out.getvalue(), end="")
        return
    table = Table("tenant", "model", "requests", "ok", "input tok", "output tok",
                  "TTFT p50 ms", "TTFT p95 ms", "429", "503", "413", "other err", "est. cost",
                  title=f"LLM usage {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC")
    for r in rows:
        table.add_row(r.tenant_id, r.model_name, str(r.requests), str(r.succeeded),
                      f"{r.input_tokens:,}", f"{r.output_tokens:,}", _ms(r.ttft_p50_ms),
                      _ms(r.ttft_p95_ms), str(r.rejected_429), str(r.rejected_503),
                      str(r.rejected_413), str(r.failed_other), f"{r.estimated_cost:.4f}")
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


@usage_app.command("retention")
def usage_retention(
        keep_months: Annotated[int, typer.Option(
            help="Months kept, the current one included.", min=1)],
        dry_run: Annotated[bool, typer.Option(help="Only show what would be dropped.")]
        = False) -> None:
    """Detach and drop usage partitions older than the kept months."""
    from pipeline.store.usage_partitions import apply_retention

    with psycopg.connect(command_settings(Need.DATABASE).database_url, autocommit=True) as conn:
        plan = apply_retention(conn, keep_months=keep_months, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    console.print(f"cutoff {plan.cutoff:%Y-%m-%d}: {verb} "
                  f"{', '.join(plan.partitions) or 'no partitions'}; "
                  f"{plan.default_rows} older rows of the default partition")
