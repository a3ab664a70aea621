"""Reading wrk's output: requests per second, p50 and p99 in any unit, and errors (no wrk needed)."""

from __future__ import annotations

import pytest

from bench.http_load import Load, parse_wrk

# Captured from Debian's wrk 4.1.0 (`wrk -t1 -c4 -d1s --latency`) against a server answering 404.
NOT_FOUND = """\
Running 1s test @ http://127.0.0.1:18765/nope
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.73ms    9.37ms  45.31ms   84.27%
    Req/Sec     1.32k   536.89     2.09k    70.00%
  Latency Distribution
     50%    1.53ms
     75%    9.61ms
     90%   21.82ms
     99%   38.22ms
  1318 requests in 1.00s, 669.30KB read
  Non-2xx or 3xx responses: 1318
Requests/sec:   1312.88
Transfer/sec:    666.70KB
"""

# The same layout with microseconds, seconds and socket errors, as wrk prints them under overload.
OVERLOADED = """\
Running 5s test @ http://127.0.0.1:8000/v2/x/runsync
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   310.22ms  401.12ms   1.99s    88.00%
    Req/Sec    95.10     40.22   190.00     66.00%
  Latency Distribution
     50%  812.00us
     75%  150.10ms
     90%  900.00ms
     99%    1.20s
  950 requests in 5.02s, 220.01KB read
  Socket errors: connect 0, read 3, write 1, timeout 7
Requests/sec:    189.24
Transfer/sec:     43.83KB
"""


def test_reads_rps_percentiles_and_non_2xx_answers() -> None:
    assert parse_wrk(NOT_FOUND) == Load(rps=1312.88, p50_ms=1.53, p99_ms=38.22, errors=1318)


def test_converts_microseconds_and_seconds_and_counts_socket_errors() -> None:
    load = parse_wrk(OVERLOADED)
    assert load.rps == 189.24
    assert load.p50_ms == pytest.approx(0.812)
    assert load.p99_ms == pytest.approx(1200.0)
    assert load.errors == 11


def test_a_clean_run_has_no_errors() -> None:
    clean = NOT_FOUND.replace("  Non-2xx or 3xx responses: 1318\n", "")
    assert parse_wrk(clean).errors == 0
