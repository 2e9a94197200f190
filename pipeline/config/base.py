"""What every settings section shares: frozen (settings do not change while a process
runs) and strict (an unknown key is an error, not silently ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
