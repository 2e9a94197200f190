"""How fast is the review console's queue with 1,000,000 verdicts?

Starts an embedded PostgreSQL of its own on a free port, migrates it, generates the
verdicts with generate_series (indexes dropped during the load and rebuilt after, as a
bulk load would), then times the queue through the whole app in process (session lookup,
SET ROLE + row-level security, query, Jinja rendering): the first page, a deep keyset
page, filtered pages, entity pivots; the incident queue and one incident; a verdict's
page with its related alerts (same agent / source / user within ±1 h). Goal: under
200 ms each. The load runs the incident triggers of migration 0010 row by row.

    .venv/bin/python -m bench.console_queue [--verdicts 1000000] [--runs 15]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bench.common import machine, stamp
from bench.record import record
from pipeline.cli.console import add_user
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from pipeline.store.queue import encode_cursor
from pipeline.web.console.app import create_console_app
from tests.servers import free_port

PASSWORD = "bench password 12345"
TENANT = "bench"

_GENERATE = """
INSERT INTO verdicts (tenant_id, alert_id, rule_id, rule_level, severity, severity_source,
    summary, attack, status, model_name, prompt_version, input_tokens, output_tokens,
    latency_ms, created_at, analyst_status, incident_key, facts)
SELECT CASE WHEN i %% 10 = 0 THEN 'other' ELSE %(tenant)s END,
       'a-' || i,
       (ARRAY['5710','5712','550','554','31100','31101','60122','92052'])[1 + i %% 8],
       3 + i %% 12,
       (ARRAY['info','low','medium','high','critical'])[1 + (i / 7) %% 5],
       'rule level',
       (ARRAY['sshd brute force','web shell upload','privilege escalation via sudo',
              'suspicious powershell','file integrity change','port scan'])[1 + i %% 6]
           || ' from 10.' || (i %% 250) || '.' || (i / 250 %% 250) || ' on host-'
           || (i %% 997) || ' user u' || (i %% 5003),
       CASE WHEN i %% 3 = 0
            THEN '[{"id":"T1110","name":"Brute Force","tactics":["Credential Access"],'
                 '"source":"wazuh"}]'::jsonb
            WHEN i %% 3 = 1
            THEN '[{"id":"T1059.001","name":"PowerShell","tactics":["Execution"],'
                 '"source":"model"}]'::jsonb
            ELSE '[]'::jsonb END,
       'explained', 'smollm2', 'v3', 400, 80, 900,
       now() - make_interval(secs => (%(n)s - i) * 2.5),
       (ARRAY['new','new','new','confirmed','corrected','false_positive'])[1 + (i / 3) %% 6],
       'k-' || (i %% 20000),  -- 20,000 incidents of ~50 verdicts (issue 13)
       jsonb_build_object('agent', 'host-' || (i %% 997),
                          'src_ip', '10.' || (i %% 250) || '.' || (i / 250 %% 250),
                          'user', 'u' || (i %% 5003), 'rule_description', 'bench rule',
                          'sentence', 'bench alert ' || i)
FROM generate_series(1, %(n)s) AS i
"""


def timed(client: TestClient, url: str, runs: int) -> tuple[float, float, int]:
    client.get(url)  # warm
    times = []
    rows = 0
    for _ in range(runs):
        start = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text[:300]
        rows = answer.text.count("<tr data-id=")
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="secanalyst-bench-console-"))
    server = EmbeddedPostgres(state_dir=state, port=free_port())
    server.start()
    try:
        url = server.address()
        migrate(url)
        settings = Settings(database=DatabaseSettings(url=SecretStr(url)), state_dir=state)
        add_user(settings, TENANT, "analyst@bench.test", "analyst", PASSWORD)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '256MB'")
            indexes = conn.execute(
                """SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'verdicts'
                   AND indexname NOT LIKE '%%pkey' AND indexname NOT LIKE '%%_key'"""
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
            start = time.perf_counter()
            conn.execute(_GENERATE, {"tenant": TENANT, "n": args.verdicts})
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            for _, definition in indexes:
                conn.execute(definition)
            conn.execute("ANALYZE verdicts")
            index_s = time.perf_counter() - start
            deep = conn.execute(
                "SELECT created_at, id FROM verdicts WHERE tenant_id = %s "
                "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1", (TENANT, args.verdicts // 2)
            ).fetchone()
            assert deep is not None
            middle = conn.execute(
                "SELECT id FROM verdicts WHERE tenant_id = %s "
                "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
                (TENANT, args.verdicts // 3)).fetchone()
            incident = conn.execute(
                "SELECT id FROM incidents WHERE tenant_id = %s "
                "ORDER BY last_seen DESC, id DESC OFFSET 100 LIMIT 1", (TENANT,)).fetchone()
            assert middle is not None and incident is not None
        print(f"{machine()} — {stamp()}")
        print(f"{args.verdicts:,} verdicts generated in {load_s:.1f} s, "
              f"{len(indexes)} indexes rebuilt in {index_s:.1f} s")
        cursor = encode_cursor(deep[0], deep[1])
        cases = {
            "first page": "/",
            f"deep keyset page (row {args.verdicts // 2:,})": f"/?cursor={cursor}",
            "severity=critical": "/?severity=critical",
            "severity=high, deep page": f"/?severity=high&cursor={cursor}",
            "status=false_positive + rule=554": "/?status=false_positive&rule=554",
            "technique=T1110": "/?technique=T1110",
            "technique=T1059.001, deep page": f"/?technique=T1059.001&cursor={cursor}",
            "technique=T1566 (no match)": "/?technique=T1566",
            "full-text 'powershell host-42' (rare)": "/?q=powershell+host-42",
            "full-text 'sshd' (common)": "/?q=sshd",
            "full-text 'sshd' + severity=low": "/?q=sshd&severity=low",
            "last hour": "/?since=" + time.strftime("%Y-%m-%dT%H:%M",
                                                    time.gmtime(time.time() - 3600)),
        }
        cases.update({
            "pivot src_ip=10.42.7": "/?src_ip=10.42.7",
            "pivot user=u42": "/?user=u42",
            "incident queue": "/incidents",
            "incident queue, status=new": "/incidents?status=new",
            "incident queue, mine": "/incidents?assignee=me",
            "one incident (its 200 newest alerts)": f"/incidents/{incident[0]}",
            "verdict page with related alerts": f"/verdicts/{middle[0]}",
        })
        p95s: dict[str, float] = {}
        with TestClient(create_console_app(settings), base_url="https://testserver") as c:
            form = c.get("/login").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token is not None
            c.post("/login", data={"email": "analyst@bench.test", "password": PASSWORD,
                                   "csrf_token": token.group(1)})
            print(f"{'queue page':40} {'median ms':>10} {'p95 ms':>8} {'rows':>5}")
            for label, path in cases.items():
                median, p95, rows = timed(c, path, args.runs)
                p95s[label] = p95
                print(f"{label:40} {median:10.1f} {p95:8.1f} {rows:5d}")
        if args.verdicts >= 1_000_000:
            command = ".venv/bin/python -m bench.console_queue"
            record("console.incident_queue_p95_ms", round(max(
                p95s["incident queue"], p95s["incident queue, status=new"],
                p95s["incident queue, mine"]), 1),
                goal="< 200 ms at 1,000,000 verdicts (issue 13)", command=command)
            record("console.related_alerts_p95_ms",
                   round(p95s["verdict page with related alerts"], 1),
                   goal="< 200 ms at 1,000,000 verdicts, whole verdict page (issue 13)",
                   command=command)
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
