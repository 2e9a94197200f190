"""Timing a router from outside, at its sockets: an open-loop client and the simulator's
own clock of the same requests (bench/router_overhead.py).

The client stamps each request just before it writes it and when the first piece of
generated text and the end of the stream come back; the simulator (`--record-timings 1`)
stamps when the request reached it, when it wrote the first token and when it wrote the
last byte. Both use `time.perf_counter()`, on Linux the system-wide monotonic clock, so
the two processes' stamps compare. A request is matched by an id that the client puts in
its last message (`[rid:N]`): routers forward the chat, not the client's headers.

Router overhead of one request = client time − simulator time, to the first token and to
the end: what the router adds to what the caller experiences, with no timer of the
router's own. Machine load (/proc/loadavg) is read before and after each run, and the
CPU that everything *outside* the bench used during it (/proc/stat's busy time minus the
router's, the simulator's and the client's own): the load average after a run counts
the bench's own three busy processes, so it cannot say whether the machine was quiet.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.vllm_sim.harness import percentile

QUIET_LOAD = 1.5  # 1-min load average above which a figure is not a quiet machine's
# Cores that processes other than the bench's may use during a run of a quiet machine.
QUIET_OTHERS_CORES = 0.25
# A chunk carrying generated text (the role-only first chunk of a router has "").
_TEXT = re.compile(rb'"content": ?"[^"]')


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy so far (user, nice, system, irq, softirq, steal)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sent:
    rid: str
    due: float
    sent: float = 0.0
    first: float = 0.0
    ended: float = 0.0
    error: str | None = None


@dataclass
class Run:
    """One open-loop run of one router at one offered rate."""

    router: str
    workload: str
    rate: float
    sent: list[Sent]
    wall_s: float
    router_cpu_s: float
    sim_cpu_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    others_cpu_s: float = 0.0  # CPU used meanwhile by processes outside the bench
    overhead_first: list[float] = field(default_factory=list)  # seconds
    overhead_end: list[float] = field(default_factory=list)
    unmatched: int = 0

    @property
    def done(self) -> list[Sent]:
        return [s for s in self.sent if s.error is None and s.ended]

    @property
    def errors(self) -> int:
        return len(self.sent) - len(self.done)

    @property
    def achieved(self) -> float:
        """Requests finished per second, between the first end and the last (a router
        that backlogs finishes them at the rate it serves, whatever is offered)."""
        ends = sorted(s.ended for s in self.done)
        if len(ends) < 2 or ends[-1] <= ends[0]:
            return 0.0
        return (len(ends) - 1) / (ends[-1] - ends[0])

    @property
    def others_cores(self) -> float:
        return self.others_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def quiet(self) -> bool:
        """Quiet before the run (1-min load) and nothing else busy during it."""
        return (self.load_before[0] <= QUIET_LOAD
                and self.others_cores <= QUIET_OTHERS_CORES)

    def load_text(self) -> str:
        return (f"load {self.load_before[0]:.2f}→{self.load_after[0]:.2f}, others "
                f"{self.others_cores:.2f} cores"
                + (" (quiet)" if self.quiet else " (NOT quiet)"))

    def cpu_ms(self) -> float:
        return self.router_cpu_s / max(len(self.done), 1) * 1000

    def sim_cpu_ms(self) -> float:
        return self.sim_cpu_s / max(len(self.done), 1) * 1000

    def ms(self, q: float, end: bool = False) -> float:
        return percentile(self.overhead_end if end else self.overhead_first, q) * 1000

    def latency_ms(self, q: float, part: slice = slice(None)) -> float:
        return percentile([s.first - s.sent for s in self.done[part]], q) * 1000

    def sustained(self) -> bool:
        """Achieved ≈ offered and no queue growing: the client-observed time to the first
        token in the last third of the run no worse than 2× the first third's (+5 ms)."""
        third = max(len(self.done) // 3, 1)
        return (self.errors == 0 and self.achieved >= 0.95 * self.rate
                and self.latency_ms(50, slice(-third, None))
                <= 2 * self.latency_ms(50, slice(0, third)) + 5)

    def match(self, timings: dict[str, list[float]]) -> None:
        """Overheads from the simulator's stamps of the same requests."""
        for s in self.done:
            stamps = timings.get(s.rid)
            if stamps is None or not stamps[1] or not stamps[2]:
                self.unmatched += 1
                continue
            arrived, first, last = stamps
            self.overhead_first.append((s.first - s.sent) - (first - arrived))
            self.overhead_end.append((s.ended - s.sent) - (last - arrived))


async def one_request(session: aiohttp.ClientSession, url: str, body: bytes,
                      item: Sent) -> None:
    """Send, then read the SSE stream: the first `"content":"…"` of text, the end."""
    item.sent = time.perf_counter()
    try:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            if response.status != 200:
                item.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return
            async for line in response.content:
                if not item.first and _TEXT.search(line):
                    item.first = time.perf_counter()
            item.ended = time.perf_counter()
        if not item.first:
            item.error = "no text in the stream"
    except (aiohttp.ClientError, TimeoutError) as exc:
        item.error = repr(exc)


async def open_loop(url: str, bodies: list[tuple[str, bytes]], rate: float,
                    timeout_s: float = 60.0) -> tuple[list[Sent], float]:
    """Request i is sent at start + i / rate whether or not the earlier ones finished.
    Returns the requests and the wall time of the run."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3.0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        sent = [Sent(rid, start + i / rate) for i, (rid, _) in enumerate(bodies)]
        tasks = []
        for item, (_, body) in zip(sent, bodies, strict=True):
            wait = item.due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one_request(session, url, body, item)))
        await asyncio.gather(*tasks)
        return sent, time.perf_counter() - start


async def fetch_timings(sim_urls: list[str]) -> dict[str, list[float]]:
    """Every simulated replica's stamps (emptied on the replica as they are read)."""
    merged: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as session:
        for url in sim_urls:
            async with session.get(url.removesuffix("/v1") + "/admin/timings") as response:
                merged.update(await response.json())
    return merged
