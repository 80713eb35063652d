"""The overview's throughput chart: inline SVG drawn on the server, no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH = 1000
HEIGHT = 150
_AXIS = 16  # room under the bars for the time labels
_TOP = 16  # room above them for the peak's label


@dataclass(frozen=True)
class MinuteBar:
    """One minute of the chart: jobs that finished well and jobs that failed in it."""

    minute: datetime
    succeeded: int
    failed: int


def throughput_svg(bars: Sequence[MinuteBar]) -> Markup:
    """Return an SVG bar chart of `bars`, oldest first: successes stacked under failures.

    The bars are scaled to the busiest minute; each carries a tooltip with its exact counts.
    """
    count = max(len(bars), 1)
    peak = max((bar.succeeded + bar.failed for bar in bars), default=0)
    scale = peak or 1
    slot = WIDTH / count
    plot = HEIGHT - _AXIS - _TOP
    shapes: list[str] = []
    for index, bar in enumerate(bars):
        x = index * slot
        ok_height = plot * bar.succeeded / scale
        failed_height = plot * bar.failed / scale
        title = escape(f"{bar.minute:%H:%M} UTC: {bar.succeeded} succeeded, {bar.failed} failed")
        shapes.append(
            f"<g><title>{title}</title>"
            f'<rect class="ok" x="{x:.1f}" y="{_TOP + plot - ok_height:.1f}" '
            f'width="{max(slot - 1, 1):.1f}" height="{ok_height:.1f}"/>'
            f'<rect class="failed" x="{x:.1f}" '
            f'y="{_TOP + plot - ok_height - failed_height:.1f}" '
            f'width="{max(slot - 1, 1):.1f}" height="{failed_height:.1f}"/></g>'
        )
    if bars:
        first, last = bars[0].minute, bars[-1].minute
        shapes.append(f'<text x="0" y="{HEIGHT - 2}">{first:%H:%M}</text>')
        shapes.append(f'<text x="{WIDTH}" y="{HEIGHT - 2}" text-anchor="end">{last:%H:%M}</text>')
    shapes.append(f'<line x1="0" x2="{WIDTH}" y1="{_TOP + plot + 0.5}" y2="{_TOP + plot + 0.5}"/>')
    shapes.append(f'<text x="0" y="11">peak {peak}/min</text>')
    body = "".join(shapes)
    # Numbers and the escaped titles only: nothing in it can be markup of someone else's.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="jobs finished per minute">{body}</svg>'
    )
