"""Progress of a GPU job: the shared record, and the parser for ai-toolkit's tqdm bar."""

from __future__ import annotations

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


# TODO(H1): parse_bar_line(line, name) and BarParser(name).feed(chunk)
