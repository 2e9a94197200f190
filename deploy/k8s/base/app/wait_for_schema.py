"""Init container of every pod that uses the database: wait until the migrations of *this*
image are applied (the `secanalyst-migrate` Job applies them), then exit 0.

Why not just order the Job first: Kubernetes has no ordering between a Job and a
Deployment, and a Deployment rolled out with a new image would otherwise start on the old
schema. The migration list comes from the same image, so "ready" means exactly "the schema
this release needs is there". Reads SECANALYST_DATABASE__URL (from the database Secret).
"""

import os
import sys
import time

import psycopg

from pipeline.store.migrate import available_migrations

POLL_S = 5.0
TIMEOUT_S = float(os.environ.get("WAIT_FOR_SCHEMA_TIMEOUT_S", "900"))


def missing(url: str) -> list[str]:
    wanted = [version for version, _ in available_migrations()]
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    except psycopg.errors.UndefinedTable:
        return wanted
    return [v for v in wanted if v not in done]


def main() -> int:
    url = os.environ["SECANALYST_DATABASE__URL"]
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            pending = missing(url)
        except psycopg.OperationalError as exc:  # database not reachable yet
            pending = [f"(database unreachable: {exc.__class__.__name__})"]
        if not pending:
            print("schema is up to date", flush=True)
            return 0
        if time.monotonic() > deadline:
            print(f"gave up: migrations not applied: {pending}", file=sys.stderr, flush=True)
            return 1  # the pod restarts the init container (back-off), nothing is lost
        print(f"waiting for migrations: {pending}", flush=True)
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
