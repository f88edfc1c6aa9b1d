"""``ts`` floats are the double nearest to the exact capture time, so they join with tshark's frame.time_epoch.

``table.seconds`` turns integer nanoseconds into float seconds; the oracle is Python's ``int / int``, which
is correctly rounded. ``ts_ns / 1e9`` rounds twice and misses on about a quarter of epoch times.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
from analyzer.table import seconds

REAL = Path(__file__).resolve().parents[2] / "shared" / "captures" / "real"
INT64 = np.iinfo(np.int64)


def exact(ns: np.ndarray) -> np.ndarray:
    return np.array([n / 10**9 for n in ns.tolist()], dtype=np.float64)


@pytest.mark.parametrize("low, high", [
    (INT64.min, INT64.max),                                  # every int64
    (1_500_000_000 * 10**9, 1_900_000_000 * 10**9),          # epoch times with nanoseconds
    (-10**12, 10**12),                                       # around zero, both signs
    (2**53 - 10**6, 2**53 + 10**6),                          # where int64 -> double starts to round
])
def test_seconds_is_the_nearest_double_on_random_values(low, high):
    ns = np.random.default_rng(low % 1000).integers(low, high, 100_000, dtype=np.int64, endpoint=True)
    got, want = seconds(ns), exact(ns)
    assert np.array_equal(got, want), ns[got != want][:5]


def test_seconds_edge_cases():
    ns = np.array([0, 1, -1, 999_999_999, 10**9, -10**9, 10**9 + 1, 2**53, 2**53 + 1, 2**62, INT64.max, INT64.min,
                   INT64.min + 1, 5**9, 5**9 * 2**20, 1_700_000_000_000_000_001], dtype=np.int64)
    assert np.array_equal(seconds(ns), exact(ns))
    assert seconds(np.array([], dtype=np.int64)).shape == (0,)


def test_the_old_conversion_was_wrong_on_a_quarter_of_epoch_times():
    ns = np.random.default_rng(7).integers(1_600_000_000 * 10**9, 1_700_000_000 * 10**9, 10_000, dtype=np.int64)
    assert 0.15 < np.mean(ns / 1e9 != exact(ns)) < 0.35
    assert np.array_equal(seconds(ns), exact(ns))


def _truth_times(path: Path) -> pd.DataFrame:
    truth = REAL / "truth" / f"{path.name}.csv"
    return pd.read_csv(truth, usecols=["frame.number", "frame.time_epoch"], dtype={"frame.time_epoch": str})


@pytest.mark.parametrize("path", sorted(p for p in REAL.glob("*.pcap*")) if REAL.exists() else
                         [pytest.param(None, marks=pytest.mark.skip(reason=f"real captures not found in {REAL}"))],
                         ids=lambda p: p.name if p else "none")
def test_packet_ts_joins_tsharks_frame_time_epoch(path):
    """On every real capture, ts equals float(frame.time_epoch) exactly (tshark prints the exact decimal)."""
    truth = _truth_times(path)
    epoch = truth["frame.time_epoch"]
    ns = np.array([int(sec) * 10**9 + int(frac) for sec, frac in epoch.str.split(".").tolist()], dtype=np.int64)
    assert np.array_equal(seconds(ns), epoch.astype(float).to_numpy())
    packets = analyzer.read_packets(path)
    joined = packets[["frame", "ts"]].merge(truth.assign(tshark=epoch.astype(float)), left_on="frame",
                                           right_on="frame.number")
    assert len(joined) == len(packets)
    assert (joined["ts"] == joined["tshark"]).all()
