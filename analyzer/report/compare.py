"""Frame-by-frame agreement with Wireshark: run tshark and our engine on one capture, list every difference.

tshark is run with the preferences of ``../shared/tools/truth.sh`` pinned (``TSHARK_PREFS``), so a user's
Wireshark profile cannot change the answer. Its finest label per frame (spurious > fast > retransmission >
out-of-order, as ``tcp.analysis.*`` flags them) is compared with our ``wireshark_kind``, which reproduces
Wireshark 4.0's rules exactly: every frame where the two differ is a disagreement (``difference``: missed,
extra, or kind). Separately, ``overruled`` lists the frames where our ``kind`` (the cause the evidence
supports) differs from tshark's label, with the reason: those are not disagreements but the point of
the tool.

>>> from analyzer.report.compare import compare
>>> result = compare("trace.pcap")                                     # doctest: +SKIP
>>> result.counts["f1"], result.agree                                  # doctest: +SKIP
(1.0, True)
>>> result.disagreements[["frame", "tshark", "wireshark_kind", "difference"]]    # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import AnalyzerError, EngineUnavailable

# Preferences pinned exactly as ../shared/tools/truth.py pins them (4.0.17 defaults, desegmentation off).
TSHARK_PREFS = (
    "tcp.analyze_sequence_numbers:TRUE",   # needed for every tcp.analysis.* flag
    "tcp.relative_sequence_numbers:TRUE",
    "tcp.desegment_tcp_streams:FALSE",     # no reassembly; the analysis flags do not change
    "tcp.reassemble_out_of_order:FALSE",
    "tcp.check_checksum:FALSE",            # offloaded checksums must not matter
    "tcp.track_bytes_in_flight:TRUE",
    "tcp.calculate_timestamps:TRUE",
    "tcp.fastrt_supersedes_ooo:TRUE",      # decides fast retransmission vs out-of-order
    "tcp.default_window_scaling:Not known",
    "tcp.ignore_tcp_timestamps:FALSE",
    "tcp.no_subdissector_on_error:TRUE",
)
TSHARK_FILTER = "tcp && !icmp && !icmpv6"  # TCP headers quoted inside ICMP errors are not segments
TSHARK_FIELDS = ("frame.number", "tcp.stream", "tcp.flags", "tcp.analysis.retransmission",
                 "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission",
                 "tcp.analysis.out_of_order")
REFERENCE_VERSION = "4.0"  # the tshark release whose rules our labels follow

RETRANSMISSION, OUT_OF_ORDER = "retransmission", "out_of_order"

DIFFERENCES = {
    "missed": "tshark flags the frame, our wireshark_kind does not",
    "extra": "our wireshark_kind flags the frame, tshark does not",
    "kind": "both flag the frame, with different labels",
}
"""Disagreement types between tshark's label and our ``wireshark_kind``."""

DISAGREEMENT_COLUMNS = ("frame", "stream", "our_stream", "tshark", "wireshark_kind", "kind", "difference", "reason",
                        "wireshark_filter")
OVERRULED_COLUMNS = ("frame", "stream", "tshark", "kind", "reason", "wireshark_filter")


def label_class(label: str) -> str:
    """The class of a label: retransmission (any resend), out_of_order, or '' (none, duplicate)."""
    if label == OUT_OF_ORDER:
        return OUT_OF_ORDER
    return RETRANSMISSION if label.endswith(RETRANSMISSION) else ""


class TsharkFailed(AnalyzerError):
    """tshark ran but could not read the capture."""


@dataclass
class Comparison:
    """tshark vs our labels for one capture.

    ``counts``: tp/fp/fn of our ``wireshark_kind`` against tshark's flags (any label), precision, recall,
    f1, class_agreement (matched frames whose class also matches), exact_kind (matched frames with the
    same finest label), disagreements, and ``overruled``: frames where our ``kind`` says another cause
    than tshark's label. ``per_class``: tp/fp/fn per class. ``disagreements``: one row per frame where
    ``wireshark_kind`` and tshark differ; ``overruled``: one row per frame where ``kind`` and tshark do.
    """

    capture: str
    tshark_version: str
    counts: dict
    per_class: pd.DataFrame
    disagreements: pd.DataFrame
    overruled: pd.DataFrame = field(default_factory=pd.DataFrame)
    labels: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def agree(self) -> bool:
        """True when our ``wireshark_kind`` says what tshark says on every frame."""
        return len(self.disagreements) == 0

    def summary(self) -> dict:
        """JSON-ready counts, disagreements and overruled labels (``compare --json``)."""
        rows = lambda df: df.astype(object).where(df.notna(), None).to_dict(orient="records")  # noqa: E731
        return {"capture": self.capture, "tshark_version": self.tshark_version, "agree": self.agree,
                **self.counts, "per_class": self.per_class.to_dict(orient="records"),
                "disagreements": rows(self.disagreements), "overruled": rows(self.overruled)}


# ---- tshark ------------------------------------------------------------------------------------
def tshark_path() -> str:
    """The tshark executable (``$TSHARK`` or the PATH), or EngineUnavailable."""
    exe = shutil.which(os.environ.get("TSHARK", "tshark"))
    if not exe:
        raise EngineUnavailable("tshark not found: install it (Debian: apt-get install tshark) or set $TSHARK")
    return exe


def tshark_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, errors="replace").stdout
    first = out.splitlines()[0] if out else ""
    # "TShark (Wireshark) 4.0.17 (Git v4.0.17 packaged as ...)"
    parts = first.split()
    return parts[2] if len(parts) > 2 else "unknown"


def tshark_command(exe: str, path: str) -> list[str]:
    cmd = [exe, "-n", "-2", "-r", path]
    for pref in TSHARK_PREFS:
        cmd += ["-o", pref]
    cmd += ["-Y", TSHARK_FILTER, "-T", "fields", "-E", "header=n", "-E", "separator=/t",
            "-E", "occurrence=f", "-E", "quote=n"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    return cmd


def tshark_labels(path: str, exe: str | None = None) -> pd.DataFrame:
    """tshark's label for every TCP frame: columns frame, stream, flags, tshark (finest flag or ''), tshark_class."""
    exe = exe or tshark_path()
    res = subprocess.run(tshark_command(exe, path), capture_output=True, text=True, errors="replace")
    if res.returncode not in (0, 2):  # 2: cut-short file, frames before the damage are still usable
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Running as user" not in ln]
        raise TsharkFailed(f"{path}: tshark failed: {lines[-1] if lines else f'exit status {res.returncode}'}")
    frames, streams, flags, finest = [], [], [], []
    for line in res.stdout.splitlines():
        cols = line.split("\t") + [""] * len(TSHARK_FIELDS)
        if not cols[0]:
            continue
        retr, fast, spur, ooo = (bool(c) for c in cols[3:7])
        frames.append(int(cols[0]))
        streams.append(int(cols[1]) if cols[1] else -1)
        flags.append(int(cols[2], 16) if cols[2] else 0)
        finest.append("spurious_retransmission" if spur else "fast_retransmission" if fast else
                      "retransmission" if retr else "out_of_order" if ooo else "")
    df = pd.DataFrame({"frame": np.array(frames, dtype=np.int64), "stream": np.array(streams, dtype=np.int64),
                       "flags": np.array(flags, dtype=np.int64), "tshark": pd.Series(finest, dtype=object)})
    df["tshark_class"] = df["tshark"].map(lambda k: OUT_OF_ORDER if k == OUT_OF_ORDER else
                                          RETRANSMISSION if k else "")
    return df


# ---- comparison ----------------------------------------------------------------------------------
def compare(path: str | os.PathLike, report=None) -> Comparison:
    """Run tshark and ``analyze`` on ``path`` and compare their labels frame by frame.

    ``report`` reuses an ``analyze`` result for the same file. Raises EngineUnavailable without tshark.

    >>> compare("captures/demo.pcap").agree                          # doctest: +SKIP
    True
    """
    from .pipeline import analyze

    path = os.fspath(path)
    exe = tshark_path()
    if report is None:
        report = analyze(path)
    theirs = tshark_labels(path, exe)
    labels = join_labels(theirs, report.retransmissions)
    return Comparison(capture=path, tshark_version=tshark_version(exe), counts=_counts(labels),
                      per_class=_per_class(labels), disagreements=_disagreements(labels),
                      overruled=_overruled(labels), labels=labels)


def join_labels(theirs: pd.DataFrame, retransmissions: pd.DataFrame) -> pd.DataFrame:
    """One row per frame that either side labels: tshark's label, our ``wireshark_kind`` and ``kind``, and the
    type of difference between the first two ('' if none)."""
    ours = retransmissions.drop_duplicates("frame")[["frame", "stream", "wireshark_kind", "kind", "reason",
                                                     "wireshark_filter"]]
    ours = ours.rename(columns={"stream": "our_stream"})
    flagged = theirs[theirs["tshark"] != ""]
    df = flagged.merge(ours, on="frame", how="outer")
    # tshark's view of frames only we flag (their label is none) keeps its stream number
    info = theirs.set_index("frame")
    df["stream"] = df["frame"].map(info["stream"]).fillna(df["our_stream"]).astype("Int64")
    df["our_stream"] = df["our_stream"].astype("Int64")
    for col in ("tshark", "wireshark_kind", "kind", "reason", "wireshark_filter"):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    df["tshark_class"] = df["tshark"].map(label_class).astype(object)
    df["ws_class"] = df["wireshark_kind"].map(label_class).astype(object)
    df["difference"] = ["" if t == w else "missed" if not w else "extra" if not t else "kind"
                        for t, w in zip(df["tshark"], df["wireshark_kind"])]
    missing = df["wireshark_filter"] == ""
    df.loc[missing, "wireshark_filter"] = [_filter(s, f) for s, f in zip(df.loc[missing, "stream"],
                                                                         df.loc[missing, "frame"])]
    return df.sort_values("frame", ignore_index=True)


def _filter(stream, frame: int) -> str:
    if pd.isna(stream):
        return f"frame.number == {int(frame)}"
    return f"tcp.stream eq {int(stream)} && frame.number == {int(frame)}"


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def _counts(df: pd.DataFrame) -> dict:
    theirs, ours = df["tshark"] != "", df["wireshark_kind"] != ""
    tp = int((theirs & ours).sum())
    fp = int((ours & ~theirs).sum())
    fn = int((theirs & ~ours).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    matched = df[theirs & ours]
    same_class = int((matched["tshark_class"] == matched["ws_class"]).sum())
    exact = int((matched["tshark"] == matched["wireshark_kind"]).sum())
    return {"tshark_flagged": int(theirs.sum()), "ours_flagged": int(ours.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall) if tp or fp or fn else 1.0,
            "class_agreement": _ratio(same_class, tp), "exact_kind": _ratio(exact, tp),
            "disagreements": int((df["difference"] != "").sum()),
            "overruled": int((df["kind"] != df["tshark"]).sum())}


def _per_class(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cls in (RETRANSMISSION, OUT_OF_ORDER):
        theirs, ours = df["tshark_class"] == cls, df["ws_class"] == cls
        tp, fp, fn = int((theirs & ours).sum()), int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        rows.append({"class": cls, "tshark": int(theirs.sum()), "ours": int(ours.sum()), "tp": tp, "fp": fp,
                     "fn": fn, "precision": p, "recall": r, "f1": _ratio(2 * p * r, p + r) if tp or fp or fn else 1.0})
    return pd.DataFrame(rows)


def _disagreements(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[df["difference"] != "", list(DISAGREEMENT_COLUMNS)].reset_index(drop=True)


def _overruled(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[df["kind"] != df["tshark"], list(OVERRULED_COLUMNS)].reset_index(drop=True)
