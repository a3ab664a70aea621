"""core.storage.logs: reading a job's log incrementally and by tail, with progress-bar redraws collapsed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.storage.logs import collapse, collapse_line, read_log

BAR = "\r".join(f"my_lora: {p:3d}%|{'#' * (p // 10):<10}| {p // 10}/10" for p in range(0, 101, 10))


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "job.log"
    path.write_bytes(data)
    return path


def test_collapse_line_keeps_last_non_blank_redraw() -> None:
    assert collapse_line("\ra 10%\ra 20%\ra 30%") == "a 30%"
    assert collapse_line("a 30%\r   \r") == "a 30%"  # a bar cleared with spaces shows its last drawing
    assert collapse_line("plain line  ") == "plain line"
    assert collapse_line("\r\r") == ""


def test_collapse_splits_lines_and_ignores_final_newline() -> None:
    assert collapse("one\ntwo\r\nthree\n") == ["one", "two", "three"]
    assert collapse("") == []
    assert collapse("x") == ["x"]


def test_whole_log_collapses_bar_redraws(tmp_path: Path) -> None:
    path = write(tmp_path, f"Running 1 job\n{BAR}\nSaved checkpoint\n".encode())
    text, next_offset = read_log(path)
    assert text.splitlines() == ["Running 1 job", "my_lora: 100%|##########| 10/10", "Saved checkpoint"]
    assert next_offset == path.stat().st_size


def test_incremental_reads_never_repeat_a_finished_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"first\nsecond\n")
    text, offset = read_log(path, 0)
    assert text == "first\nsecond\n"
    with path.open("ab") as handle:
        handle.write(b"third\n" + b"\rbar 1/3\rbar 2/3")  # a bar still being drawn
    text, offset2 = read_log(path, offset, complete_only=True)
    assert text == "third\n"
    assert offset2 == offset + len(b"third\n")
    with path.open("ab") as handle:
        handle.write(b"\rbar 3/3\nlast\n")
    text, offset3 = read_log(path, offset2, complete_only=True)
    assert text == "bar 3/3\nlast\n"
    assert offset3 == path.stat().st_size
    assert read_log(path, offset3) == ("", offset3)


def test_unfinished_line_is_shown_but_not_consumed(tmp_path: Path) -> None:
    path = write(tmp_path, b"done\n\rbar 1/3\rbar 2/3")
    text, offset = read_log(path)
    assert text == "done\nbar 2/3\n"
    assert offset == len(b"done\n")  # the bar comes again once it is finished


def test_tail_returns_last_lines_of_a_long_log(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(5000)]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    text, offset = read_log(path, tail=3)
    assert text.splitlines() == lines[-3:]
    assert offset == path.stat().st_size
    text, _ = read_log(path, tail=10_000)
    assert text.splitlines() == lines


def test_tail_counts_the_unfinished_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\nb\nc\n\rbar 1/2\rbar 2/2")
    text, _ = read_log(path, tail=2)
    assert text.splitlines() == ["c", "bar 2/2"]


def test_tail_with_offset_stays_after_offset(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\nb\nc\n")
    text, _ = read_log(path, offset=4, tail=5)
    assert text.splitlines() == ["c"]


def test_missing_log_reads_as_empty(tmp_path: Path) -> None:
    assert read_log(tmp_path / "absent.log") == ("", 0)
    with pytest.raises(InvalidInput) as caught:
        read_log(tmp_path / "absent.log", offset=10)
    assert caught.value.field == "offset"


@pytest.mark.parametrize(("offset", "tail", "field"), [(-1, None, "offset"), (None, 0, "tail"), (None, 10**6, "tail")])
def test_bad_arguments_name_the_field(tmp_path: Path, offset: int | None, tail: int | None, field: str) -> None:
    path = write(tmp_path, b"x\n")
    with pytest.raises(InvalidInput) as caught:
        read_log(path, offset, tail)
    assert caught.value.field == field


def test_offset_past_the_end_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"x\n")
    with pytest.raises(InvalidInput, match="past the end"):
        read_log(path, offset=3)


def test_reads_are_bounded_and_a_giant_line_still_advances(tmp_path: Path) -> None:
    path = write(tmp_path, b"\r".join(b"bar %d" % i for i in range(1000)))
    text, offset = read_log(path, 0, complete_only=True, max_bytes=100)
    assert offset == 100  # no newline in a full read: handed over rather than stalling the reader
    assert text.strip().startswith("bar")


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path, b"ok \xff\xfe\n")
    text, _ = read_log(path)
    assert text == "ok \ufffd\ufffd\n"


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.text(alphabet="ab\r\n", max_size=12), min_size=1, max_size=8))
def test_incremental_reads_add_up_to_one_whole_read(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[str]
) -> None:
    # However the log grows, the lines read piece by piece are the lines of the finished log.
    path = tmp_path_factory.mktemp("log") / "job.log"
    path.write_bytes(b"")
    seen: list[str] = []
    offset = 0
    for chunk in chunks:
        with path.open("ab") as handle:
            handle.write(chunk.encode())
        text, offset = read_log(path, offset, complete_only=True)
        seen += text.splitlines()
    text, _ = read_log(path, offset)
    seen += text.splitlines()
    whole, _ = read_log(path)
    assert seen == whole.splitlines()
