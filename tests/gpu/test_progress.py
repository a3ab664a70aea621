"""The tqdm training-bar parser, on real lines from ai-toolkit runs and logs."""

from __future__ import annotations

import math

import pytest

from gpu import progress as progress_module
from gpu.progress import BarParser, Progress, parse_bar_line

# Real redraws, from ai-toolkit-observed.md §7 and §8 and ai-toolkit.md §4.3.
FIRST_DRAW = "tiny_lora:   0%|          | 0/10 [00:00<?, ?it/s]"
POSTFIX_AT_OLD_COUNT = "tiny_lora:   0%|          | 0/10 [00:00<?, ?it/s, lr: 1.0e-04 loss: 1.107e+00]"
UNICODE = "tiny_lora:  10%|█         | 1/10 [00:00<00:06,  1.46it/s, lr: 1.0e-04 loss: 1.107e+00]"
UNICODE_LAST = "tiny_lora: 100%|██████████| 10/10 [00:02<00:00,  4.42it/s, lr: 1.0e-04 loss: 1.155e+00]"
ASCII = "tiny_lora: 100%|##########| 10/10 [00:02<00:00,  4.95it/s, lr: 1.0e-04 loss: 1.136e+00]"
ASCII_PARTIAL = "my_lora:  12%|#2        | 240/2000 [05:10<37:55,  1.29s/it, lr: 1.0e-04 loss: 4.123e-01]"
RESUMED = "tiny_lora_long:  10%|█         | 40/400 [00:00<?, ?it/s]"
SLOW = "zimage_a1_ut:   0%|          | 29/20000 [04:14<48:40:44,  8.77s/it, lr: 1.0e-04 loss: 4.167e-01]"
HOURS = "lora_t:  50%|█████     | 1750/3500 [1:06:27<1:11:05,  2.44s/it, lr: 1.0e-04 loss: 1.913e-01]"
SLOW_FIRST = "myrender-v2:   0%|          | 1/600 [00:10<1:42:50, 10.30s/it, lr: 1.0e-04 loss: 6.468e-01]"
OTHER_BARS = [
    "Generating Samples:  50%|#####     | 1/2 [00:38<00:38, 38.63s/it]",
    "Generating Images:  10%|#         | 1/10 [00:12<01:48, 12.01s/it]",
    "Caching latents to disk: 100%|##########| 20/20 [00:09<00:00,  2.10it/s]",
    "100%|##########| 20/20 [00:00<00:00, 812.34it/s]",
    "Loading checkpoint shards: 100%|██████████| 2/2 [00:01<00:00,  1.20it/s]",
]


def test_first_draw_has_no_rate_or_eta() -> None:
    assert parse_bar_line(FIRST_DRAW, "tiny_lora") == Progress(step=0, total=10, elapsed_seconds=0.0)


def test_postfix_at_the_old_count() -> None:
    progress = parse_bar_line(POSTFIX_AT_OLD_COUNT, "tiny_lora")
    assert progress is not None
    assert (progress.step, progress.total, progress.rate, progress.eta_seconds) == (0, 10, None, None)
    assert progress.loss == pytest.approx(1.107)
    assert progress.lr == pytest.approx(1e-4)


def test_unicode_bar_with_rate_in_iterations_per_second() -> None:
    progress = parse_bar_line(UNICODE, "tiny_lora")
    assert progress == Progress(step=1, total=10, rate=1.46, elapsed_seconds=0.0, eta_seconds=6.0, loss=1.107, lr=1e-4)
    assert progress.percent == 10.0


def test_full_unicode_and_ascii_bars() -> None:
    assert parse_bar_line(UNICODE_LAST, "tiny_lora") == Progress(10, 10, 4.42, 2.0, 0.0, 1.155, 1e-4)
    assert parse_bar_line(ASCII, "tiny_lora") == Progress(10, 10, 4.95, 2.0, 0.0, 1.136, 1e-4)
    partial = parse_bar_line(ASCII_PARTIAL, "my_lora")
    assert partial is not None
    assert (partial.step, partial.total, partial.elapsed_seconds, partial.eta_seconds) == (240, 2000, 310.0, 2275.0)


def test_seconds_per_iteration_is_converted_to_a_rate() -> None:
    slow = parse_bar_line(SLOW, "zimage_a1_ut")
    assert slow is not None
    assert slow.rate == pytest.approx(1 / 8.77)
    assert slow.elapsed_seconds == 4 * 60 + 14
    assert slow.eta_seconds == 48 * 3600 + 40 * 60 + 44  # tqdm lets hours pass 24
    first = parse_bar_line(SLOW_FIRST, "myrender-v2")
    assert first is not None and first.rate == pytest.approx(1 / 10.30)


def test_hours_in_elapsed_and_eta() -> None:
    progress = parse_bar_line(HOURS, "lora_t")
    assert progress is not None
    assert progress.elapsed_seconds == 3600 + 6 * 60 + 27
    assert progress.eta_seconds == 3600 + 11 * 60 + 5
    assert progress.loss == pytest.approx(0.1913)


@pytest.mark.parametrize(
    ("elapsed", "seconds"),
    [("1 day, 2:03:04", 86400 + 7384), ("2 days, 0:00:01", 172801), ("3d 4:05:06", 3 * 86400 + 14706)],
)
def test_day_forms(elapsed: str, seconds: float) -> None:
    line = f"job:  50%|#####     | 5/10 [{elapsed}<{elapsed},  1.00s/it]"
    progress = parse_bar_line(line, "job")
    assert progress is not None
    assert progress.elapsed_seconds == seconds
    assert progress.eta_seconds == seconds


def test_resumed_bar_starts_at_the_resumed_step() -> None:
    assert parse_bar_line(RESUMED, "tiny_lora_long") == Progress(step=40, total=400, elapsed_seconds=0.0)


def test_nan_and_inf_loss_and_extra_postfix_pairs() -> None:
    nan = parse_bar_line("j:  10%|#         | 1/10 [00:01<00:09,  1.00it/s, lr: 1.0e-04 loss: nan]", "j")
    assert nan is not None and nan.loss is not None and math.isnan(nan.loss)
    inf = parse_bar_line("j:  10%|#         | 1/10 [00:01<00:09,  1.00it/s, lr: 1.0e-04 loss: inf]", "j")
    assert inf is not None and inf.loss == math.inf
    extra = parse_bar_line(
        "j:  20%|##        | 2/10 [00:02<00:08,  1.00it/s, lr: 2.5e-05 loss: 3.000e-01 loss/normal: 1.0e-01]", "j"
    )
    assert extra is not None and (extra.lr, extra.loss) == (pytest.approx(2.5e-5), pytest.approx(0.3))


def test_trailing_padding_is_accepted() -> None:
    # tqdm pads a redraw that is shorter than the previous one with spaces.
    assert parse_bar_line(UNICODE + "     ", "tiny_lora") == parse_bar_line(UNICODE, "tiny_lora")


@pytest.mark.parametrize("line", OTHER_BARS)
def test_other_bars_are_ignored(line: str) -> None:
    assert parse_bar_line(line, "tiny_lora") is None
    # even when the job has the same name as their desc's start
    assert parse_bar_line(line, "Generating") is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Saving at step 5",
        "Error running job: CUDA error: out of memory",
        "tiny_lora_long:  10%|█         | 40/400 [00:00<?, ?it/s]",  # a longer name that starts with ours
        "tiny_lora:  10%|█         | 1/10 [00:00<00:06,  1.46it/s, lr: 1.0e-04 loss: 1.1",  # cut mid-write
        "xtiny_lora:  10%|█         | 1/10 [00:00<00:06,  1.46it/s]",
    ],
)
def test_anything_else_is_none(line: str) -> None:
    assert parse_bar_line(line, "tiny_lora") is None


def test_name_with_regex_characters() -> None:
    name = "my.lora+v2 (test)[1]|*"
    line = f"{name}:  30%|###       | 3/10 [00:03<00:07,  1.00it/s, lr: 1.0e-04 loss: 2.000e-01]"
    assert parse_bar_line(line, name) == Progress(3, 10, 1.0, 3.0, 7.0, 0.2, 1e-4)
    assert parse_bar_line(line.replace(".", "X", 1), name) is None


def _log_of(lines: list[str]) -> str:
    """How the lines appear in a log: each redraw preceded by \\r, no newline until the bar closes."""
    return "".join("\r" + line for line in lines) + "\n"


def test_parser_returns_the_newest_state_in_a_chunk() -> None:
    parser = BarParser("tiny_lora")
    chunk = "Dataset: /data\n  -  Found 4 images\n" + _log_of([FIRST_DRAW, POSTFIX_AT_OLD_COUNT, UNICODE])
    assert parser.feed(chunk) == parse_bar_line(UNICODE, "tiny_lora")
    assert parser.feed("\nSaving at step 5\nSaved checkpoint to /x.safetensors\n") is None


def test_parser_ignores_other_bars_after_ours() -> None:
    parser = BarParser("tiny_lora")
    chunk = _log_of([UNICODE]) + "".join("\r" + line for line in OTHER_BARS)
    assert parser.feed(chunk) == parse_bar_line(UNICODE, "tiny_lora")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_lines_split_across_chunks(size: int) -> None:
    lines = [FIRST_DRAW, POSTFIX_AT_OLD_COUNT, UNICODE, UNICODE_LAST]
    text = "Running 1 job\n" + _log_of(lines)
    parser = BarParser("tiny_lora")
    seen = [p for p in (parser.feed(text[i : i + size]) for i in range(0, len(text), size)) if p is not None]
    expected = [parse_bar_line(line, "tiny_lora") for line in lines]
    # Never a state from a cut line, always in order, and the last state is reached.
    assert all(state in expected for state in seen)
    assert [expected.index(state) for state in seen] == sorted(expected.index(state) for state in seen)
    assert seen[-1] == expected[-1]
    if size == 1:  # fed a character at a time, every redraw is seen exactly once
        assert seen == expected


def test_a_redraw_ending_with_a_bracket_is_reported_before_its_separator() -> None:
    parser = BarParser("tiny_lora")
    assert parser.feed("\r" + UNICODE) == parse_bar_line(UNICODE, "tiny_lora")
    # The \r that starts the next redraw completes the same segment: not reported twice.
    assert parser.feed("\r") is None
    assert parser.feed(UNICODE_LAST[:20]) is None
    assert parser.feed(UNICODE_LAST[20:] + "\n") == parse_bar_line(UNICODE_LAST, "tiny_lora")


def test_an_incomplete_redraw_is_kept_for_the_next_feed() -> None:
    parser = BarParser("my_lora")
    cut = len(ASCII_PARTIAL) - 10
    assert parser.feed("\r" + ASCII_PARTIAL[:cut]) is None
    assert parser.feed(ASCII_PARTIAL[cut:]) == parse_bar_line(ASCII_PARTIAL, "my_lora")


def test_error_text_glued_to_an_unclosed_bar_keeps_the_bar_state() -> None:
    # A trainer that crashes mid-bar prints its error on stdout right after the last redraw, on the same line.
    parser = BarParser("tiny_lora")
    text = _log_of([UNICODE]).rstrip("\n") + "\r" + UNICODE_LAST + "Error running job: boom\n"
    assert parser.feed(text) == parse_bar_line(UNICODE_LAST, "tiny_lora")


def test_many_redraws_in_one_chunk_parse_only_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    bar = "job:  50%|#####     | {}/100000 [00:01<00:01, 999.00it/s, lr: 1.0e-04 loss: 1.0e-01]"
    calls: list[str] = []
    real = progress_module._parse_rest
    monkeypatch.setattr(progress_module, "_parse_rest", lambda rest: calls.append(rest) or real(rest))
    parser = BarParser("job")
    progress = parser.feed("".join("\r" + bar.format(n) for n in range(20000)) + "\rGenerating Images: 1/2\n")
    assert progress is not None and progress.step == 19999
    assert len(calls) == 1  # scanned from the end, stopped at the first match
