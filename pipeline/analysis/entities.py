"""Entities an analyst pivots on, pulled out of each Wazuh alert family into typed fields,
and the fingerprint of "the same thing happening again".

Wazuh's decoders put the same entity in different places per family (sshd `data.srcip`,
Sysmon `data.win.eventdata.image`, FIM `syscheck.path`, AWS `data.aws.sourceIPAddress`,
...). Each extractor below reads one family; the first value found wins.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.entities import Entities

_CVE = re.compile(r"CVE-\d{4}-\d{4,7}", re.IGNORECASE)
_HASH_PAIR = re.compile(r"(MD5|SHA1|SHA256|IMPHASH)=([0-9A-Fa-f]{32,64})")
# Windows Defender's `path` is a list of resources, not a path:
# "file:_C:\x.exe; webfile:_C:\x.exe|http://host/x.zip|pid:6620,ProcessStart:1340…"
_DEFENDER_RESOURCE = re.compile(r"^(?:file|webfile|containerfile|process|regkey|service"
                                r"|startup|behavior|amsi_script):_")
_URL_SCHEMES = ("http://", "https://", "ftp://")


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _first(obj: Mapping[str, Any], paths: Iterable[str]) -> str | None:
    for path in paths:
        value = _get(obj, path)
        if value not in (None, "", [], {}):
            return str(value).replace("\\\\", "\\")  # Windows eventdata doubles backslashes
    return None


# Where each entity lives, across families (paths relative to the whole alert document;
# `data.*` also covers 3.x top-level fields, which normalize has merged into data).
_PATHS: dict[str, tuple[str, ...]] = {
    "src_ip": ("data.srcip", "data.src_ip", "data.aws.sourceIPAddress",
               "data.win.eventdata.ipAddress", "data.win.eventdata.sourceIp",
               "data.office365.ClientIP", "data.github.actor_ip"),
    "dst_ip": ("data.dstip", "data.dest_ip", "data.win.eventdata.destinationIp"),
    "src_user": ("data.srcuser", "data.user", "data.win.eventdata.user",
                 "data.win.eventdata.subjectUserName", "syscheck.audit.login_user.name",
                 "syscheck.uname_after", "data.audit.auid", "data.github.actor"),
    "dst_user": ("data.dstuser", "data.win.eventdata.targetUserName", "syscheck.audit.user.name",
                 "data.audit.euid"),
    "process": ("data.win.eventdata.image", "syscheck.audit.process.name", "data.audit.exe",
                "data.program_name"),
    "command_line": ("data.win.eventdata.commandLine", "data.command", "data.audit.command",
                     "data.audit.execve.a0"),
    "parent_process": ("data.win.eventdata.parentImage", "syscheck.audit.process.parent_name"),
    "file_path": ("syscheck.path", "data.virustotal.source.file", "data.file",
                  "data.win.eventdata.targetFilename", "data.win.eventdata.path",
                  "data.audit.file.name", "data.filename"),
    "url": ("data.url", "data.virustotal.permalink", "data.http.url"),
    "cve": ("data.vulnerability.cve",),
    "package": ("data.vulnerability.package.name",),
    "cloud_identity": ("data.aws.userIdentity.arn", "data.aws.userIdentity.userName",
                       "data.office365.UserId"),
    "cloud_action": ("data.aws.eventName", "data.office365.Operation", "data.github.action"),
    "container": ("data.docker.Actor.Attributes.name", "data.docker.Actor.Attributes.image",
                  "data.docker.from"),
    "malware": ("data.win.eventdata.threat Name",
                "data.clamav.virus"),
}


def defender_resources(value: str) -> tuple[str | None, str | None]:
    """The first file path and download URL of a Defender resource list; (None, None) when
    the value is not one. The facts name the file and the URL, never the whole list (its
    `|pid:…` tail would read as part of the URL)."""
    if not _DEFENDER_RESOURCE.match(value):
        return None, None
    path = url = None
    for resource in value.split(";"):
        kind, _, rest = resource.strip().partition(":_")
        if kind not in ("file", "webfile", "containerfile") or not rest:
            continue
        fields = rest.split("|")
        path = path or fields[0].strip() or None
        url = url or next((f.strip() for f in fields[1:] if f.strip().startswith(_URL_SCHEMES)),
                          None)
    return path, url


def _is_clamd(document: Mapping[str, Any]) -> bool:
    return "clamd" in (_get(document, "decoder.name"), _get(document, "decoder.parent"))


def extract_entities(document: Mapping[str, Any], full_log: str | None) -> Entities:
    found = {name: _first(document, paths) for name, paths in _PATHS.items()}
    if found["file_path"] and _DEFENDER_RESOURCE.match(found["file_path"]):
        path, url = defender_resources(found["file_path"])
        found["file_path"] = path
        found["url"] = found["url"] or url
    if _is_clamd(document):
        # Wazuh's clamd decoder names the scanned file `url` and the signature `extra_data`
        # ("clamd[5780]: /home/u/eicar.com: Win.Test.EICAR_HDB-1(…) FOUND"): not a URL.
        found["file_path"] = found["file_path"] or _first(document, ("data.url",))
        found["url"] = None
        found["malware"] = found["malware"] or _first(document, ("data.extra_data",))
    hashes = {}
    for algo, path in (("md5", "syscheck.md5_after"), ("sha1", "syscheck.sha1_after"),
                       ("sha256", "syscheck.sha256_after"), ("sha1", "data.virustotal.sha1"),
                       ("md5", "data.virustotal.source.md5")):
        value = _get(document, path)
        if value and algo not in hashes:
            hashes[algo] = str(value)
    win_hashes = _get(document, "data.win.eventdata.hashes")
    if isinstance(win_hashes, str):
        for algo, value in _HASH_PAIR.findall(win_hashes):
            hashes.setdefault(algo.lower(), value)
    if found["cve"] is None:
        match = _CVE.search(" ".join(filter(None, [full_log, found["url"]])))
        found["cve"] = match.group(0).upper() if match else None
    return Entities(**found, hashes=hashes)


# The entities that define an incident, per family: a brute force is one source against
# one host whatever user names it tries; a FIM change is one path; a scan is one source.
_INCIDENT_KEYS: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (frozenset({"authentication_failed", "authentication_failures", "invalid_login",
                "web_scan", "recon", "multiple_drops", "attack", "sql_injection", "web",
                "ids"}), ("src_ip",)),
    (frozenset({"syscheck", "rootcheck"}), ("file_path",)),
    (frozenset({"vulnerability-detector"}), ("cve", "package")),
    (frozenset({"virustotal", "clamd", "windows_defender"}),
     ("file_path", "malware")),
    (frozenset({"sysmon", "audit_command"}), ("process", "parent_process")),
    (frozenset({"aws_cloudtrail", "office365", "github"}),
     ("cloud_identity", "cloud_action", "src_ip")),
    (frozenset({"docker"}), ("container", "cloud_action")),
)
_DEFAULT_KEYS = ("src_ip", "src_user", "dst_user", "file_path", "process", "command_line")


def incident_keys(groups: Iterable[str]) -> tuple[str, ...]:
    group_set = set(groups)
    for family, keys in _INCIDENT_KEYS:
        if family & group_set:
            return keys
    return _DEFAULT_KEYS


def fingerprint(rule_id: str, agent: str | None, groups: Iterable[str],
                entities: Entities) -> str:
    """Rule + agent + the entities that define the incident — never ids, timestamps,
    ports or counters, so a storm of one incident shares one fingerprint."""
    return _digest([rule_id, agent or "", *_key_values(groups, entities)])


def incident_key(rule_id: str, groups: Iterable[str], entities: Entities) -> str:
    """The fingerprint without the agent: the same incident seen on several hosts (one
    scanner against a web farm). Used for near-duplicate reuse, with text similarity."""
    return _digest([rule_id, *_key_values(groups, entities)])


def _key_values(groups: Iterable[str], entities: Entities) -> list[str]:
    values = entities.model_dump()
    return [f"{k}={values.get(k) or ''}" for k in incident_keys(groups)]


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
