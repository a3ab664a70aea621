"""`make bench`: every benchmark with its anchor in one run, written to docs/benchmarks.md and README.md's table.

Runs each script in SCRIPTS as a subprocess with `--json <tmp>` (and `--quick` when given), collects the figures
and exits 1 when any goal is missed. A script that is missing, crashes, runs past its time, writes no figures,
exits against its own figures or leaves one of its goals unreported counts as a missed goal, with its own line
in the table; the suite goes on with the next script.

Only a full run (every script, without --quick) rewrites docs/benchmarks.md and README.md's table, so the published
figures always come from one complete run; a run with --only or --quick prints the table and writes the page only
where --docs says. The caption figure (X1) is an extra beyond the issue's P1-P9 with the same natural goal as P9
(a warm job takes at most half the first one), so it counts towards the exit status like the others.

Run: python bench/suite.py [--quick] [--only P2,P3] [--docs PATH]   (make bench runs it without options)
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.report import Figure, finish, format_table, load, missed  # noqa: E402

BENCH = ROOT / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# Generous: the transfer script moves several GiB; a hung script must not hold `make bench` forever.
SCRIPT_TIMEOUT = 30 * 60


@dataclass(frozen=True)
class Script:
    """One benchmark script and the goals it reports."""

    file: str
    goals: tuple[str, ...]


SCRIPTS = (
    Script("bench_cold_start.py", ("P1",)),
    Script("bench_status.py", ("P2",)),
    Script("bench_calls.py", ("P3",)),
    Script("bench_transfer.py", ("P4", "P5")),
    Script("bench_start.py", ("P6",)),
    Script("bench_runner.py", ("P7",)),
    Script("bench_list.py", ("P8",)),
    Script("bench_generation.py", ("P9",)),
    Script("bench_caption.py", ("X1",)),
)


def run_script(script: Script, bench_dir: Path, *, quick: bool, timeout: float = SCRIPT_TIMEOUT) -> list[Figure]:
    """The script's figures, with a missed figure for whatever went wrong (echoing its output as it runs)."""
    path = bench_dir / script.file
    if not path.is_file():
        return [missed(goal, f"{script.file} is missing") for goal in script.goals]
    os.sync()  # the previous script's write-back (P4 and P5 leave gigabytes) must not land in this one's timings
    with tempfile.TemporaryDirectory(prefix="lorapod-suite-") as tmp:
        target = Path(tmp) / "figures.json"
        command = [sys.executable, str(path), "--json", str(target), *(["--quick"] if quick else [])]
        code, last_line, timed_out = _run(command, timeout)
        figures = _read(target)
    if timed_out:
        return [*figures, *(missed(goal, f"{script.file} ran past {timeout:g} s") for goal in script.goals)]
    if not figures:
        return [missed(goal, f"{script.file} exited {code} without figures", last_line) for goal in script.goals]
    reported = {figure.id for figure in figures}
    problems = [missed(goal, f"{script.file} did not report {goal}") for goal in script.goals if goal not in reported]
    if code != (0 if all(figure.met for figure in figures) else 1):
        problems.append(missed(script.goals[0], f"{script.file} exited {code}, against its figures", last_line))
    return figures + problems


def _run(command: list[str], timeout: float) -> tuple[int, str, bool]:
    """Run command, echoing its output; its exit status, its last output line and whether it was stopped."""
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    stopped = threading.Event()

    def stop() -> None:
        # The whole group goes: a benchmark's servers and trainers must not outlive a script stopped for its time.
        stopped.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, stop)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                tail.append(line.strip())
        code = proc.wait()
    finally:
        timer.cancel()
    return code, tail[0] if tail else "", stopped.is_set()


def _read(path: Path) -> list[Figure]:
    """The figures a script wrote, or none when the file is absent or not what report.finish writes."""
    try:
        return load(path)
    except (OSError, ValueError, TypeError):
        return []


def describe(path: Path) -> str:
    """The first paragraph of a script's module docstring, on one line: what it measures and against what."""
    if not path.is_file():
        return "The script is missing."
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()) or "The script has no docstring."


def machine() -> dict[str, str]:
    """The machine a run measured: CPU, cores, memory, OS, Python and wrk."""
    return {
        "CPU": _first_value(Path("/proc/cpuinfo"), "model name") or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "OS": f"{_os_name()}, Linux {platform.release()}" if sys.platform == "linux" else platform.platform(),
        "Python": platform.python_version(),
        "wrk": _wrk_version(),
    }


def _first_value(path: Path, key: str) -> str | None:
    """The value of the first `key: value` (or `key=value`) line of a /proc or /etc file."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, sep, value = line.partition(":" if ":" in line else "=")
            if sep and name.strip() == key:
                return value.strip().strip('"')
    return None


def _memory() -> str:
    total = _first_value(Path("/proc/meminfo"), "MemTotal")
    return f"{int(total.split()[0]) / 1024**2:.1f} GiB" if total else "unknown"


def _os_name() -> str:
    return _first_value(Path("/etc/os-release"), "PRETTY_NAME") or "Linux"


def _wrk_version() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        return "not installed (apt-get install wrk)"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout  # wrk -v exits 1 after printing
    return out.split("Copyright")[0].strip() or "unknown version"


def render_page(
    figures: Sequence[Figure],
    *,
    scripts: Sequence[Script],
    bench_dir: Path,
    host: dict[str, str],
    when: str,
    command: str,
) -> str:
    """docs/benchmarks.md: the machine and run, the table, each figure's details, and what each goal measures."""
    lines = ["# Benchmarks", "", f"Written by `{command}` on {when}; `make bench` runs `python bench/suite.py`.", ""]
    lines += [f"- {name}: {value}" for name, value in host.items()]
    lines += ["", format_table(list(figures)), ""]
    details = [f"- **{f.id}** {f.name}: {f.detail}" for f in figures if f.detail]
    if details:
        lines += ["## Details", "", *details, ""]
    lines += ["## What each goal measures", ""]
    for script in scripts:
        lines += [f"### {', '.join(script.goals)}: `bench/{script.file}`", "", describe(bench_dir / script.file), ""]
    return "\n".join(lines)


def readme_block(figures: Sequence[Figure], *, host: dict[str, str], when: str) -> str:
    """README.md's table: the last full run's figures and where the details are."""
    return (
        f"{format_table(list(figures))}\n\n"
        f"From one `make bench` run on {when} ({host['CPU']}, {host['cores']} cores); "
        "anchors, machine and details in [docs/benchmarks.md](docs/benchmarks.md)."
    )


def replace_block(text: str, block: str) -> str:
    """text with what lies between the bench markers replaced by block; ValueError when the markers are absent."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {START} ... {END} markers")
    return f"{text[: start + len(START)]}\n{block}\n{text[end:]}"


def select(scripts: Sequence[Script], only: str | None) -> list[Script]:
    """The scripts reporting any of the comma-separated goals in only (all of them without only)."""
    if not only:
        return list(scripts)
    wanted = {goal.strip().upper() for goal in only.split(",") if goal.strip()}
    known = {goal for script in scripts for goal in script.goals}
    if unknown := wanted - known:
        raise SystemExit(f"unknown goal(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return [script for script in scripts if wanted & set(script.goals)]


def main(
    argv: Sequence[str] | None = None,
    *,
    scripts: Sequence[Script] = SCRIPTS,
    bench_dir: Path = BENCH,
    docs: Path = DOCS,
    readme: Path = README,
) -> int:
    """Run the scripts, write the page (and README's table after a full run) and return 1 if a goal was missed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (a smoke run)")
    parser.add_argument("--only", metavar="GOALS", help="run only the scripts of these goals, e.g. P2,P3")
    parser.add_argument("--docs", type=Path, metavar="PATH", help="write the page here (any run)")
    args = parser.parse_args(argv)
    selected = select(scripts, args.only)
    figures: list[Figure] = []
    for script in selected:
        print(f"\n=== {', '.join(script.goals)}: bench/{script.file}", flush=True)
        figures += run_script(script, bench_dir, quick=args.quick)
    full = len(selected) == len(scripts) and not args.quick
    host, when = machine(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(
        figures,
        scripts=selected,
        bench_dir=bench_dir,
        host=host,
        when=when,
        command=shlex.join(["python", "bench/suite.py", *argv]),
    )
    target = args.docs or (docs if full else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page)
    if full:
        readme.write_text(replace_block(readme.read_text(), readme_block(figures, host=host, when=when)))
    print(f"\n=== all figures; page {'written to ' + str(target) if target else 'not written (partial run)'}")
    return finish(figures, argv=[])


if __name__ == "__main__":
    raise SystemExit(main())
