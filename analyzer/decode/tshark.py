"""The pyshark engine: the packet table from tshark's own dissectors, read through pyshark.

``read_packets_pyshark(path)`` returns the same table as the native reader (``analyzer.schema.PACKET_COLUMNS``:
same columns, order, dtypes and values), but every value comes from Wireshark's dissectors. It is the
cross-check for the native decoder and the engine behind ``--engine pyshark``.

How it runs tshark (through ``pyshark.FileCapture``)::

    tshark -l -n -T ek -Y 'tcp && !icmp && !icmpv6' -J 'frame vlan ieee8021ad ip ipv6 tcp'
           -o <pinned preferences, below> -r CAPTURE

- ``-T ek`` (pyshark ``use_ek=True``): one flat JSON object per packet, parsed by the C json module
  (pyshark's ``-T json`` mode parses through a Python duplicate-key hook and nests every subtree; its
  default PDML/XML mode is the 360 frames/s design.md quotes). Measured here: ~4,000-5,000 TCP frames/s
  plus ~0.2 s of tshark start-up per file.
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
  never through a float; ``ts`` is the double nearest to ``ts_ns / 10**9``.
- ``interface`` = frame.interface_id (0 when absent: pcap files); ``caplen``/``wirelen`` = frame.cap_len /
  frame.len.
- ``vlan``/``vlan_inner``: the first and second 802.1Q (``vlan``) or 802.1ad (``ieee8021ad``) tag in
  header order, -1 when absent.
- ``src``/``dst``/``ip_id``/``ttl``: from the IP header that carries the TCP header (the last ip/ipv6
  before tcp in frame.protocols: the inner one of IP-in-IP, which is what the truth CSVs show). IPv6
  addresses are written as Python's ``ipaddress`` prints them (tshark and Python agree except on
  IPv4-mapped addresses). ``ip_id`` is the IPv4 identification, or the IPv6 fragment header's
  identification when there is one (atomic fragments included), else -1. For a reassembled datagram
  these come from the header of the frame that completed it, as tshark shows them.
- ``fragmented``: tshark reassembled the datagram from two or more fragments (ip.fragment /
  ipv6.fragment present). An atomic IPv6 fragment (offset 0, M=0) is not reassembled: False.
- TCP fields are from the first TCP header of the frame: ports, tcp.seq_raw, tcp.ack_raw (whatever the
  ACK flag), tcp.flags (the 9 flag bits and the 3 reserved ones, as tshark prints it and as the native
  reader keeps them), tcp.window_size_value (raw, unscaled), tcp.hdr_len,
  tcp.len (from the IP length, so it holds for snaplen-cut frames).
- ``truncated``: the segment runs past the captured bytes: fewer payload bytes captured than tcp.len
  (tshark's ``tcp.payload`` holds the captured ones), or TCP options cut (tcp.options shorter than
  tcp.hdr_len - 20). Options cut by the snaplen are ignored whole (tshark shows a TSval without its
  TSecr, the first of three SACK blocks, ...), as the native reader does.
- Frames with no whole segment get no row (as in the native reader): fewer than the 20 fixed TCP header
  bytes captured, or an IP fragment tshark did not reassemble but dissected alone (cut by the snaplen).
- Options: mss = tcp.options.mss_val, wscale = tcp.options.wscale.shift, sack_permitted = the SACK-
  permitted option is present, sack blocks = tcp.options.sack_le/re (raw, first four blocks),
  tsval/tsecr = tcp.options.timestamp.tsval/tsecr (absent, hence -1, when tshark rejects the option, e.g.
  a wrong option length), tfo_cookie_len = length of option kind 34 minus 2 (0 = cookie request).

tshark is not found: ``EngineUnavailable`` naming the fix (``apt-get install tshark``). A file tshark
cannot read at all: ``CaptureError``. A file damaged part-way: the rows before the damage are returned
and ``df.attrs["problems"]`` carries tshark's one-line complaint. ``df.attrs["stats"]`` counts rows and
skipped frames by reason (the native reader's wording).
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
from ..errors import AnalyzerError, CaptureError, EngineUnavailable
from ..table import seconds

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
# The values ``_packet_row`` returns, in this order: every packet column except ``ts`` (the double nearest to ts_ns / 10**9).
ROW_FIELDS = tuple(c.name for c in schema.PACKET_COLUMNS if c.name != "ts")
_ROW_ORDER = ("frame", "ts_ns", "interface", "vlan", "vlan_inner", "ip_version", "src", "dst", "ip_id", "ttl",
              "fragmented", "sport", "dport", "seq_raw", "ack_raw", "flags", "window", "tcp_hlen",
              "payload_len", "caplen", "wirelen", "truncated", "mss", "wscale", "sack_permitted",
              "sack_count", *[f"sack{i}_{e}" for i in range(1, _NSACK + 1) for e in ("le", "re")],
              "tsval", "tsecr", "tfo_cookie_len")  # the tuple _packet_row builds


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


# option (EK key of its raw bytes) -> the EK keys of the values we read from it
_OPTION_FIELDS = {
    "tcp_options_mss": ("tcp_tcp_options_mss_val",),
    "tcp_options_wscale": ("tcp_tcp_options_wscale_shift",),
    "tcp_options_sack": ("tcp_tcp_options_sack_le", "tcp_tcp_options_sack_re"),
    "tcp_options_timestamp": ("tcp_tcp_options_timestamp_tsval", "tcp_tcp_options_timestamp_tsecr"),
}


def _nth_layer(layers: dict, name: str, n: int) -> dict:
    got = _as_list(layers.get(name))
    if not got:
        return {}
    d = got[min(n, len(got) - 1)]
    return d if isinstance(d, dict) else {}


def _whole(raw) -> bool:
    """Is this option ('kk:ll:...', tshark's bytes of one option) captured up to its length byte's end?"""
    raw = _first(raw)
    if not isinstance(raw, str) or len(raw) < 5:
        return True  # one-byte options (NOP, EOL)
    try:
        return _nbytes(raw) >= int(raw[3:5], 16)
    except ValueError:
        return False


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


@functools.lru_cache(maxsize=1)
def _capture_class():
    import pyshark

    class _FileCapture(pyshark.FileCapture):
        """pyshark's FileCapture with three changes.

        - ``tshark -v`` is asked once per process, not once per file (it costs as much as a small file).
        - The EK type mapping is not loaded (below).
        - At end of file pyshark kills tshark if asyncio has not yet recorded its exit; the kill reaps
          the process behind the child watcher's back, and the exit status is lost (asyncio reports 255,
          "Unknown child process"). tshark has closed its stdout by then and is exiting: wait for it
          (briefly), so that its real exit status (a damaged file: 2) reaches close().
        """

        def _get_tshark_version(self):
            return _tshark_version(self._get_tshark_path())

        def _setup_tshark_output_parser(self):
            # The EK parser as pyshark makes it, minus the load of its field-type mapping (tshark -G
            # elastic-mapping: 10 MB cached under ~/.cache, +85 MB RSS, 0.25 s a process). The mapping
            # only serves EkLayer.get_field(), which this engine does not call (see _packet_row).
            from pyshark.tshark.output_parser import tshark_ek

            return tshark_ek.TsharkEkJsonParser()

        async def _cleanup_subprocess(self, process):
            if process.returncode is None and getattr(self, "_eof_reached", False):
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except asyncio.TimeoutError:
                    pass
            await super()._cleanup_subprocess(process)

    return _FileCapture


def read_packets_pyshark(path, tshark_path: str | None = None) -> pd.DataFrame:
    """Read ``path`` with tshark (through pyshark) into the packet table (``schema.PACKET_COLUMNS``)."""
    path = os.fspath(path)
    exe = _tshark_path(tshark_path)
    if not os.path.exists(path):
        raise CaptureError(path, None, "no such file")
    if not os.path.isfile(path):
        raise CaptureError(path, None, "not a file")
    if ROW_FIELDS != _ROW_ORDER:
        raise AnalyzerError("the pyshark engine is out of date with schema.PACKET_COLUMNS "
                            f"(columns {sorted(set(ROW_FIELDS) ^ set(_ROW_ORDER))})")
    # pyshark drives an asyncio loop with run_until_complete: that cannot run inside a running loop
    # (Jupyter, an async app), and on the main thread pyshark wants the thread's current loop, which
    # asyncio.run() leaves unset. So it always runs on a short-lived worker thread with a private loop.
    _use_threaded_child_watcher()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyshark") as pool:
        return pool.submit(_read, path, exe).result()


def _use_threaded_child_watcher() -> None:
    """asyncio subprocesses started off the main thread need a thread-safe child watcher (Python < 3.12).

    pyshark, when used on the main thread, installs a SafeChildWatcher bound to the main thread's loop;
    asyncio would then not see the exit of a tshark started from our worker thread (no exit status,
    "Unknown child process" warnings). ThreadedChildWatcher (the default since Python 3.8) works for
    every thread and loop.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        get = getattr(asyncio, "get_child_watcher", None)
        threaded = getattr(asyncio, "ThreadedChildWatcher", None)
        if get is None or threaded is None:  # Python 3.14+: no child watchers any more
            return
        try:
            current = get()
        except Exception:  # noqa: BLE001
            current = None
        if not isinstance(current, (threaded, getattr(asyncio, "PidfdChildWatcher", threaded))):
            asyncio.set_child_watcher(threaded())


def _read(path: str, exe: str) -> pd.DataFrame:
    """Run tshark through pyshark on this (worker) thread, with a private event loop."""
    from pyshark.capture.capture import TSharkCrashException

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # this thread only: pyshark schedules its stderr reader on it
    rows: list[tuple] = []
    chunks: list[dict] = []
    problems: list[str] = []
    skipped: dict[str, int] = {}
    cap = None
    try:
        cap = _capture_class()(
            path, display_filter=DISPLAY_FILTER, keep_packets=False, use_ek=True, tshark_path=exe,
            override_prefs=PREFS, custom_parameters=["-J", PROTOCOL_FILTER], eventloop=loop,
        )
        try:
            append = rows.append
            for pkt in cap:
                r = _packet_row(pkt)
                if r.__class__ is tuple:
                    append(r)
                    if len(rows) >= _CHUNK:  # tuples -> arrays now and then: memory stays ~60 B/row
                        chunks.append(_to_columns(rows))
                        rows.clear()
                else:
                    skipped[r] = skipped.get(r, 0) + 1
            # tshark has closed its stdout; let pyshark's stderr reader take in tshark's last words,
            # then close(), which raises TSharkCrashException when tshark exited with an error.
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=5))
            cap.close()
        except TSharkCrashException as exc:
            msg = _tshark_complaint(str(exc))
            if not rows and not chunks and not _is_cut_short(msg):
                raise CaptureError(path, None, f"tshark cannot read it: {msg}") from None
            problems.append(f"{path}: tshark stopped early: {msg}")
    finally:
        if cap is not None:
            # pyshark keeps a process it failed to close in this set and retries from __del__, on a
            # closed loop by then; the process has exited (or was killed) already.
            getattr(cap, "_running_processes", set()).clear()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()

    if rows:
        chunks.append(_to_columns(rows))
    stats = {"engine": "pyshark", "tcp_segments": sum(len(c["frame"]) for c in chunks),
             "skipped": skipped, "problems": problems}
    if not chunks:
        df = schema.empty_frame(schema.PACKET_COLUMNS)
        df.attrs["stats"] = stats
        df.attrs["problems"] = problems
        return df
    data: dict[str, object] = {}
    for name in ROW_FIELDS:
        parts = [c[name] for c in chunks]
        col = parts[0] if len(parts) == 1 else np.concatenate(parts)
        data[name] = pd.Categorical(col) if _DTYPES[name] == "category" else col
    data["ts"] = seconds(data["ts_ns"])
    df = schema.conform(pd.DataFrame(data), schema.PACKET_COLUMNS)
    df.attrs["stats"] = stats
    df.attrs["problems"] = problems
    return df


_CHUNK = 65536
_DTYPES = {c.name: c.dtype for c in schema.PACKET_COLUMNS}


def _to_columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    out = {}
    n = len(rows)
    for name, values in zip(ROW_FIELDS, zip(*rows)):
        dt = _DTYPES[name]
        if dt == "category":
            out[name] = np.asarray(values, dtype=object)
        elif dt == "bool":
            out[name] = np.fromiter(values, dtype=bool, count=n)
        else:  # through int64: raw 32-bit values and -1 sentinels both fit, then the declared width
            out[name] = np.fromiter(values, dtype=np.int64, count=n).astype(dt)
    return out


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


SKIP_CUT_HEADER = "frame ends before the TCP header does (snaplen or damage)"
SKIP_FRAGMENT = "IP fragments that could not be reassembled (cut or malformed)"


def _packet_row(pkt) -> tuple | str:
    """One packet's values in ``ROW_FIELDS`` order, or why the frame holds no whole TCP segment.

    Reads the EK layer dicts pyshark parsed (``EkLayer._fields_dict``: tshark's field values as text)
    rather than ``layer.get_field()``, which casts each value through pyshark's 10 MB type mapping:
    the values are the same text tshark printed, the loop is several times faster, and the mapping
    need not be loaded at all.
    """
    fr = pkt.frame_info._fields_dict
    layers = {layer._layer_name: layer._fields_dict for layer in pkt.layers}
    tcp = layers.get("tcp")
    if tcp is None:  # not with our display filter; be safe
        return "no TCP layer"
    tcp = _first(tcp)  # tunnels: the first TCP header, as tshark's tcp.* fields
    protos = fr.get("frame_frame_protocols", "").split(":")

    # link layer: VLAN tags in header order (802.1Q "vlan" and 802.1ad "ieee8021ad" dissectors)
    vlan = vlan_inner = -1
    if "vlan" in layers or "ieee8021ad" in layers:
        queues = {"vlan": list(_as_list(layers.get("vlan"))),
                  "ieee8021ad": list(_as_list(layers.get("ieee8021ad")))}
        tags = []
        for p in protos:
            q = queues.get(p)
            if q:
                tags.append(_opt_int(q.pop(0), f"{p}_{p}_id"))
        if tags:
            vlan = tags[0]
            if len(tags) > 1:
                vlan_inner = tags[1]

    # the IP header that carries the (first) TCP header: the last ip/ipv6 before "tcp" in the frame's
    # protocol chain (tunnelled IP-in-IP: the inner one; anything inside the TCP payload: ignored)
    ipver, nth = 0, {"ip": -1, "ipv6": -1}
    for p in protos:
        if p == "tcp":
            break
        if p in nth:
            nth[p] += 1
            ipver = 4 if p == "ip" else 6
    if ipver == 4:
        ip = _nth_layer(layers, "ip", nth["ip"])
        fragmented = "ip_ip_fragment" in ip
        if not fragmented and (ip.get("ip_ip_flags_mf") is True or _opt_int(ip, "ip_ip_frag_offset", 0)):
            # A fragment tshark did not reassemble (cut by the snaplen, or the rest never came) and
            # dissected on its own: not a whole segment. The native reader skips it too.
            return SKIP_FRAGMENT
        src = ip.get("ip_ip_src", "")
        dst = ip.get("ip_ip_dst", "")
        ip_id = _opt_int(ip, "ip_ip_id")
        ttl = _opt_int(ip, "ip_ip_ttl")
    elif ipver == 6:
        ip = _nth_layer(layers, "ipv6", nth["ipv6"])
        fragmented = "ipv6_ipv6_fragment" in ip
        frag = _first(ip.get("ipv6_fraghdr"))
        if not isinstance(frag, dict):
            frag = None
        if frag and not fragmented and (frag.get("ipv6_fraghdr_ipv6_fraghdr_more") is True
                                        or _opt_int(frag, "ipv6_fraghdr_ipv6_fraghdr_offset", 0)):
            return SKIP_FRAGMENT  # an IPv6 fragment tshark did not reassemble (atomic ones are kept)
        src = _ip6_text(ip.get("ipv6_ipv6_src", ""))
        dst = _ip6_text(ip.get("ipv6_ipv6_dst", ""))
        ip_id = _opt_int(frag, "ipv6_fraghdr_ipv6_fraghdr_ident") if frag else -1
        ttl = _opt_int(ip, "ipv6_ipv6_hlim")
    else:  # TCP under no IP layer tshark knows: keep the row, addresses unknown
        src = dst = ""
        ip_id = ttl = -1
        fragmented = False

    if "tcp_tcp_urgent_pointer" not in tcp or "tcp_tcp_len" not in tcp:
        # Fewer than the 20 fixed header bytes were captured: tshark shows what it could read (the
        # ports, perhaps); there is no segment to report. The native reader skips these frames too.
        return SKIP_CUT_HEADER

    hlen = _opt_int(tcp, "tcp_tcp_hdr_len", 0)
    plen = _opt_int(tcp, "tcp_tcp_len", 0)
    options_cut = hlen > 20 and _nbytes(tcp.get("tcp_tcp_options")) < hlen - 20
    # the segment (options or payload) runs past the captured bytes
    truncated = options_cut or _nbytes(tcp.get("tcp_tcp_payload")) < plen
    if options_cut:
        # tshark shows what it could read of an option the snaplen cut (a TSval without its TSecr, the
        # first SACK block of three); like the native reader, count only options captured whole.
        tcp = {k: v for k, v in tcp.items() if not (k.startswith("tcp_options_") and not _whole(v))}
        for opt, fields in _OPTION_FIELDS.items():
            if opt not in tcp:
                for f in fields:
                    tcp.pop(f, None)

    les = _as_list(tcp.get("tcp_tcp_options_sack_le"))
    res = _as_list(tcp.get("tcp_tcp_options_sack_re"))
    nsack = min(len(les), len(res), _NSACK)
    sack = []
    for i in range(_NSACK):
        if i < nsack:
            sack += (int(les[i]), int(res[i]))
        else:
            sack += (0, 0)
    tfo = _first(tcp.get("tcp_options_tfo"))
    if isinstance(tfo, str) and tfo.startswith("22:") and len(tfo) >= 5:  # kind 34; length - 2
        tfo_len = max(int(tfo[3:5], 16) - 2, 0)
    else:
        tfo_len = -1

    return (
        int(fr["frame_frame_number"]),
        _epoch_ns(fr["frame_frame_time_epoch"]),
        _opt_int(fr, "frame_frame_interface_id", 0),
        vlan, vlan_inner, ipver, src, dst, ip_id, ttl, fragmented,
        _opt_int(tcp, "tcp_tcp_srcport", 0),
        _opt_int(tcp, "tcp_tcp_dstport", 0),
        _opt_int(tcp, "tcp_tcp_seq_raw", 0),
        _opt_int(tcp, "tcp_tcp_ack_raw", 0),
        _opt_int(tcp, "tcp_tcp_flags", 0),  # the 9 flag bits and the 3 reserved ones, as tshark
        _opt_int(tcp, "tcp_tcp_window_size_value", 0),
        hlen, plen,
        _opt_int(fr, "frame_frame_cap_len", 0),
        _opt_int(fr, "frame_frame_len", 0),
        truncated,
        _opt_int(tcp, "tcp_tcp_options_mss_val"),
        _opt_int(tcp, "tcp_tcp_options_wscale_shift"),
        "tcp_options_sack_perm" in tcp,
        nsack, *sack,
        _opt_int(tcp, "tcp_tcp_options_timestamp_tsval"),
        _opt_int(tcp, "tcp_tcp_options_timestamp_tsecr"),
        tfo_len,
    )
