"""The short soak: about 200 mixed good and bad requests at concurrency 8 on the session's server.

``make soak`` runs the same code (``benchmarks/soak.py``) for ten minutes on a server of its own;
here it checks that every answer is right and none is lost, and prints the figures.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import DEFAULT_CONCURRENCY, run_soak

pytestmark = pytest.mark.integration

FRAMES = 10
REQUESTS = 200
# Half of the short run is bad inputs (cheap to refuse), so that 200 requests fit in about a
# minute on 2 cores while every refusal path is exercised many times.
BAD_FRACTION = 0.5
# Ten minutes are needed to judge a leak; a minute can only catch a gross one.
SHORT_RUN_RSS_GROWTH_PCT = 25.0


def test_short_soak_gives_every_answer_right_and_loses_none(triton_server, capsys):
    report = run_soak(
        triton_server.grpc_url,
        frames=FRAMES,
        concurrency=DEFAULT_CONCURRENCY,
        duration_s=None,
        requests=REQUESTS,
        bad_fraction=BAD_FRACTION,
        server_pid=triton_server.pid,
        warmup_rounds=0,
    )
    with capsys.disabled():
        print("\n[soak] " + "\n[soak] ".join(report.lines()))
    assert report.requests == REQUESTS
    assert report.good > 0 and report.bad > 0
    assert report.wrong_answers == 0, report.problems
    assert report.lost_requests == 0, report.problems
    assert report.rss_growth_pct < SHORT_RUN_RSS_GROWTH_PCT
