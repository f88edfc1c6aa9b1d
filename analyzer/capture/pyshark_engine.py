"""The pyshark engine: the packet table from tshark's own dissectors, read through pyshark.

``read_packets_pyshark(path)`` returns the same table as the native reader (``analyzer.schema.PACKET_COLUMNS``:
same columns, order, dtypes and values), but every value comes from Wireshark's dissectors. It is the
cross-check for the native decoder and the engine behind ``--engine pyshark``.

How it runs tshark (through ``pyshark.FileCapture``)::

    tshark -l -n -T ek -Y 'tcp && !icmp && !icmpv6' -J 'frame vlan ieee8021ad ip ipv6 tcp'
           -o <pinned preferences, below> -r CAPTURE

- ``-T ek`` (pyshark ``use_ek=True``): one flat JSON object per packet, parsed by the C json module. It is
  the fastest of pyshark's output modes (PDML/XML is ~10x slower).
- ``-J`` keeps only the protocol trees we read (no HTTP/TLS/... trees to print, ship and parse). The
  dissectors still all run, so IP reassembly and the display filter behave exactly as in plain tshark.
- ``-Y 'tcp && !icmp && !icmpv6'``: one row per frame that carries a TCP header; a TCP header quoted
  inside an ICMP error is not a segment. Non-final IP fragments carry no TCP layer; the frame that
  completes a datagram carries the reassembled TCP segment (tshark's own reassembly, ``ip.defragment``).
- Preferences are pinned (``PREFS``) so that a user's Wireshark preferences file cannot change a value:
  sequence analysis and relative sequence numbers are off, so ``tcp.options.sack_le/re`` are the raw
  edges on the wire (with relative numbers on they are offsets from the peer's ISN); TCP reassembly is
  off (we want one row per frame, and it keeps tshark fast); checksums are not checked (offloaded
  checksums are normal in captures); IP/IPv6 defragmentation is on.

Values, column by column (where tshark could be read two ways, the rule is stated):

- ``frame`` = frame.number; ``ts_ns`` is parsed from the text of frame.time_epoch (9 fractional digits),
  never through a float; ``ts = ts_ns / 1e9``.
- ``interface`` = frame.interface_id (0 when absent: pcap files); ``caplen``/``wirelen`` = frame.cap_len /
  frame.len.
- ``vlan``/``vlan_inner``: the first and second 802.1Q (``vlan``) or 802.1ad (``ieee8021ad``) tag in
  header order, -1 when absent.
- ``src``/``dst``/``ip_id``/``ttl``: from the innermost IP header (tshark's last ip/ipv6 layer). IPv6
  addresses are written as Python's ``ipaddress`` prints them (tshark and Python agree except on
  IPv4-mapped addresses). ``ip_id`` is the IPv4 identification, or the IPv6 fragment header's
  identification when there is one (atomic fragments included), else -1. For a reassembled datagram
  these come from the header of the frame that completed it, as tshark shows them.
- ``fragmented``: tshark reassembled the datagram from two or more fragments (ip.fragment /
  ipv6.fragment present). An atomic IPv6 fragment (offset 0, M=0) is not reassembled: False.
- TCP fields are from the first TCP header of the frame: ports, tcp.seq_raw, tcp.ack_raw (whatever the
  ACK flag), tcp.flags (all bits incl. AE/NS 0x100), tcp.window_size_value (raw, unscaled), tcp.hdr_len,
  tcp.len (from the IP length, so it holds for snaplen-cut frames).
- ``truncated``: fewer payload bytes were captured than tcp.len says (tshark's ``tcp.payload`` holds the
  captured payload bytes).
- Options: mss = tcp.options.mss_val, wscale = tcp.options.wscale.shift, sack_permitted = the SACK-
  permitted option is present, sack blocks = tcp.options.sack_le/re (raw, first four blocks),
  tsval/tsecr = tcp.options.timestamp.tsval/tsecr (absent, hence -1, when tshark rejects the option, e.g.
  a wrong option length), tfo_cookie_len = length of option kind 34 minus 2 (0 = cookie request).

tshark is not found: ``EngineUnavailable`` naming the fix (``apt-get install tshark``). A file tshark
cannot read at all: ``CaptureError``. A file damaged part-way: the rows before the damage are returned
and ``df.attrs["problems"]`` carries tshark's one-line complaint.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import os
import shutil

import numpy as np
import pandas as pd

from .. import schema
from ..errors import CaptureError, EngineUnavailable

DISPLAY_FILTER = "tcp && !icmp && !icmpv6"

# Only these protocol trees are printed; every dissector still runs.
PROTOCOL_FILTER = "frame vlan ieee8021ad ip ipv6 tcp"

PREFS = {
    "tcp.analyze_sequence_numbers": "FALSE",   # no analysis needed for per-frame fields; faster
    "tcp.relative_sequence_numbers": "FALSE",  # SACK edges raw, as on the wire
    "tcp.desegment_tcp_streams": "FALSE",      # one row per frame; no TCP reassembly
    "tcp.reassemble_out_of_order": "FALSE",
    "tcp.check_checksum": "FALSE",             # offloaded/bad checksums must not matter
    "tcp.calculate_timestamps": "FALSE",
    "tcp.track_bytes_in_flight": "FALSE",
    "tcp.ignore_tcp_timestamps": "FALSE",      # keep the timestamps option dissected
    "tcp.no_subdissector_on_error": "TRUE",
    "ip.defragment": "TRUE",                   # rows for reassembled datagrams
    "ipv6.defragment": "TRUE",
    "ip.check_checksum": "FALSE",
    "ip.tso_support": "TRUE",                  # tshark default: ip.len 0 (TSO) -> captured length
}
# Every name above exists from tshark 3.0 to 4.x: tshark refuses to start on an unknown ("obsolete") one.

INSTALL_HINT = "apt-get install tshark"

_NSACK = schema.SACK_MAX_BLOCKS
# (name, kind) of every column the per-packet loop fills, in PACKET_COLUMNS order except ts (derived).
_INT_COLS = ("frame", "interface", "vlan", "vlan_inner", "ip_version", "ip_id", "ttl", "sport", "dport",
             "seq_raw", "ack_raw", "flags", "window", "tcp_hlen", "payload_len", "caplen", "wirelen", "mss",
             "wscale", "sack_count", "tsval", "tsecr", "tfo_cookie_len",
             *[f"sack{i}_{e}" for i in range(1, _NSACK + 1) for e in ("le", "re")])


def _first(v):
    return v[0] if isinstance(v, list) else v


def _as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _opt_int(d: dict, key: str, default: int = -1) -> int:
    v = d.get(key)
    if v is None:
        return default
    v = _first(v)
    try:
        return int(v, 0) if isinstance(v, str) and v.startswith("0x") else int(v)
    except (TypeError, ValueError):
        return default


def _nbytes(hexcolon) -> int:
    """Length of a tshark bytes value printed as 'aa:bb:cc'."""
    s = _first(hexcolon)
    if not isinstance(s, str) or not s:
        return 0
    return (len(s) + 1) // 3


def _epoch_ns(text: str) -> int:
    """'1418145369.924505488' -> exact integer nanoseconds (no float on the way)."""
    neg = text.startswith("-")
    if neg:
        text = text[1:]
    sec, _, frac = text.partition(".")
    ns = int(sec or 0) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if neg else ns


@functools.lru_cache(maxsize=4096)
def _ip6_text(addr: str) -> str:
    try:
        return str(ipaddress.IPv6Address(addr))
    except ValueError:
        return addr


def _tshark_path(tshark_path: str | None = None) -> str:
    """Find tshark the way pyshark does, or raise EngineUnavailable naming the fix."""
    try:
        from pyshark.tshark.tshark import TSharkNotFoundException, get_process_path
    except ImportError as exc:  # pragma: no cover - pyshark is a dependency
        raise EngineUnavailable(f"the pyshark engine needs pyshark: pip install pyshark ({exc})") from None
    try:
        path = get_process_path(tshark_path)
    except TSharkNotFoundException:
        path = None
    if not path or not os.access(path, os.X_OK):
        path = shutil.which("tshark")
    if not path:
        raise EngineUnavailable(f"the pyshark engine needs tshark, which was not found: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def _tshark_version(tshark_path: str):
    from pyshark.tshark.tshark import get_tshark_version
    return get_tshark_version(tshark_path)


def _capture_class():
    import pyshark

    class _FileCapture(pyshark.FileCapture):
        """pyshark's FileCapture, asking ``tshark -v`` once per process instead of once per file."""

        def _get_tshark_version(self):
            return _tshark_version(self._get_tshark_path())

    return _FileCapture


def read_packets_pyshark(path, tshark_path: str | None = None) -> pd.DataFrame:
    """Read ``path`` with tshark (through pyshark) into the packet table (``schema.PACKET_COLUMNS``)."""
    path = os.fspath(path)
    exe = _tshark_path(tshark_path)
    if not os.path.exists(path):
        raise CaptureError(path, None, "no such file")
    if not os.path.isfile(path):
        raise CaptureError(path, None, "not a file")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read(path, exe)
    # Called from inside a running event loop (Jupyter, an async app): pyshark drives its own loop with
    # run_until_complete, which cannot nest, so run it on a worker thread with a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_read, path, exe).result()


def _read(path: str, exe: str) -> pd.DataFrame:
    from pyshark.capture.capture import TSharkCrashException

    cols: dict[str, list] = {name: [] for name in _INT_COLS}
    ts_ns: list[int] = []
    src: list[str] = []
    dst: list[str] = []
    fragmented: list[bool] = []
    truncated: list[bool] = []
    sack_perm: list[bool] = []
    problems: list[str] = []

    cap = _capture_class()(
        path, display_filter=DISPLAY_FILTER, keep_packets=False, use_ek=True, tshark_path=exe,
        override_prefs=PREFS, custom_parameters=["-J", PROTOCOL_FILTER],
    )
    row = _row_builder(cols, ts_ns, src, dst, fragmented, truncated, sack_perm)
    try:
        try:
            for pkt in cap:
                row(pkt)
        except TSharkCrashException as exc:
            msg = _tshark_complaint(str(exc))
            if not ts_ns and not _is_cut_short(msg):
                raise CaptureError(path, None, f"tshark cannot read it: {msg}") from None
            problems.append(f"{path}: tshark stopped early: {msg}")
    finally:
        try:
            cap.close()
        except Exception:  # noqa: BLE001 - tshark already gone; nothing left to clean
            pass

    if not ts_ns:
        df = schema.empty_frame(schema.PACKET_COLUMNS)
        df.attrs["problems"] = problems
        return df

    data: dict[str, object] = {}
    for c in schema.PACKET_COLUMNS:
        if c.name in cols:
            data[c.name] = np.asarray(cols[c.name], dtype=np.int64).astype(c.dtype)
    t = np.asarray(ts_ns, dtype=np.int64)
    data["ts_ns"] = t
    data["ts"] = t / 1e9
    data["src"] = pd.Categorical(src)
    data["dst"] = pd.Categorical(dst)
    data["fragmented"] = np.asarray(fragmented, dtype=bool)
    data["truncated"] = np.asarray(truncated, dtype=bool)
    data["sack_permitted"] = np.asarray(sack_perm, dtype=bool)
    df = schema.conform(pd.DataFrame(data), schema.PACKET_COLUMNS)
    df.attrs["problems"] = problems
    return df


def _tshark_complaint(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("Last error line:"):
            line = line.split(":", 1)[1].strip()
            if line:
                return line
    return text.splitlines()[0] if text else "tshark failed"


def _is_cut_short(msg: str) -> bool:
    m = msg.lower()
    return "cut short" in m or "damaged or corrupt" in m or "truncated" in m


def _row_builder(cols, ts_ns, src, dst, fragmented, truncated, sack_perm):
    """Return ``row(pkt)``, appending one packet's values to the column lists.

    Reads the EK layer dicts pyshark parsed (``EkLayer._fields_dict``: tshark's own field values, as
    text) instead of ``layer.get_field()``, which looks every field up in the 10 MB type mapping; the
    values are the same, the loop is several times faster.
    """
    a = {name: cols[name].append for name in _INT_COLS}
    a_ts, a_src, a_dst = ts_ns.append, src.append, dst.append
    a_frag, a_trunc, a_sp = fragmented.append, truncated.append, sack_perm.append
    sack_le = [a[f"sack{i}_le"] for i in range(1, _NSACK + 1)]
    sack_re = [a[f"sack{i}_re"] for i in range(1, _NSACK + 1)]

    def row(pkt) -> None:
        fr = pkt.frame_info._fields_dict
        layers = {}
        for layer in pkt.layers:
            layers[layer._layer_name] = layer._fields_dict
        tcp = layers.get("tcp")
        if tcp is None:  # cannot happen with the display filter; be safe
            return
        tcp = _first(tcp)  # tunnels: the first (outer) TCP header, as tshark's tcp.* fields

        # link layer: VLAN tags in header order
        tags = []
        protos = fr.get("frame_frame_protocols", "").split(":")
        if "vlan" in layers or "ieee8021ad" in layers:
            queues = {"vlan": list(_as_list(layers.get("vlan"))),
                      "ieee8021ad": list(_as_list(layers.get("ieee8021ad")))}
            for p in protos:
                q = queues.get(p)
                if q:
                    d = q.pop(0)
                    tags.append(_opt_int(d, f"{p}_{p}_id"))

        # innermost IP header
        ipver = 0
        for p in reversed(protos):
            if p == "ip" and "ip" in layers:
                ipver = 4
                break
            if p == "ipv6" and "ipv6" in layers:
                ipver = 6
                break
        if ipver == 4:
            ip = _as_list(layers["ip"])[-1]
            a_src(ip.get("ip_ip_src", ""))
            a_dst(ip.get("ip_ip_dst", ""))
            a["ip_id"](_opt_int(ip, "ip_ip_id"))
            a["ttl"](_opt_int(ip, "ip_ip_ttl"))
            a_frag("ip_ip_fragment" in ip)
        elif ipver == 6:
            ip = _as_list(layers["ipv6"])[-1]
            a_src(_ip6_text(ip.get("ipv6_ipv6_src", "")))
            a_dst(_ip6_text(ip.get("ipv6_ipv6_dst", "")))
            frag = ip.get("ipv6_fraghdr")
            a["ip_id"](_opt_int(_first(frag), "ipv6_fraghdr_ipv6_fraghdr_ident") if frag else -1)
            a["ttl"](_opt_int(ip, "ipv6_ipv6_hlim"))
            a_frag("ipv6_ipv6_fragment" in ip)
        else:  # TCP without an IP layer tshark knows: keep the row, addresses unknown
            a_src("")
            a_dst("")
            a["ip_id"](-1)
            a["ttl"](-1)
            a_frag(False)
        a["ip_version"](ipver)

        a["frame"](int(fr["frame_frame_number"]))
        a_ts(_epoch_ns(fr["frame_frame_time_epoch"]))
        a["interface"](_opt_int(fr, "frame_frame_interface_id", 0))
        a["caplen"](_opt_int(fr, "frame_frame_cap_len", 0))
        a["wirelen"](_opt_int(fr, "frame_frame_len", 0))
        a["vlan"](tags[0] if tags else -1)
        a["vlan_inner"](tags[1] if len(tags) > 1 else -1)

        a["sport"](_opt_int(tcp, "tcp_tcp_srcport", 0))
        a["dport"](_opt_int(tcp, "tcp_tcp_dstport", 0))
        a["seq_raw"](_opt_int(tcp, "tcp_tcp_seq_raw", 0))
        a["ack_raw"](_opt_int(tcp, "tcp_tcp_ack_raw", 0))
        a["flags"](_opt_int(tcp, "tcp_tcp_flags", 0))  # 9 flag bits + the 3 reserved, as tshark
        a["window"](_opt_int(tcp, "tcp_tcp_window_size_value", 0))
        hlen = _opt_int(tcp, "tcp_tcp_hdr_len", 0)
        a["tcp_hlen"](hlen)
        plen = _opt_int(tcp, "tcp_tcp_len", -1)
        if plen < 0:  # header cut before tshark could work out the length
            a["payload_len"](0)
            a_trunc(True)
        else:
            a["payload_len"](plen)
            # the segment (options or payload) runs past the captured bytes
            a_trunc(_nbytes(tcp.get("tcp_tcp_payload")) < plen
                    or (hlen > 20 and _nbytes(tcp.get("tcp_tcp_options")) < hlen - 20))

        # options
        a["mss"](_opt_int(tcp, "tcp_tcp_options_mss_val"))
        a["wscale"](_opt_int(tcp, "tcp_tcp_options_wscale_shift"))
        a_sp("tcp_options_sack_perm" in tcp)
        les = _as_list(tcp.get("tcp_tcp_options_sack_le"))
        res = _as_list(tcp.get("tcp_tcp_options_sack_re"))
        n = min(len(les), len(res), _NSACK)
        a["sack_count"](n)
        for i in range(_NSACK):
            if i < n:
                sack_le[i](int(les[i]))
                sack_re[i](int(res[i]))
            else:
                sack_le[i](0)
                sack_re[i](0)
        a["tsval"](_opt_int(tcp, "tcp_tcp_options_timestamp_tsval"))
        a["tsecr"](_opt_int(tcp, "tcp_tcp_options_timestamp_tsecr"))
        tfo = _first(tcp.get("tcp_options_tfo"))
        if isinstance(tfo, str) and tfo.startswith("22:") and len(tfo) >= 5:
            a["tfo_cookie_len"](max(int(tfo[3:5], 16) - 2, 0))
        else:
            a["tfo_cookie_len"](-1)

    return row
