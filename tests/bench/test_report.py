"""A benchmark's figures: goals met or missed, the table, the JSON the suite reads back, the exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import at_most, finish, format_table, higher_is_better, load, lower_is_better, missed, number


def test_goals_are_judged_by_ratio_or_by_ceiling() -> None:
    assert higher_is_better("P2", "rps", 2000, "req/s", anchor="bare", anchor_value=2000, goal=1.0).met
    assert not higher_is_better("P2", "rps", 1999, "req/s", anchor="bare", anchor_value=2000, goal=1.0).met
    assert lower_is_better("P7", "wall", 1.05, "s", anchor="alone", anchor_value=1.0, goal=1.05).met
    assert not lower_is_better("P7", "wall", 1.06, "s", anchor="alone", anchor_value=1.0, goal=1.05).met
    assert at_most("P8", "p50", 20.0, "ms", limit=20).met
    assert not at_most("P8", "p50", 20.1, "ms", limit=20).met


def test_finish_writes_the_json_it_returns_and_fails_on_a_missed_goal(tmp_path: Path) -> None:
    met = at_most("P8", "first page", 9.5, "ms", limit=20, anchor="sqlite3", anchor_value=0.3, detail="p50 of 200")
    slow = lower_is_better("P7", "runner", 1.2, "s", anchor="alone", anchor_value=1.0, goal=1.05)
    target = tmp_path / "figures.json"
    assert finish([met], ["bench_list.py", "--json", str(target)]) == 0
    assert load(target) == [met]
    assert finish([met, slow], ["bench_x.py", "--json", str(target)]) == 1
    assert load(target) == [met, slow]


def test_finish_without_json_writes_nothing_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert finish([at_most("P8", "first page", 9.5, "ms", limit=20)], ["bench_list.py"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "| P8 | first page | 9.5 ms |" in capsys.readouterr().out


def test_table_rows_show_values_ratios_and_a_missed_figure_without_a_value() -> None:
    table = format_table(
        [
            higher_is_better("P2", "GET /jobs/{id}", 2100, "req/s", anchor="bare route", anchor_value=2000, goal=1.0),
            missed("P1", "bench_cold_start.py is missing"),
        ]
    ).splitlines()
    assert table[2] == "| P2 | GET /jobs/{id} | 2,100 req/s | bare route | 2,000 req/s | 1.05x | ≥ 1.00x | yes |"
    assert table[3] == "| P1 | bench_cold_start.py is missing | — |  |  |  |  | **no** |"


def test_numbers_are_written_without_exponents() -> None:
    assert [number(x) for x in (12210.4, 4861.0, 158.0, 8.21, 0.2641)] == ["12,210", "4,861", "158", "8.21", "0.2641"]
