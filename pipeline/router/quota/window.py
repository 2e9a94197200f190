"""The sliding window behind both quota stores (the Redis Lua script mirrors it).

A window of `span` buckets of `width` seconds each. Bucket `b` holds the tokens charged
while `floor(now / width) == b`. A reservation at bucket `c` is admitted when the tokens
in buckets `c - span + 1 .. c` plus the request fit the limit.

Why `span = window / width + 1` (61 one-second buckets for the minute, 1,441 one-minute
buckets for the day): any real-time interval of 60 s overlaps at most 61 consecutive
one-second buckets, and the last admission inside it saw all of them, so **no 60-second
interval ever holds more than the limit** (a plain 60-bucket window would let a burst at
the end of second 0 and another at the start of second 60 through, i.e. twice the limit).
The price is a window up to one bucket longer than nominal (≤ 1.7 % for the minute).

A token bucket with capacity C refilled at tpm/60 would let C + tpm through in a minute;
the sliding window does not, and it keeps what a refund needs: the bucket a reservation
was charged to, so unused tokens go back to the moment they were taken.

`retry_after` walks the buckets from the oldest: bucket `b` leaves the window at
`(b + span) * width`; the wait is until enough of them have left for the request to fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WindowShape:
    width_s: int
    span: int

    def bucket(self, now: float) -> int:
        return math.floor(now / self.width_s)

    @property
    def length_s(self) -> int:
        return self.width_s * self.span


MINUTE = WindowShape(width_s=1, span=61)
DAY = WindowShape(width_s=60, span=1441)


@dataclass
class SlidingWindow:
    shape: WindowShape
    buckets: dict[int, int] = field(default_factory=dict)  # in increasing bucket order
    total: int = 0

    def prune(self, now: float) -> None:
        first_live = self.shape.bucket(now) - self.shape.span + 1
        while self.buckets:
            oldest = next(iter(self.buckets))
            if oldest >= first_live:
                break
            self.total -= self.buckets.pop(oldest)

    def wait_for(self, tokens: int, limit: int, now: float) -> float:
        """Seconds until `tokens` more fit under `limit` (0 when they fit now). Call after
        prune. A request larger than the limit never fits: the whole window is returned."""
        if tokens > limit:
            return float(self.shape.length_s)
        need = self.total + tokens - limit
        if need <= 0:
            return 0.0
        freed = 0
        for bucket, charged in self.buckets.items():
            freed += charged
            if freed >= need:
                return max((bucket + self.shape.span) * self.shape.width_s - now, 0.0)
        return float(self.shape.length_s)  # unreachable while total == sum(buckets)

    def charge(self, tokens: int, now: float) -> int:
        bucket = self.shape.bucket(now)
        self.buckets[bucket] = self.buckets.get(bucket, 0) + tokens
        self.total += tokens
        return bucket

    def refund(self, bucket: int, tokens: int) -> None:
        """Give `tokens` back to `bucket` if it is still in the window."""
        charged = self.buckets.get(bucket)
        if charged is None:
            return
        back = min(tokens, charged)
        self.buckets[bucket] = charged - back
        self.total -= back
