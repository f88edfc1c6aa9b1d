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


# -- the Python API: datetimes beside float seconds, NA for absent values ---------------------------------
def _capture(tmp_path):
    from .tcpbuild import MS, Capture

    cap = Capture(t0=1_700_000_000.123456789)
    f = cap.flow()
    f.handshake()
    f.c("PA", 100, dt=MS)
    f.c("PA", 100, dt=0.3, seq=1, advance=False)  # a retransmission
    cap.flow(cport=40001).c("PA", 10, dt=MS)       # midstream: no SYN, so no syn_ts
    return cap.write(tmp_path / "api.pcap")


def test_read_packets_nullable_form(tmp_path):
    path = _capture(tmp_path)
    raw, api = analyzer.read_packets(path), analyzer.read_packets(path, nullable=True)
    cols = list(api.columns)
    assert cols[cols.index("ts") + 1] == "time" and str(api["time"].dtype) == "datetime64[ns, UTC]"
    assert (api["time"].astype("int64") == raw["ts_ns"]).all()  # exact, from ts_ns
    for name, dtype in (("mss", "Int32"), ("wscale", "Int16"), ("tsval", "Int64"), ("vlan", "Int32"),
                        ("vlan_inner", "Int32"), ("tfo_cookie_len", "Int16"), ("ip_id", "Int32"), ("tsecr", "Int64")):
        assert str(api[name].dtype) == dtype
        assert api[name].isna().tolist() == (raw[name] == -1).tolist(), name
        assert (api[name].dropna().astype("int64") == raw[name][raw[name] != -1]).all(), name
    assert api["mss"].tolist()[:2] == [1460, 1460] and api["vlan"].isna().all()
    assert list(raw.columns) == [c for c in cols if c != "time"] and str(raw["mss"].dtype) == "int32"
    batches = list(analyzer.iter_packets(path, batch_size=3, nullable=True))
    assert pd.concat(batches, ignore_index=True)["mss"].isna().tolist() == api["mss"].isna().tolist()


def test_report_tables_show_datetimes_beside_seconds_not_in_files(tmp_path):
    from analyzer.report import table_columns

    report = analyzer.analyze(_capture(tmp_path))
    for table, pairs in (("retransmissions", [("ts", "time")]),
                         ("connections", [("first_ts", "first_time"), ("last_ts", "last_time")]),
                         ("handshakes", [("syn_ts", "syn_time"), ("synack_ts", "synack_time"), ("ack_ts", "ack_time"),
                                         ("first_syn_ts", "first_syn_time")])):
        df = getattr(report, table)
        cols = list(df.columns)
        for secs, when in pairs:
            assert cols[cols.index(secs) + 1] == when and str(df[when].dtype) == "datetime64[ns, UTC]"
            assert df[when].isna().tolist() == df[secs].isna().tolist()
            got = df[when].dropna().astype("int64").to_numpy()
            assert np.all(np.abs(got - df[secs].dropna().to_numpy(float) * 1e9) <= 120), (table, secs)
    assert report.handshakes["syn_time"].isna().tolist() == [False, True]
    report.write(tmp_path / "out")
    for table in ("retransmissions", "connections", "handshakes"):
        header = (tmp_path / "out" / f"{table}.csv").read_text().splitlines()[0]
        assert header == ",".join(c.name for c in table_columns(table))


def test_nanoseconds_inverts_seconds_to_the_float_resolution():
    from analyzer.table import nanoseconds

    ns = np.random.default_rng(3).integers(1_600_000_000 * 10**9, 1_700_000_000 * 10**9, 10_000, dtype=np.int64)
    assert np.abs(nanoseconds(seconds(ns)) - ns).max() <= 120
    small = np.array([0, 1, 999_999_999, 123_456_789_012], dtype=np.int64)
    assert np.array_equal(nanoseconds(seconds(small)), small)
    assert nanoseconds(np.array([np.nan]))[0] == np.iinfo(np.int64).min
