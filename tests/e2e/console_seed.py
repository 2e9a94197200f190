"""A PostgreSQL of the console tests' own (embedded, free port) with two tenants, their
users and verdicts; shared by tests/integration/test_console.py and the browser tests."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from pydantic import SecretStr

from pipeline.cli.console import add_user
from pipeline.config import ConsoleSettings, DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from tests.servers import free_port

PASSWORD = "correct horse battery staple"
CHUNK = "ssh-brute-force#containment-and-response"  # a real runbook's passage
WAZUH_URL = "https://wazuh.example/app/threat-hunting#/overview/?_q=id:{alert_id}"
XSS_SUMMARY = ('<script>alert("xss")</script> <b>bold</b> '
               '[click me](javascript:alert(1)) <img src=x onerror=alert(2)>')


@dataclass(frozen=True)
class Seeded:
    url: str
    settings: Settings
    ids: dict[str, list[int]]  # tenant → verdict ids, newest first
    xss_id: int


@contextmanager
def console_database(*, page_size: int = 3) -> Iterator[Seeded]:
    # Not under pytest's basetemp: a concurrent pytest session resets that folder to
    # 0700, and the postgres system user must be able to traverse to its data.
    state_dir = Path(tempfile.mkdtemp(prefix="secanalyst-console-pg-"))
    server = EmbeddedPostgres(state_dir=state_dir, port=free_port())
    server.start()
    try:
        url = server.address()
        migrate(url)
        settings = Settings(database=DatabaseSettings(url=SecretStr(url)),
                            state_dir=state_dir,
                            console=ConsoleSettings(page_size=page_size, poll_interval_s=1.0,
                                                    platform_tenant="platform",
                                                    wazuh_dashboard_url=WAZUH_URL))
        for tenant in ("acme", "globex", "umbrella"):  # umbrella: the incident tests'
            add_user(settings, tenant, f"analyst@{tenant}.test", "analyst", PASSWORD)
            add_user(settings, tenant, f"admin@{tenant}.test", "admin", PASSWORD)
        add_user(settings, "platform", "admin@platform.test", "admin", PASSWORD)
        ids, xss_id = seed_verdicts(url)
        yield Seeded(url, settings, ids, xss_id)
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def insert_verdict(conn: psycopg.Connection, tenant: str, n: int, *, severity: str,
                   rule: str, agent: str, summary: str, created: datetime,
                   attack: list[dict[str, object]], alert: dict[str, object],
                   facts: dict[str, object] | None = None,
                   original: dict[str, object] | None = None) -> int:
    alert_id = f"{tenant}-{n}"
    conn.execute(
        """INSERT INTO alerts (tenant_id, alert_id, fingerprint, rule_id, rule_level,
                               agent_name, alert_ts, normalized, raw)
           VALUES (%s, %s, %s, %s, 10, %s, %s, %s, %s)""",
        (tenant, alert_id, f"fp-{n}", rule, agent, created, json.dumps(alert),
         json.dumps(original if original is not None else alert)))
    row = conn.execute(
        """INSERT INTO verdicts (tenant_id, alert_id, rule_id, rule_level, severity,
               severity_source, summary, attack, next_steps, cited_chunks, status,
               model_name, prompt_version, input_tokens, output_tokens, latency_ms,
               created_at, seen_count, retrieval_ids, facts)
           VALUES (%s, %s, %s, 10, %s, 'rule level 10', %s, %s, %s, %s, 'explained',
                   'smollm2', 'v3', 400, 80, 900, %s, %s, %s, %s) RETURNING id""",
        (tenant, alert_id, rule, severity, summary, json.dumps(attack),
         json.dumps(["Isolate the host", "Reset the password"]), [CHUNK], created,
         1 + n % 3, [CHUNK] + ([f"verdict:{tenant}-{n - 1}"] if n else []),
         None if facts is None else json.dumps(facts))
    ).fetchone()
    assert row is not None
    for status in (200, 200, 429):
        conn.execute(
            """INSERT INTO llm_usage_events (id, tenant_id, model_name, alert_id,
                   input_tokens, output_tokens, total_tokens, ttft_ms, status_code,
                   error_kind, created_at)
               VALUES (%s, %s, 'smollm2', %s, 400, 80, 480, %s, %s, %s, %s)""",
            (uuid.uuid4(), tenant, alert_id, 100 + 10 * n, status,
             None if status == 200 else "quota_exceeded", created))
    return int(row[0])


def seed_facts(tenant: str, n: int) -> dict[str, object]:
    """Even alerts come from 10.0.0.2, odd ones from 10.0.0.1 (the pivot tests count
    them); users alternate root / admin."""
    return {"sentence": f"sshd: authentication failed for {tenant} {n}", "rule_id": "5710",
            "rule_description": "sshd: Attempt to login using a non-existent user",
            "level": 10, "band": "high", "agent": "web-01" if n < 4 else "db-01",
            "src_ip": f"10.0.0.{2 - n % 2}", "dst_ip": "10.1.0.5", "src_port": "52814",
            "dst_port": "22", "user": "root" if n % 2 == 0 else "admin", "count": 1 + n % 3,
            "attack_ids": ["T1110"]}


BRUTE: list[dict[str, object]] = [{"id": "T1110", "name": "Brute Force",
                                   "tactics": ["Credential Access"], "source": "wazuh"}]
SEVERITY_CYCLE = ("high", "low", "medium", "critical", "info")


def seed_verdicts(url: str) -> tuple[dict[str, list[int]], int]:
    now = datetime.now(UTC)
    ids: dict[str, list[int]] = {"acme": [], "globex": []}
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO runbook_chunks (chunk_id, runbook, title, heading, content,
                   content_sha256, embedding)
               VALUES (%s, 'ssh-brute-force', 'SSH brute force', 'Containment and response',
                       'Block the source address <at the firewall>.', 'x',
                       array_fill(0.1::real, ARRAY[384])::vector)""", (CHUNK,))
        for tenant in ("acme", "globex"):
            for n in range(7):
                ids[tenant].append(insert_verdict(
                    conn, tenant, n, severity=SEVERITY_CYCLE[n % 5],
                    rule="5710" if n % 2 == 0 else "550",
                    agent="web-01" if n < 4 else "db-01",
                    summary=f"{tenant} sshd brute force attempt number {n} from 10.0.0.{n}",
                    created=now - timedelta(minutes=10 * (10 - n)),
                    attack=BRUTE if n % 2 == 0 else [],
                    alert={"rule": {"id": "5710", "description": f"sshd {tenant} {n}"}},
                    facts=seed_facts(tenant, n)))
        xss_id = insert_verdict(
            conn, "acme", 99, severity="medium", rule="31100", agent="web-02",
            summary=XSS_SUMMARY, created=now - timedelta(minutes=5), attack=[],
            alert={"data": {"url": "/<script>alert(1)</script>",
                            "comment": "[phish](http://evil.test) <iframe src=x>"}})
        ids["acme"].append(xss_id)
    for tenant in ids:
        ids[tenant].reverse()
    return ids, xss_id


def insert_storm(conn: psycopg.Connection, tenant: str, incident_key: str, count: int, *,
                 agents: tuple[str, ...] = ("web-01", "web-02", "web-03"),
                 start: datetime | None = None) -> list[int]:
    """`count` verdicts of one incident (an SSH storm from one address over a few
    agents, one second apart, the last one critical); their ids, oldest first."""
    start = start or datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for n in range(count):
        agent = agents[n % len(agents)]
        alert_id = f"{tenant}-storm-{incident_key}-{n}"
        facts = {"sentence": f"sshd: failed login {n}", "rule_id": "5712",
                 "rule_description": "sshd: brute force trying to get access to the system",
                 "level": 10, "band": "high", "agent": agent, "src_ip": "198.51.100.7",
                 "user": "root", "count": 1, "attack_ids": ["T1110"]}
        rows.append((tenant, alert_id, "5712", "critical" if n == count - 1 else "high",
                     f"storm alert {n} on {agent}", json.dumps(BRUTE), incident_key,
                     f"{incident_key}-{agent}", start + timedelta(seconds=n),
                     json.dumps(facts)))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO verdicts (tenant_id, alert_id, rule_id, rule_level, severity,
                   severity_source, summary, attack, next_steps, status, model_name,
                   prompt_version, input_tokens, output_tokens, latency_ms, incident_key,
                   fingerprint, created_at, facts)
               VALUES (%s, %s, %s, 10, %s, 'rule level 10', %s, %s, '[]', 'reused',
                       'smollm2', 'v3', 0, 0, 0, %s, %s, %s, %s) RETURNING id""",
            rows, returning=True)
        ids = []
        while True:
            found = cur.fetchone()
            if found is not None:
                ids.append(int(found[0]))
            if not cur.nextset():
                break
    return ids
