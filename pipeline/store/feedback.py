"""An analyst's judgement of a verdict: the verdict updated, a feedback row and an audit
entry, in the caller's transaction (under the policies)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pipeline.store.audit import audit
from pipeline.store.users import User

FEEDBACK_ACTIONS = ("confirm", "severity", "false_positive", "attack", "note")


class FeedbackRejected(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def apply_feedback(conn: AsyncConnection, user: User, verdict_id: int, action: str,
                         *, severity: str | None = None,
                         attack: Sequence[dict[str, Any]] | None = None,
                         note: str | None = None) -> bool:
    """Record one analyst judgement and update the verdict; False when the verdict is not
    visible to this tenant. Writes feedback + audit_log in the caller's transaction."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT severity, attack, analyst_status FROM verdicts "
                          "WHERE id = %s FOR UPDATE", (verdict_id,))
        current = await cur.fetchone()
    if current is None:
        return False
    old: Any
    new: Any
    if action == "confirm":
        old, new = current["analyst_status"], "confirmed"
        await conn.execute("UPDATE verdicts SET analyst_status = 'confirmed' WHERE id = %s",
                           (verdict_id,))
    elif action == "false_positive":
        old, new = current["analyst_status"], "false_positive"
        await conn.execute("UPDATE verdicts SET analyst_status = 'false_positive' "
                           "WHERE id = %s", (verdict_id,))
    elif action == "severity":
        if severity is None:
            raise FeedbackRejected("severity: required")
        old, new = current["severity"], severity
        await conn.execute(
            """UPDATE verdicts SET severity = %s, severity_source = 'analyst',
                   analyst_status = 'corrected' WHERE id = %s""", (severity, verdict_id))
    elif action == "attack":
        if attack is None:
            raise FeedbackRejected("attack: required")
        old, new = current["attack"], list(attack)
        await conn.execute("UPDATE verdicts SET attack = %s, analyst_status = 'corrected' "
                           "WHERE id = %s", (Jsonb(new), verdict_id))
    elif action == "note":
        if not note:
            raise FeedbackRejected("note: required")
        old, new = None, None
    else:
        raise FeedbackRejected(f"action: one of {', '.join(FEEDBACK_ACTIONS)}")
    await conn.execute(
        """INSERT INTO feedback (tenant_id, verdict_id, user_id, user_email, action,
                                 old_value, new_value, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (user.tenant_id, verdict_id, user.id, user.email, action,
         None if old is None else Jsonb(old), None if new is None else Jsonb(new), note))
    await audit(conn, user, f"verdict.{action}", f"verdict:{verdict_id}",
                {"old": old, "new": new, "note": note})
    return True

