"""Progress of a GPU job: the shared record, and the parser for ai-toolkit's tqdm bar."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress state: steps done out of total, speed, time left, last loss."""

    step: int
    total: int
    rate: float | None = None  # iterations per second
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None
    loss: float | None = None
    lr: float | None = None

    @property
    def percent(self) -> float:
        """Share of steps done, 0-100."""
        return round(100.0 * self.step / self.total, 2) if self.total else 0.0


# tqdm prints [H:]MM:SS (hours can pass 24); day forms are accepted in case another tqdm prints them.
_TIME = r"-?(?:\d+ days?, |\d+d )?\d+(?::\d\d){1,2}"
# The rest of tqdm's default format after "<desc>: ":
#   {pct:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{, postfix}]
# then the spaces tqdm pads with when a redraw is shorter than the one before, or stdout text printed right
# after a bar that was never closed (e.g. "Error running job: ..." when training crashes mid-bar).
_REST = re.compile(
    r" *(?P<pct>\d+)%\|[^|]*\| *(?P<n>\d+)/(?P<total>\d+)"
    rf" \[(?P<elapsed>{_TIME}|\?)<(?P<eta>{_TIME}|\?),"
    r" *(?P<rate>\?|[\d.]+(?:[kMGT])?|inf|nan)(?P<unit>it/s|s/it)"
    r"(?:, (?P<postfix>[^\]]*))?\]"
)
# Postfix pairs such as "lr: 1.0e-04 loss: 4.123e-01 loss/normal: 3.0e-01".
_PAIR = re.compile(r"([^\s:]+): (\S+)")
_SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SEPARATOR = re.compile(r"[\r\n]")
# A line without \r or \n this long is not a bar; keep only its end so memory stays bounded.
_MAX_TAIL = 64 * 1024


def _seconds(text: str) -> float | None:
    """Seconds in a tqdm time such as 05:10, 1:06:27, 48:40:44 or '1 day, 2:03:04'; None for '?'."""
    if text == "?":
        return None
    days = 0
    if " " in text:
        day_part, text = text.rsplit(" ", 1)
        days = int(day_part.split("d")[0].strip())
    sign = -1 if text.startswith("-") else 1
    total = 0
    for part in text.lstrip("-").split(":"):
        total = total * 60 + int(part)
    return float(max(0, sign * (days * 86400 + total)))


def _rate(value: str, unit: str) -> float | None:
    """Iterations per second from tqdm's rate and unit (s/it is inverted)."""
    if value == "?":
        return None
    scale = _SI.get(value[-1], 1.0)
    number = float(value[:-1] if value[-1] in _SI else value) * scale
    if unit == "s/it":
        return 1.0 / number if number > 0 else None
    return number


def _float(text: str | None) -> float | None:
    """A float from a postfix value (nan and inf included), None when it is not a number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _parse_rest(rest: str) -> Progress | None:
    """Parse what follows '<name>:' in a bar redraw."""
    match = _REST.match(rest)
    if match is None:
        return None
    pairs = dict(_PAIR.findall(match["postfix"] or ""))
    return Progress(
        step=int(match["n"]),
        total=int(match["total"]),
        rate=_rate(match["rate"], match["unit"]),
        elapsed_seconds=_seconds(match["elapsed"]),
        eta_seconds=_seconds(match["eta"]),
        loss=_float(pairs.get("loss")),
        lr=_float(pairs.get("lr")),
    )


def parse_bar_line(line: str, name: str) -> Progress | None:
    """Parse one redraw of the training bar whose desc is exactly `name`; None for any other text."""
    prefix = name + ":"
    if not line.startswith(prefix):
        return None
    return _parse_rest(line[len(prefix) :])


class BarParser:
    """Incremental parser for a log read in arbitrary chunks; yields the newest training-bar state."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._prefix = name + ":"
        self._tail = ""
        self._tail_parsed = False  # the kept tail was already reported, don't report it again

    def feed(self, chunk: str) -> Progress | None:
        """Take the next piece of the log; return the newest bar state completed in it, or None."""
        if not chunk:
            return None
        data = self._tail + chunk
        segments = _SEPARATOR.split(data)
        tail = segments.pop()  # after the last separator: still being written
        previous_tail, previous_parsed = self._tail, self._tail_parsed
        self._tail = tail[-_MAX_TAIL:]
        self._tail_parsed = False
        # tqdm writes each redraw whole and it ends with "]" (plus padding), so such a tail is complete.
        if tail.rstrip(" ").endswith("]"):
            found = self._parse(tail)
            if found is not None:
                self._tail_parsed = True
                return found
        for index in range(len(segments) - 1, -1, -1):
            segment = segments[index]
            if index == 0 and previous_parsed and segment.rstrip(" ") == previous_tail.rstrip(" "):
                return None
            found = self._parse(segment)
            if found is not None:
                return found
        return None

    def _parse(self, segment: str) -> Progress | None:
        """Parse one segment if it starts with the bar's desc (a cheap test before the regex)."""
        if not segment.startswith(self._prefix):
            return None
        return _parse_rest(segment[len(self._prefix) :])
