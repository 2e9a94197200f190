"""Charts as inline SVG, rendered on the server (no script, no CDN). Every label goes
through markupsafe's escape; numbers are formatted by us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
