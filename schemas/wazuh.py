"""The raw Wazuh alert as analysisd, the indexer, logtest or 3.x managers write it.

Lenient on purpose: every unknown field is kept (`extra="allow"`), because the shapes
vary by version and by decoder, and an analyst may need any of them later.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WazuhMitre(_Lenient):
    id: list[str] = Field(default_factory=list)
    tactic: list[str] = Field(default_factory=list)
    technique: list[str] = Field(default_factory=list)


class WazuhRule(_Lenient):
    id: str
    level: int = Field(ge=0, le=16)
    description: str = ""
    groups: list[str] = Field(default_factory=list)
    mitre: WazuhMitre | None = None
    firedtimes: int | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # 3.x and some exports carry the rule id as a number.
        return str(value) if isinstance(value, int) else value

    @field_validator("level", mode="before")
    @classmethod
    def _level_as_int(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value


class WazuhAgent(_Lenient):
    id: str | None = None
    name: str | None = None
    ip: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class RawWazuhAlert(_Lenient):
    rule: WazuhRule
    id: str | None = None
    timestamp: str | None = None
    agent: WazuhAgent | None = None
    manager: dict[str, Any] | None = None
    full_log: str | None = None
    location: str | None = None
    decoder: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    syscheck: dict[str, Any] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value
