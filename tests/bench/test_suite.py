"""`make bench`'s suite: figures collected from each script, failures counted as missed goals, the page and README."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import suite
from bench.report import Figure, at_most, lower_is_better
from bench.suite import END, START, Script

README = f"# lorapod\n\nIntro.\n\n## Benchmarks\n\n{START}\nold table\n{END}\n\n## Next\n\nKept.\n"


def fast(goal: str = "P8", value: float = 9.0) -> Figure:
    return at_most(goal, "first page", value, "ms", limit=20, anchor="sqlite3", anchor_value=0.3, detail="p50 of 200")


def slow(goal: str = "P7") -> Figure:
    return lower_is_better(goal, "runner", 1.2, "s", anchor="alone", anchor_value=1.0, goal=1.05)


def write_script(
    folder: Path, name: str, figures: list[Figure] | None, *, code: int = 0, body: str = "", doc: str = "Measures."
) -> None:
    """A stand-in benchmark: notes its arguments, writes figures (None: no JSON) and exits with code."""
    payload = None if figures is None else json.dumps([asdict(f) for f in figures])
    (folder / name).write_text(
        f'"""{doc}\n\nRun: python {name}\n"""\n'
        "import sys\nfrom pathlib import Path\n"
        "args = sys.argv[1:]\n"
        f"Path(__file__).with_suffix('.args').write_text(' '.join(args))\n"
        f"{body}\n"
        f"if {payload!r} is not None:\n"
        f"    Path(args[args.index('--json') + 1]).write_text({payload!r})\n"
        f"raise SystemExit({code})\n"
    )


def test_a_scripts_figures_come_back_as_written(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_list.py", [fast(), fast(value=11.0)])
    assert suite.run_script(Script("bench_list.py", ("P8",)), tmp_path, quick=False) == [fast(), fast(value=11.0)]
    assert (tmp_path / "bench_list.args").read_text().startswith("--json ")


def test_quick_is_passed_through(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_list.py", [fast()])
    suite.run_script(Script("bench_list.py", ("P8",)), tmp_path, quick=True)
    assert (tmp_path / "bench_list.args").read_text().endswith(" --quick")


def test_a_missing_script_misses_each_of_its_goals(tmp_path: Path) -> None:
    figures = suite.run_script(Script("bench_transfer.py", ("P4", "P5")), tmp_path, quick=False)
    assert [(f.id, f.name, f.met) for f in figures] == [
        ("P4", "bench_transfer.py is missing", False),
        ("P5", "bench_transfer.py is missing", False),
    ]


def test_a_crash_is_a_missed_goal_with_the_error_as_detail(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_status.py", None, body="raise RuntimeError('server exited with 3')")
    [figure] = suite.run_script(Script("bench_status.py", ("P2",)), tmp_path, quick=False)
    assert (figure.id, figure.met) == ("P2", False)
    assert figure.name == "bench_status.py exited 1 without figures"
    assert figure.detail == "RuntimeError: server exited with 3"


def test_a_clean_exit_without_figures_is_a_missed_goal(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_calls.py", None, code=0)
    [figure] = suite.run_script(Script("bench_calls.py", ("P3",)), tmp_path, quick=False)
    assert not figure.met and figure.name == "bench_calls.py exited 0 without figures"


def test_an_unreported_goal_and_an_exit_against_the_figures_are_missed(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_transfer.py", [fast("P4")], code=2)
    figures = suite.run_script(Script("bench_transfer.py", ("P4", "P5")), tmp_path, quick=False)
    assert [(f.id, f.name, f.met) for f in figures] == [
        ("P4", "first page", True),
        ("P5", "bench_transfer.py did not report P5", False),
        ("P4", "bench_transfer.py exited 2, against its figures", False),
    ]


def test_a_missed_goal_with_exit_1_is_just_that_figure(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_runner.py", [slow()], code=1)
    assert suite.run_script(Script("bench_runner.py", ("P7",)), tmp_path, quick=False) == [slow()]


def test_a_script_past_its_time_is_stopped_and_missed(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_cold_start.py", [fast("P1")], body="import time; time.sleep(60)")
    [figure] = suite.run_script(Script("bench_cold_start.py", ("P1",)), tmp_path, quick=False, timeout=1)
    assert (figure.id, figure.name, figure.met) == ("P1", "bench_cold_start.py ran past 1 s", False)


def test_readme_block_is_replaced_in_place_and_again() -> None:
    once = suite.replace_block(README, "| new | table |")
    assert once == README.replace("old table", "| new | table |")
    assert suite.replace_block(once, "| newer |") == README.replace("old table", "| newer |")


def test_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        suite.replace_block("# lorapod\n", "| table |")


def test_page_has_machine_run_table_details_and_each_goals_description(tmp_path: Path) -> None:
    write_script(tmp_path, "bench_list.py", [fast()], doc="P8: listing jobs,\nfirst and deep pages.")
    scripts = [Script("bench_list.py", ("P8",)), Script("bench_transfer.py", ("P4", "P5"))]
    host = {"CPU": "Xeon", "cores": "2", "memory": "7.7 GiB", "OS": "Debian", "Python": "3.11.2", "wrk": "wrk 4.1.0"}
    page = suite.render_page(
        [fast()], scripts=scripts, bench_dir=tmp_path, host=host, when="2026-12-02 10:00 UTC", command="make bench"
    )
    assert "Written by `make bench` on 2026-12-02 10:00 UTC" in page
    assert "- CPU: Xeon\n- cores: 2\n- memory: 7.7 GiB\n- OS: Debian\n- Python: 3.11.2\n- wrk: wrk 4.1.0" in page
    assert "| P8 | first page | 9 ms | sqlite3 | 0.3 ms | 30.00x | ≤ 20 ms | yes |" in page
    assert "- **P8** first page: p50 of 200" in page
    assert "### P8: `bench/bench_list.py`\n\nP8: listing jobs, first and deep pages.\n" in page
    assert "### P4, P5: `bench/bench_transfer.py`\n\nThe script is missing.\n" in page


def test_machine_names_cpu_cores_memory_os_python_and_wrk() -> None:
    host = suite.machine()
    assert list(host) == ["CPU", "cores", "memory", "OS", "Python", "wrk"]
    assert all(host.values())


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bench folder with a met P8 and a missed P7 (and no P4/P5 script), a docs path and a README."""
    bench = tmp_path / "bench"
    bench.mkdir()
    write_script(bench, "bench_list.py", [fast()])
    write_script(bench, "bench_runner.py", [slow()], code=1)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return bench, tmp_path / "docs" / "benchmarks.md", readme


SCRIPTS = (Script("bench_list.py", ("P8",)), Script("bench_runner.py", ("P7",)), Script("bench_transfer.py", ("P4",)))


def test_a_full_run_writes_the_page_and_readme_and_fails_on_a_missed_goal(project: tuple[Path, Path, Path]) -> None:
    bench, docs, readme = project
    assert suite.main([], scripts=SCRIPTS, bench_dir=bench, docs=docs, readme=readme) == 1
    page, text = docs.read_text(), readme.read_text()
    for row in ("| P8 | first page |", "| P7 | runner |", "| P4 | bench_transfer.py is missing | — |"):
        assert row in page and row in text
    assert "old table" not in text and text.endswith(f"{END}\n\n## Next\n\nKept.\n")
    assert "[docs/benchmarks.md](docs/benchmarks.md)" in text


def test_a_run_with_every_goal_met_exits_0(project: tuple[Path, Path, Path]) -> None:
    bench, docs, readme = project
    assert suite.main([], scripts=SCRIPTS[:1], bench_dir=bench, docs=docs, readme=readme) == 0
    assert "| P8 | first page |" in docs.read_text()


@pytest.mark.parametrize(
    ("argv", "scripts"), [(["--only", "p8"], SCRIPTS), (["--quick"], SCRIPTS[:1])], ids=["only", "quick"]
)
def test_a_partial_or_quick_run_leaves_page_and_readme_alone(
    project: tuple[Path, Path, Path], argv: list[str], scripts: tuple[Script, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    bench, docs, readme = project
    assert suite.main(argv, scripts=scripts, bench_dir=bench, docs=docs, readme=readme) == 0
    assert not docs.exists() and readme.read_text() == README
    assert "| P8 | first page |" in capsys.readouterr().out
    assert not (bench / "bench_runner.args").exists()


def test_a_partial_run_writes_its_page_where_asked(project: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bench, docs, readme = project
    elsewhere = tmp_path / "partial.md"
    code = suite.main(
        ["--only", "P7", "--docs", str(elsewhere)], scripts=SCRIPTS, bench_dir=bench, docs=docs, readme=readme
    )
    assert code == 1 and "| P7 | runner |" in elsewhere.read_text()
    assert not docs.exists() and readme.read_text() == README


def test_an_unknown_goal_is_refused(project: tuple[Path, Path, Path]) -> None:
    bench, docs, readme = project
    with pytest.raises(SystemExit, match="unknown goal"):
        suite.main(["--only", "P42"], scripts=SCRIPTS, bench_dir=bench, docs=docs, readme=readme)


def test_the_suite_names_every_goal_once_in_order() -> None:
    goals = [goal for script in suite.SCRIPTS for goal in script.goals]
    assert goals == ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "X1"]
    assert all((suite.BENCH / s.file).is_file() for s in suite.SCRIPTS if s.goals[0] in {"P6", "P7", "P8", "P9", "X1"})
