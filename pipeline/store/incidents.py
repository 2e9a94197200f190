"""Incidents (migration 0010): the console's queue of incidents and their workflow.

Runs inside `tenant_scope` (pipeline/store/tenant_scope.py): row-level security shows only
the tenant's incidents, verdicts and accounts. Every change writes audit_log in the same
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from pipeline.store.audit import audit
from pipeline.store.users import User

STATUSES = ("new", "in_progress", "resolved")
RESOLUTIONS = ("true_positive", "false_positive", "benign")
MAX_BULK = 200


class IncidentRejected(ValueError):
    """A workflow change that is not allowed (message says why)."""


@dataclass(frozen=True)
class IncidentFilter:
    status: str | None = None
    assignee_id: int | None = None  # "mine" is the signed-in user's id
    unassigned: bool = False


_COLUMNS = """id, incident_key, rule_id, title, first_seen, last_seen, alert_count, severity,
    agents, status, resolution, resolution_note, assignee_id, assignee_email, updated_at"""


async def incident_queue(conn: AsyncConnection, flt: IncidentFilter,
                         limit: int) -> list[dict[str, Any]]:
    """The tenant's incidents, most recently seen first (incidents_*_idx)."""
    where = ["tenant_id = current_setting('app.tenant_id')"]
    params: dict[str, Any] = {"limit": limit}
    if flt.status:
        where.append("status = %(status)s")
        params["status"] = flt.status
    if flt.assignee_id is not None:
        where.append("assignee_id = %(assignee)s")
        params["assignee"] = flt.assignee_id
    elif flt.unassigned:
        where.append("assignee_id IS NULL")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM incidents WHERE {' AND '.join(where)} "
                          "ORDER BY last_seen DESC, id DESC LIMIT %(limit)s", params)
        return await cur.fetchall()


async def incident_detail(conn: AsyncConnection, incident_id: int,
                          alerts: int = 200) -> dict[str, Any] | None:
    """The incident and its newest verdicts; None when not the tenant's."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM incidents WHERE id = %s", (incident_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            """SELECT v.id, v.alert_id, v.severity, v.status, v.analyst_status, v.summary,
                      v.created_at, v.facts->>'agent' AS agent,
                      v.facts->>'src_ip' AS src_ip, v.facts->>'user' AS "user"
               FROM verdicts v
               WHERE v.tenant_id = current_setting('app.tenant_id')
                 AND v.incident_id = %s
               ORDER BY v.created_at DESC, v.id DESC LIMIT %s""", (incident_id, alerts))
        row["verdicts"] = await cur.fetchall()
    return row


async def tenant_analysts(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Accounts an incident can be assigned to (enabled ones of the tenant)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, email FROM console_users WHERE disabled_at IS NULL "
                          "ORDER BY lower(email)")
        return await cur.fetchall()


async def assign(conn: AsyncConnection, user: User, incident_ids: Sequence[int],
                 assignee_id: int | None) -> int:
    """Assign (None: unassign) incidents; returns how many changed. The assignee must be
    an enabled account of the tenant (the policies hide every other)."""
    email = None
    if assignee_id is not None:
        cur = await conn.execute("SELECT email FROM console_users WHERE id = %s "
                                 "AND disabled_at IS NULL", (assignee_id,))
        found = await cur.fetchone()
        if found is None:
            raise IncidentRejected("assignee: not an account of this tenant")
        email = found[0]
    cur = await conn.execute(
        """UPDATE incidents SET assignee_id = %s, assignee_email = %s, updated_at = now()
           WHERE id = ANY(%s) AND assignee_id IS DISTINCT FROM %s RETURNING id""",
        (assignee_id, email, list(incident_ids), assignee_id))
    changed = [int(r[0]) for r in await cur.fetchall()]
    for incident_id in changed:
        await audit(conn, user, "incident.assign", f"incident:{incident_id}",
                    {"assignee": email})
    return len(changed)


async def set_status(conn: AsyncConnection, user: User, incident_ids: Sequence[int],
                     status: str, resolution: str | None = None,
                     note: str | None = None) -> int:
    """Move incidents to in_progress or resolved (a resolution and a note required);
    returns how many changed."""
    if status not in ("in_progress", "resolved"):
        raise IncidentRejected("status: in_progress or resolved")
    if status == "resolved":
        if resolution not in RESOLUTIONS:
            raise IncidentRejected(f"resolution: one of {', '.join(RESOLUTIONS)}")
        if not (note or "").strip():
            raise IncidentRejected("note: required to resolve")
    else:
        resolution, note = None, None
    cur = await conn.execute(
        """UPDATE incidents SET status = %s, resolution = %s, resolution_note = %s,
               updated_at = now()
           WHERE id = ANY(%s) AND (status, resolution) IS DISTINCT FROM (%s, %s)
           RETURNING id""",
        (status, resolution, note, list(incident_ids), status, resolution))
    changed = [int(r[0]) for r in await cur.fetchall()]
    for incident_id in changed:
        await audit(conn, user, f"incident.{status}", f"incident:{incident_id}",
                    {"resolution": resolution, "note": note})
    return len(changed)
