"""Typed entities of an alert: what an analyst pivots on."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Entities(BaseModel):
    src_ip: str | None = None
    dst_ip: str | None = None
    src_user: str | None = None
    dst_user: str | None = None
    process: str | None = None
    command_line: str | None = None
    parent_process: str | None = None
    file_path: str | None = None
    hashes: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    cve: str | None = None
    package: str | None = None
    cloud_identity: str | None = None
    cloud_action: str | None = None
    container: str | None = None
    malware: str | None = None
