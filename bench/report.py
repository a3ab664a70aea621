"""One benchmark figure, its anchor and goal; how a benchmark script prints and hands its figures to `make bench`.

Every script in bench/ measures lorapod and an anchor in the same run and ends with `finish(figures)`: it prints
the figures, writes them as JSON where `--json PATH` was given (bench/suite.py collects them into
docs/benchmarks.md), and gives the exit status: 1 when a goal was missed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """A measured figure against its anchor: ratio and goal as the issue states them."""

    id: str  # the goal's label, e.g. "P2"
    name: str  # what was measured, e.g. "GET /jobs/{id} of a finished job, req/s"
    value: float
    unit: str
    anchor: str  # what the figure is compared with, e.g. "bare FastAPI + sqlite3 route"
    anchor_value: float | None
    ratio: float | None  # value against anchor_value, in the goal's direction
    goal: str  # e.g. "≥ 1.00x" or "≤ 50 ms"
    met: bool
    detail: str = ""


def higher_is_better(
    id: str, name: str, value: float, unit: str, *, anchor: str, anchor_value: float, goal: float, detail: str = ""
) -> Figure:
    """A throughput-like figure: met when value / anchor_value ≥ goal."""
    ratio = value / anchor_value if anchor_value else 0.0
    return Figure(id, name, value, unit, anchor, anchor_value, ratio, f"≥ {goal:.2f}x", ratio >= goal, detail)


def lower_is_better(
    id: str, name: str, value: float, unit: str, *, anchor: str, anchor_value: float, goal: float, detail: str = ""
) -> Figure:
    """A time-like figure: met when value / anchor_value ≤ goal."""
    ratio = value / anchor_value if anchor_value else float("inf")
    return Figure(id, name, value, unit, anchor, anchor_value, ratio, f"≤ {goal:.2f}x", ratio <= goal, detail)


def at_most(
    id: str,
    name: str,
    value: float,
    unit: str,
    *,
    limit: float,
    anchor: str = "",
    anchor_value: float | None = None,
    detail: str = "",
) -> Figure:
    """An absolute ceiling (latency in ms, memory in MB), with an optional anchor shown beside it."""
    ratio = value / anchor_value if anchor_value else None
    return Figure(id, name, value, unit, anchor, anchor_value, ratio, f"≤ {limit:g} {unit}", value <= limit, detail)


def missed(id: str, name: str, detail: str = "") -> Figure:
    """A figure that could not be measured (its script is missing, crashed or wrote nothing): a missed goal."""
    return Figure(id, name, math.nan, "", "", None, None, "", False, detail)


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A script's command line with the two options the suite passes: --json PATH and --quick."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here (for bench/suite.py)")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds: a smoke run, not a figure")
    return parser


def number(value: float) -> str:
    """Four significant digits, thousands grouped, never in exponent form (12,210 rather than 1.221e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_table(figures: list[Figure]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| goal | figure | lorapod | anchor | anchor's figure | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        value = "—" if math.isnan(f.value) else f"{number(f.value)} {f.unit}"
        anchor_value = "" if f.anchor_value is None else f"{number(f.anchor_value)} {f.unit}"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        lines.append(
            f"| {f.id} | {f.name} | {value} | {f.anchor} | {anchor_value} | {ratio} | {f.goal} | "
            f"{'yes' if f.met else '**no**'} |"
        )
    return "\n".join(lines)


def json_path(argv: list[str]) -> Path | None:
    """The path after `--json` on the command line, if any."""
    if "--json" in argv:
        index = argv.index("--json")
        if index + 1 < len(argv):
            return Path(argv[index + 1])
    return None


def finish(figures: list[Figure], argv: list[str] | None = None) -> int:
    """Print the figures, write them as JSON for the suite when asked, and return 1 if a goal was missed."""
    argv = sys.argv if argv is None else argv
    print(format_table(figures))
    for f in figures:
        if f.detail:
            print(f"  {f.id} {f.name}: {f.detail}")
    target = json_path(argv)
    if target is not None:
        target.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    return 0 if all(f.met for f in figures) else 1


def load(path: Path) -> list[Figure]:
    """Figures a script wrote with --json."""
    return [Figure(**item) for item in json.loads(path.read_text())]
