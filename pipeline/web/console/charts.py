"""Charts as inline SVG, rendered on the server (no script, no CDN). Every label goes
through markupsafe's escape; numbers are formatted by us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP, RIGHT = 64, 40, 16, 16
PALETTE = ("#2f6fde", "#e0672b", "#2a9d63", "#9b51e0", "#c9a227", "#d6336c")


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    if value and value < 1:
        return f"{value:.4f}"
    return f"{value:.0f}"


def _frame(title: str, body: list[str], top: float) -> Markup:
    plot_h = HEIGHT - BOTTOM - TOP
    axis = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" '
            'stroke="#888"/>',
            f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
            f'y2="{HEIGHT - BOTTOM}" stroke="#888"/>',
            f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">'
            f'{escape(_fmt(top))}</text>',
            f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>']
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(axis) + "".join(body) + "</svg>")


def bar_chart(title: str, items: Sequence[tuple[str, float]]) -> Markup:
    """One bar per (label, value)."""
    top = max((v for _, v in items), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(items), 1)
    body: list[str] = []
    for i, (label, value) in enumerate(items):
        h = plot_h * value / top
        x = LEFT + i * slot + slot * 0.15
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
            f'<title>{escape(label)}: {escape(_fmt(value))}</title></rect>')
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                    f'text-anchor="middle" font-size="10">{escape(label[:14])}</text>')
    return _frame(title, body, top)


def line_chart(title: str, labels: Sequence[str],
               series: Mapping[str, Sequence[float | None]]) -> Markup:
    """One polyline per series over shared x labels; None values are gaps."""
    values = [v for s in series.values() for v in s if v is not None]
    top = max(values, default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(labels) - 1, 1)
    body: list[str] = []
    for n, (name, points) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        coords = [f"{LEFT + i * step:.1f},{TOP + plot_h - plot_h * v / top:.1f}"
                  for i, v in enumerate(points) if v is not None]
        if coords:
            body.append(f'<polyline class="series" fill="none" stroke="{colour}" '
                        f'stroke-width="2" points="{" ".join(coords)}"/>')
        for xy in coords:  # visible even when a series has a single day
            x, y = xy.split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        body.append(f'<text x="{WIDTH - RIGHT}" y="{TOP + 12 + 14 * n}" text-anchor="end" '
                    f'font-size="11" fill="{colour}">{escape(name)}</text>')
    for i, label in enumerate(labels):
        if len(labels) <= 10 or i % max(len(labels) // 8, 1) == 0:
            body.append(f'<text x="{LEFT + i * step:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                        f'text-anchor="middle" font-size="10">{escape(label)}</text>')
    return _frame(title, body, top)


SEVERITY_COLOURS = {"critical": "#b42318", "high": "#9a3b06", "medium": "#7a5200",
                    "low": "#2f6fde", "info": "#6b7280"}


@dataclass(frozen=True)
class TimelineEvent:
    when: datetime
    lane: str
    label: str
    severity: str
    href: str


def timeline(title: str, centre: datetime, window_s: float, lanes: Sequence[str],
             events: Sequence[TimelineEvent]) -> Markup:
    """Events on one time axis (centre ± window_s), one row per lane; each event a link.
    The centre (the verdict being looked at) is a dashed line."""
    lane_h, left, width = 34, 150, WIDTH + 260
    height = TOP + lane_h * len(lanes) + BOTTOM
    plot_w = width - left - RIGHT

    def x_of(when: datetime) -> float:
        offset = (when - centre).total_seconds()
        return left + plot_w * (offset + window_s) / (2 * window_s)

    body = [f'<line x1="{x_of(centre):.1f}" y1="{TOP}" x2="{x_of(centre):.1f}" '
            f'y2="{height - BOTTOM}" stroke="#1d2330" stroke-dasharray="4 3"/>']
    for n, lane in enumerate(lanes):
        y = TOP + lane_h * n + lane_h / 2
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" '
                    'stroke="#e3e6eb"/>')
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" '
                    f'font-size="11">{escape(lane[:24])}</text>')
    row = {lane: n for n, lane in enumerate(lanes)}
    for event in events:
        if event.lane not in row:
            continue
        y = TOP + lane_h * row[event.lane] + lane_h / 2
        colour = SEVERITY_COLOURS.get(event.severity, PALETTE[0])
        body.append(
            f'<a class="event" href="{escape(event.href)}" '
            f'aria-label="{escape(event.lane)}: {escape(event.label)}">'
            f'<circle cx="{x_of(event.when):.1f}" cy="{y:.1f}" r="6" fill="{colour}" '
            'fill-opacity="0.85"/>'
            f'<title>{escape(event.when.strftime("%H:%M:%S"))} {escape(event.label)}'
            '</title></a>')
    for tick in range(5):  # -w, -w/2, 0, +w/2, +w
        offset = window_s * (tick - 2) / 2
        label = "this alert" if tick == 2 else f"{offset / 60:+.0f} min"
        anchor = ("start", "middle", "middle", "middle", "end")[tick]  # ends stay inside
        body.append(f'<text x="{left + plot_w * tick / 4:.1f}" y="{height - BOTTOM + 16}" '
                    f'text-anchor="{anchor}" font-size="10">{escape(label)}</text>')
    return Markup(
        # a group, not an image: it holds links (axe: nested-interactive)
        f'<svg class="chart timeline" role="group" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body) + "</svg>")
