"""Where a pool's replicas are: a `Discovery` source answers the current endpoint list.

- `StaticDiscovery`: the configured list (today's behaviour); `set()` changes it at run time
  (tests, or an operator tool).
- `DnsDiscovery`: the A/AAAA records of a Kubernetes headless Service, one endpoint per IP:
  `http://vllm-default.secanalyst-llm.svc:8000/v1` → `http://10.0.3.7:8000/v1`, ... A headless
  Service lists only ready pods, so an autoscaled replica appears once Kubernetes sees it
  ready and a terminating one disappears as soon as it starts draining.

A failed lookup raises `DiscoveryError`; the refresher (membership.py) then keeps the
replicas it has — a DNS blip must not take every replica away.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

# (host, port) → the IP addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class DiscoveryError(Exception):
    """The source could not say where the replicas are (not: there are none)."""


class Discovery(Protocol):
    async def endpoints(self) -> list[str]:
        """The pool's endpoints now (OpenAI-compatible base URLs, ".../v1")."""
        ...


class StaticDiscovery:
    def __init__(self, endpoints: Sequence[str]) -> None:
        self._endpoints = list(dict.fromkeys(endpoints))

    def set(self, endpoints: Sequence[str]) -> None:
        self._endpoints = list(dict.fromkeys(endpoints))

    async def endpoints(self) -> list[str]:
        return list(self._endpoints)


async def resolve_with_loop(host: str, port: int) -> list[str]:
    """The event loop's resolver (getaddrinfo in a thread: never blocks the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class DnsDiscovery:
    """One endpoint per address of the Service URL's host, same scheme, port and path."""

    def __init__(self, service_url: str, *, resolve: Resolver = resolve_with_loop) -> None:
        parts = urlsplit(service_url)
        if not parts.hostname:
            raise ValueError(f"DNS discovery needs a URL with a host name, got {service_url!r}")
        self._parts = parts
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._resolve = resolve

    async def endpoints(self) -> list[str]:
        try:
            addresses = await self._resolve(self._host, self._port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise DiscoveryError(f"cannot resolve {self._host!r}: {exc}") from exc
        return [self._url_for(ip) for ip in sorted(set(addresses), key=_address_order)]

    def _url_for(self, ip: str) -> str:
        host = f"[{ip}]" if ":" in ip else ip
        netloc = f"{host}:{self._port}"
        p = self._parts
        return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def _address_order(ip: str) -> tuple[int, int | str]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (2, ip)
    return (address.version, int(address))


def build_discovery(kind: str, endpoints: Sequence[str], *,
                    resolve: Resolver = resolve_with_loop) -> Discovery:
    """The source a pool's config names (`LLMPool.discovery`)."""
    if kind == "static":
        return StaticDiscovery(endpoints)
    if kind == "dns":
        if len(endpoints) != 1:
            raise ValueError("DNS discovery takes exactly one endpoint: the headless "
                             f"Service's URL, got {len(endpoints)}")
        return DnsDiscovery(endpoints[0], resolve=resolve)
    raise ValueError(f"unknown discovery {kind!r} (static or dns)")
