"""The 20 verification scenarios of tcp-analysis-reference.md section (f), each built packet by packet,
then a few more (21-25: repeated FINs, a SYN-ACK answering a repeated SYN, D-SACK and Eifel evidence).

Client 10.0.0.1:40000, server 10.0.0.2:15001; SYN at t0, SYN-ACK +10 ms, ACK +2 ms; data segments
1000 bytes. Every test asserts the exact retransmission rows (frame, kind, original frame, overlap)
and the handshake / connection facts the scenario is about. ``SCENARIOS`` is reused by the batch and
tshark cross-check tests.
"""
from __future__ import annotations

import pytest

from tests.tcpbuild import MS, SYN_OPTIONS, Capture, rows

RX = ("frame", "kind", "original_frame", "overlap_bytes")


def s01_normal():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS); f.s("A", dt=MS); f.s("PA", 1000, dt=MS); f.c("A", dt=MS)
    f.close()
    return cap


def s02_rto():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                           # frame 4
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)    # frame 5: same segment 300 ms later
    f.s("A", dt=MS); f.close()
    return cap


def s03_fast():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                           # 4: seq 1
    f.ends["c"][3] += 1000                           # seq 1001 is lost before the capture point
    f.c("PA", 1000, dt=MS)                           # 5: seq 2001 (previous segment not captured)
    f.c("PA", 1000, dt=MS)                           # 6: seq 3001
    for hi in (3001, 4001, 4001):                    # 7, 8, 9: ACK 1001 with SACK, then 2 dup ACKs
        f.s("A", dt=0.2 * MS, ack=1001, options=[("NOP", None), ("NOP", None),
                                                 ("SAck", (f.ends["c"][2] + 2001, f.ends["c"][2] + hi))])
    f.c("PA", 1000, dt=0.5 * MS, seq=1001, advance=False)   # 10: resend within 1 ms
    f.s("A", dt=MS); f.close()
    return cap


def s04_spurious():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                           # 4
    f.s("A", dt=MS)                                  # 5: ACK covers it
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)    # 6: resent anyway
    f.s("A", dt=MS); f.close()
    return cap


def s05_out_of_order():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS, seq=1001, ipid=103)       # 4: seg 2 first
    f.c("PA", 1000, dt=0.5 * MS, seq=1, ipid=102)    # 5: seg 1, 0.5 ms later: sent first (lower IP ID)
    f.s("A", dt=MS); f.close()
    return cap


def s06_syn_retry():
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)])                # 1
    f.c("S", dt=1.0, options=[("MSS", 1460)])        # 2: same ISN after 1 s
    f.s("SA", dt=10 * MS, options=[("MSS", 1460)])   # 3
    f.c("A", dt=2 * MS)                              # 4
    f.close()
    return cap


def s07_refused():
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)])
    f.s("RA", dt=0.1 * MS, seq=1)
    return cap


def s08_port_reuse():
    cap = Capture(); f = cap.flow()
    f.handshake(); f.c("PA", 100, dt=MS); f.s("PA", 100, dt=MS); f.close()
    g = cap.flow(isn_c=900_000, isn_s=700_000)       # same 4-tuple, new ISNs, 5 s later
    g.handshake(dt=5.0); g.c("PA", 100, dt=MS); g.s("PA", 100, dt=MS); g.close()
    return cap


def s09_keepalive():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS); f.s("A", dt=MS)
    f.c("A", dt=1.0, seq=1000, advance=False)                    # 0-byte keep-alive at next-1
    f.s("A", dt=MS)
    f.c("A", 1, dt=1.0, seq=1000, advance=False)                 # 1-byte keep-alive
    f.s("A", dt=MS)
    f.close()
    return cap


def s10_zero_window():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS); f.s("A", dt=MS, win=0)              # 5: receiver window 0
    f.c("PA", 1, dt=0.2, advance=False)                         # 6: 1-byte probe at next
    f.s("A", dt=MS, win=0)                                      # 7: probe ACK, still 0
    f.s("A", dt=0.1, win=4000)                                  # 8: window update
    f.c("PA", 1000, dt=MS)                                      # 9: data resumes at the probe's byte
    f.s("A", dt=MS); f.close()
    return cap


def s11_wraparound():
    cap = Capture(); f = cap.flow(isn_c=2**32 - 1501)
    f.handshake()
    f.c("PA", 1000, dt=MS); f.c("PA", 1000, dt=MS)              # 4, 5: the second crosses 2**32
    f.s("A", dt=MS)                                             # 6: ACK 2001
    f.c("PA", 1000, dt=0.3, seq=1001, advance=False)            # 7: late resend, already ACKed
    f.c("PA", 1000, dt=MS)                                      # 8: new data after the wrap
    f.c("PA", 1000, dt=0.3, seq=2001, advance=False)            # 9: timeout resend of 8
    f.s("A", dt=MS); f.close()
    return cap


def s12_midstream():
    cap = Capture(); f = cap.flow()
    f.ends["c"][3] = f.ends["s"][3] = 50_001
    f.c("PA", 1000); f.s("A", dt=MS); f.s("PA", 500, dt=MS); f.c("A", dt=MS)
    return cap


def s13_tfo():
    cap = Capture(); f = cap.flow()
    f.c("S", 18, options=[("MSS", 1460), ("TFO", b"\x01" * 8)])
    f.s("SA", dt=10 * MS, options=[("MSS", 1460)])
    f.c("A", dt=2 * MS)
    f.s("PA", 100, dt=MS); f.c("A", dt=MS)
    f.close()
    return cap


def s14_simultaneous_open():
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)])
    f.s("S", dt=0.1 * MS, options=[("MSS", 1460)])
    f.c("SA", dt=MS, seq=0, ack=1, options=[("MSS", 1460)])
    f.s("SA", dt=MS, seq=0, ack=1, options=[("MSS", 1460)])
    f.c("PA", 100, dt=MS); f.s("PA", 100, dt=MS)
    return cap


def s15_duplicate():
    cap = Capture(); f = cap.flow()
    f.handshake()
    data = f.c("PA", 1000, dt=MS)                               # 4
    cap.duplicate(data, dt=5e-6)                                # 5: the same frame again, 5 us later
    f.s("A", dt=MS); f.close()
    return cap


def s16_truncated():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS, caplen=96)                           # only 96 of 1054+ bytes captured
    f.s("A", dt=MS); f.close()
    return cap


def s17_tso():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 8760, dt=MS); f.s("A", dt=MS); f.close()
    return cap


def s18_syn_and_synack_retry():
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)])                           # 1: t0
    f.s("SA", dt=10 * MS, options=[("MSS", 1460)])              # 2: t0+10 ms (lost on the way back)
    f.c("S", dt=1.0, options=[("MSS", 1460)])                   # 3: t0+1.010
    f.s("SA", dt=1 * MS, options=[("MSS", 1460)])               # 4: t0+1.011
    f.c("A", dt=2 * MS)                                         # 5: t0+1.013
    f.close()
    return cap


def s19_repacketised():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                                      # 4: bytes 1-1000
    f.c("PA", 1500, dt=0.3, seq=1)                              # 5: 1000 old + 500 new
    f.s("A", dt=MS); f.close()
    return cap


def s20_no_reply():
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)]); f.c("S", dt=1.0); f.c("S", dt=2.0)
    return cap


# ---- beyond section (f): FIN repeats, a SYN-ACK answering a repeated SYN, D-SACK and Eifel ------------
def s21_fin_retransmission():
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 100, dt=MS); f.s("A", dt=MS)           # 4, 5
    f.c("FA", dt=MS)                                 # 6: FIN (seq 101), its ACK never comes
    f.c("FA", dt=0.2, seq=101, advance=False)        # 7: the same FIN 200 ms later
    f.s("A", dt=MS)                                  # 8: ACK 102
    return cap


def s22_synack_answers_repeated_syn():
    """A real case once taken for a duplicate: the server's timer resends its SYN-ACK, the client repeats
    its SYN, the server answers it 45 us after its own resend. Linux sends SYN-ACKs with IP ID 0 (DF)
    and a ms TSval clock, so both SYN-ACKs carry the same ID and TSval."""
    cap = Capture(); f = cap.flow()
    syn = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]
    synack = lambda tsval: [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (tsval, 1000)), ("NOP", None),  # noqa
                            ("WScale", 7)]
    f.c("S", options=syn)                            # 1
    f.s("SA", dt=10 * MS, ipid=0, options=synack(5000))           # 2: lost on the way to the client
    f.s("SA", dt=1.0, ipid=0, options=synack(6010))               # 3: the server's timer, 1 s later
    f.c("S", dt=20e-6, options=syn)                               # 4: the client's timer: SYN again
    f.s("SA", dt=25e-6, ipid=0, options=synack(6010))             # 5: answers 4, 45 us after 3
    f.c("A", dt=2 * MS)                                           # 6
    return cap


def s23_dsack_fin():
    """A tail-loss probe repeats the FIN; the peer's ACK reports it with a D-SACK (SLE=FIN, SRE=FIN+1)."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 100, dt=MS); f.s("A", dt=MS)           # 4, 5
    f.c("FA", dt=MS)                                 # 6: FIN at seq 101; its ACK is lost
    f.c("FA", dt=20 * MS, seq=101, advance=False)    # 7: the probe repeats it
    isn = f.ends["c"][2]
    f.s("A", dt=MS, ack=102, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 101, isn + 102))])  # 8
    return cap


def s24_dsack_data():
    """A timeout resend of data, then a D-SACK for it inside the cumulative ACK."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                           # 4
    f.c("PA", 1000, dt=MS)                           # 5
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)    # 6: resent; the ACKs were lost
    isn = f.ends["c"][2]
    f.s("A", dt=MS, ack=2001, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 1, isn + 1001))])  # 7
    f.close()
    return cap


def s25_eifel():
    """A timeout resend (TSval 300 ms later), then the first ACK covering it echoes the original's TSval."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS, options=[("NOP", None), ("NOP", None), ("Timestamp", (7000, 900))])     # 4
    f.c("PA", 1000, dt=0.3, seq=1, advance=False,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (7300, 900))])                         # 5
    f.s("A", dt=MS, options=[("NOP", None), ("NOP", None), ("Timestamp", (1200, 7000))])          # 6
    f.c("PA", 1000, dt=MS, options=[("NOP", None), ("NOP", None), ("Timestamp", (7302, 1200))])  # 7
    f.c("PA", 1000, dt=0.3, seq=1001, advance=False,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (7600, 1200))])                        # 8: needed
    f.s("A", dt=MS, options=[("NOP", None), ("NOP", None), ("Timestamp", (1500, 7600))])          # 9
    return cap


# ---- issue 12: engine bugs found on real captures (a-e) -------------------------------------------------
def s26_synack_new_isn():
    """(a) The client resets its first attempt, tries again with the same ISN; the server answers with a
    new ISN: its direction starts over (tshark: no flag on the SYN-ACK, seq 0 again)."""
    cap = Capture(); f = cap.flow()
    f.c("S", options=SYN_OPTIONS)                    # 1: SYN, ISN 1000
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS)       # 2: SYN-ACK, ISN 5000
    f.c("R", dt=MS, seq=1, ack=0)                    # 3: the client aborts that attempt
    f.c("S", dt=1.0, options=SYN_OPTIONS)            # 4: SYN again, same ISN
    f.ends["s"][2], f.ends["s"][3] = 900_000, 1      # the server picks a new ISN
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS)       # 5: SYN-ACK, ISN 900000
    f.c("A", dt=2 * MS)                              # 6
    f.c("PA", 100, dt=MS)                            # 7
    f.s("PA", 200, dt=10 * MS)                       # 8
    f.s("PA", 200, dt=MS)                            # 9
    f.c("A", dt=5 * MS)                              # 10
    return cap


def s27_refused_then_retried():
    """(b) A SYN refused by a RST, then retried on the same 4-tuple and ISN, and accepted."""
    cap = Capture(); f = cap.flow()
    f.c("S", options=SYN_OPTIONS)                    # 1
    f.s("RA", dt=0.1 * MS, seq=1)                    # 2: refused
    f.c("S", dt=1.0, options=SYN_OPTIONS)            # 3: the same SYN 1 s later
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS)       # 4
    f.c("A", dt=2 * MS)                              # 5
    f.c("PA", 100, dt=MS); f.s("A", dt=MS)           # 6, 7
    return cap


def s28_stale_rst():
    """(c) The SYN-ACK acknowledges a stale number; the client answers with a RST whose seq is that stale
    ACK value (RFC 9293 3.10.7.3), then retries: the RST must not move the client's highest byte."""
    cap = Capture(); f = cap.flow()
    f.c("S", options=SYN_OPTIONS)                                   # 1
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS, ack=700_000)         # 2: ACKs a stale number
    f.c("R", dt=MS, seq=700_000, ack=0, advance=False)              # 3: RST at that number
    f.c("S", dt=1.0, options=SYN_OPTIONS)                           # 4: SYN again
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS)                      # 5: the proper SYN-ACK
    f.c("A", dt=2 * MS)                                             # 6
    f.c("PA", 100, dt=MS); f.c("PA", 100, dt=MS)                    # 7, 8: first data, not resends
    f.s("A", dt=5 * MS)                                             # 9
    return cap


def s29_clock_backwards():
    """(d) The capture's clock steps back 0.5 ms before a segment that fills a hole: Wireshark's unsigned
    time difference makes it a retransmission, and our reason says the clock went backwards."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1, IP ID 102
    f.ends["c"][3] += 1000; f.ends["c"][4] += 1                     # seq 1001 (IP ID 103) lost upstream
    f.c("PA", 1000, dt=MS)                                          # 5: seq 2001, IP ID 104
    f.c("PA", 1000, dt=-0.5 * MS, seq=1001, advance=False)          # 6: seq 1001, IP ID 105, clock back
    f.s("A", dt=MS)
    return cap


def s30_irtt_packet():
    """(e) The packet that completes the handshake (and so sets Wireshark's iRTT) is itself below the
    highest byte: it is judged with the 3 ms out-of-order threshold, the iRTT not being known yet."""
    cap = Capture(); f = cap.flow()
    f.c("S", options=SYN_OPTIONS)                                   # 1
    f.s("SA", dt=10 * MS, options=SYN_OPTIONS)                      # 2
    f.c("P", 1000, dt=10 * MS, seq=1001)                            # 3: data without ACK (sets the top)
    f.c("PA", 1000, dt=5 * MS, seq=1)                               # 4: first ACK (iRTT 25 ms), 5 ms later
    f.s("A", dt=MS)
    return cap


# ---- issue 12: more evidence than timing ----------------------------------------------------------------
def s31_pure_ack_shows_the_top():
    """A client data segment is lost before the capture point; the client's next pure ACK carries seq 2001
    (its next byte), so the later resend of 1001 is a resend of bytes never captured."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1
    f.ends["c"][3] += 1000; f.ends["c"][4] += 1                     # seq 1001 lost upstream
    f.s("PA", 100, dt=MS, ack=1001)                                 # 5: server data, ACK 1001
    f.c("A", dt=MS)                                                 # 6: pure ACK, seq 2001
    f.c("PA", 1000, dt=0.3, seq=1001, advance=False)                # 7: the resend, 300 ms later
    f.s("A", dt=MS)
    return cap


def s32_tail_loss_by_ip_id():
    """The client's last segment is lost before the capture point (nothing after it): the resend arrives in
    order, but its IP ID skips one while the server had nothing to answer: a tail-loss resend."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(16):                                             # 4-35: 16 requests and their ACKs: the
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)                     # client's IP IDs step by one (102-117)
    f.c("PA", 1000, dt=MS)                                          # 36: seq 16001, IP ID 118
    f.s("A", dt=MS)                                                 # 37: ACK 17001
    f.ends["c"][4] += 1                                             # IP ID 119: seq 17001 sent, lost upstream
    f.c("PA", 1000, dt=0.3)                                         # 38: seq 17001, IP ID 120, 300 ms later
    f.s("A", dt=MS)
    return cap


def s33_ip_id_gap_with_data_to_answer():
    """The same IP ID gap, but the server had sent data the client had not acknowledged: the missing packet
    may be the ACK of it, so the in-order segment is not called a resend."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(16):
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)                     # 4-35
    f.c("PA", 1000, dt=MS)                                          # 36: IP ID 118
    f.s("PA", 100, dt=MS)                                           # 37: server data, not acknowledged here
    f.ends["c"][4] += 1                                             # IP ID 119 not captured
    f.c("PA", 1000, dt=0.3)                                         # 38: IP ID 120, ACKs the server's data
    f.s("A", dt=MS)
    return cap


def s39_ip_id_gap_of_a_per_host_counter():
    """The same tail-loss picture, but the client's IP IDs skip values all along (a per-host counter, as
    Windows keeps, shared with its other connections): a skipped ID says nothing about this connection."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for k in range(16):
        f.ends["c"][4] += 1 + k % 3                                 # other connections' packets in between
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)
    f.c("PA", 1000, dt=MS)
    f.s("A", dt=MS)
    f.ends["c"][4] += 1
    f.c("PA", 1000, dt=0.3)                                         # in order: no resend we can tell
    f.s("A", dt=MS)
    return cap


def _client_ids_skip_after(last, dt):
    """Captured on the sending host: 16 full-size segments (1460 bytes) with their ACKs, then segments of
    sizes ``last``, after which the client's IP IDs skip one; the server acknowledges everything at once and
    the client's next segment, new data in order, follows ``dt`` s later."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(16):
        f.c("PA", 1460, dt=MS); f.s("A", dt=MS)                     # 4-35: IP IDs step by one
    for size in last:
        f.c("PA", size, dt=MS)
    f.ends["c"][4] += 1                                             # an IP ID no captured packet has
    f.s("A", dt=0.05 * MS)                                          # ACK of everything
    f.c("PA", 1000, dt=dt)                                          # new data in order
    f.s("A", dt=MS)
    return cap


def _offload_packet_then_new_data(dt):
    """A TSO/GSO packet carrying two segments' bytes (frame 36), which takes two IP IDs (one per segment cut
    on the wire), then new data ``dt`` s after the ACK: the skipped ID is the offload packet's own."""
    return _client_ids_skip_after((2920,), dt)


def s40_ip_ids_of_a_segmentation_offload_packet():
    """The next segment 0.1 ms after the offload packet: no stack resends unasked that soon."""
    return _offload_packet_then_new_data(0.05 * MS)


def s41_ip_ids_of_an_offload_packet_then_a_pause():
    """The next segment 300 ms after the offload packet, as late as a timeout resend would be: but the
    offload packet, bigger than any packet shown to be one segment, may have taken the skipped ID."""
    return _offload_packet_then_new_data(0.3)


def s42_hole_fill_sent_after_the_segment_above():
    """IPv6 (no IP ID): seq 1001 is lost before the capture point; the client sends new data, and 50 µs later
    the hole's resend, both in the same TSval tick, well within the RTT of the highest segment: timing alone
    says reordering. But its TSval is newer than that of the segment above the hole (seq 2001), which the
    client sent after the hole's original: this copy is no original."""
    cap = Capture(); f = cap.flow(v6=True)
    f.handshake()
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1
    f.ends["c"][3] += 1000                                          # seq 1001 lost before the capture point
    f.c("PA", 1000, dt=0.1 * MS)                                    # 5: seq 2001
    f.c("PA", 1000, dt=0.1 * MS)                                    # 6: seq 3001
    for hi in (3001, 4001, 4001):                                   # 7, 8, 9: ACK 1001 with SACK
        f.s("A", dt=2 * MS, ack=1001, options=[("NOP", None), ("NOP", None),
                                               ("SAck", (f.ends["c"][2] + 2001, f.ends["c"][2] + hi))])
    f.c("PA", 1000, dt=2.2 * MS)                                    # 10: seq 4001, new data
    f.c("PA", 1000, dt=0.05 * MS, seq=1001, advance=False)          # 11: the resend, same TSval as 10
    f.s("A", dt=MS); f.close()
    return cap


def s43_late_original_sent_before_the_segment_above():
    """The same picture, but the hole's bytes come with a TSval older than the segment above it: the
    original, delayed in the network (and no loss signal makes it a resend)."""
    cap = Capture(); f = cap.flow(v6=True)
    f.handshake()
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1
    sent = int(round(cap.t * 1000)) & 0xFFFFFFFF                    # seq 1001 sent now (this TSval), delayed
    f.ends["c"][3] += 1000
    f.c("PA", 1000, dt=2 * MS)                                      # 5: seq 2001, 2 ms later (TSval + 2)
    f.c("PA", 1000, dt=0.5 * MS)                                    # 6: seq 3001
    f.c("PA", 1000, dt=0.05 * MS, seq=1001, advance=False,          # 7: seq 1001 at last
        options=[("NOP", None), ("NOP", None), ("Timestamp", (sent, 0))])
    f.s("A", dt=MS); f.close()
    return cap


def s44_tail_loss_of_a_fin():
    """s32 with the FIN lost before the capture point: its resend, a timeout later, is a tail loss too."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(16):
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)                     # 4-35
    f.c("PA", 1000, dt=MS)                                          # 36: IP ID 118
    f.s("A", dt=MS)                                                 # 37: ACK of everything
    f.ends["c"][4] += 1                                             # IP ID 119: the FIN, lost upstream
    f.c("FA", dt=0.3)                                               # 38: the FIN again, IP ID 120
    f.s("A", dt=MS)
    return cap


def s45_tail_loss_after_an_upstream_loss():
    """s32 after a segment lost before the capture point mid-flight (a hole, where the IP IDs skip one too)
    and resent: that skip is the lost packet, no sign of a per-host counter."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1, IP ID 102
    f.ends["c"][3] += 1000; f.ends["c"][4] += 1                     # seq 1001, IP ID 103: lost upstream
    f.c("PA", 1000, dt=0.1 * MS)                                    # 5: seq 2001, IP ID 104 (a hole)
    f.s("A", dt=MS, ack=1001, options=[("NOP", None), ("NOP", None),
                                       ("SAck", (f.ends["c"][2] + 2001, f.ends["c"][2] + 3001))])
    f.c("PA", 1000, dt=0.3, seq=1001, advance=False)                # 7: the resend
    f.s("A", dt=MS)                                                 # 8: ACK 3001
    for _ in range(16):
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)                     # 9-40
    f.ends["c"][4] += 1                                             # a packet after the last, not captured
    f.c("PA", 1000, dt=0.3)                                         # 41: the tail-loss resend
    f.s("A", dt=MS)
    return cap


def s46_hole_fill_an_rtt_after_the_segment_above():
    """IPv6 without timestamps: nothing orders the copies. Seq 1001 is never captured; the server SACKs
    above it; 15 ms later (more than the 12 ms RTT after seq 2001, sent next after the hole's original) the
    client sends new data and, 50 µs after it, the hole's bytes: timed from the highest segment it looks
    reordered, timed from the segment above the hole it is too late for that (RACK, RFC 8985)."""
    cap = Capture(); f = cap.flow(v6=True, timestamps=False)
    f.handshake()                                                   # 1-3: RTT 12 ms
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1
    f.ends["c"][3] += 1000                                          # seq 1001 lost before the capture point
    f.c("PA", 1000, dt=0.1 * MS)                                    # 5: seq 2001
    f.s("A", dt=0.3 * MS, ack=1001, options=[("NOP", None), ("NOP", None),   # 6: ACK 1001, SACK 2001-3001
                                             ("SAck", (f.ends["c"][2] + 2001, f.ends["c"][2] + 3001))])
    f.c("PA", 1000, dt=15 * MS)                                     # 7: seq 3001, new data
    f.c("PA", 1000, dt=0.05 * MS, seq=1001, advance=False)          # 8: the hole's bytes
    f.s("A", dt=MS); f.close()
    return cap


def s47_sack_recovery_reaches_a_second_hole_late():
    """Two segments lost before the capture point (seq 1001 and 3001). The server's SACKs show both holes; the
    client resends the first at once, and the second 40 ms later (over 2 RTTs after the first signal) while
    the cumulative ACK still stands at 1001: a timeout would have resent 1001 first, so this is the SACK
    recovery reaching the next hole (RFC 6675), not a timeout."""
    cap = Capture(); f = cap.flow()
    f.handshake()                                                   # 1-3: RTT 12 ms
    isn = f.ends["c"][2]
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1
    f.ends["c"][3] += 1000; f.ends["c"][4] += 1                     # seq 1001 lost upstream
    f.c("PA", 1000, dt=0.1 * MS)                                    # 5: seq 2001
    f.ends["c"][3] += 1000; f.ends["c"][4] += 1                     # seq 3001 lost upstream
    f.c("PA", 1000, dt=0.1 * MS)                                    # 6: seq 4001
    f.s("A", dt=0.3 * MS, ack=1001, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 2001, isn + 3001))])
    f.s("A", dt=0.1 * MS, ack=1001, options=[("NOP", None), ("NOP", None),     # 8: both holes shown
                                             ("SAck", (isn + 4001, isn + 5001, isn + 2001, isn + 3001))])
    f.c("PA", 1000, dt=0.2 * MS, seq=1001, advance=False)           # 9: the first hole, at once
    f.c("PA", 1000, dt=40 * MS, seq=3001, advance=False)            # 10: the second, 40 ms later
    f.s("A", dt=MS, ack=5001)
    f.close()
    return cap


def s34_loss_recovery_after_timeout():
    """After a timeout resend, the SACK that follows asks for the next hole: still the timeout's loss
    recovery (Linux's Loss state, RFC 5681 5.1), not a fast retransmission."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS); f.c("PA", 1000); f.c("PA", 1000)        # 4, 5, 6: seq 1, 1001, 2001
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)                   # 7: timeout resend of seq 1
    sack = [("NOP", None), ("NOP", None), ("SAck", (f.ends["c"][2] + 2001, f.ends["c"][2] + 3001))]
    f.s("A", dt=20 * MS, ack=1001, options=sack)                    # 8: ACK 1001, SACK 2001-3001
    f.c("PA", 1000, dt=0.1 * MS, seq=1001, advance=False)           # 9: resend of 1001 at once
    f.s("A", dt=20 * MS)
    return cap


def s35_interleaved_copies():
    """Capture copies that are not next to their first copy: a data segment copied after the next segment
    (same IP ID), and an IPv4 pure ACK copied after the next ACK."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    first = f.c("PA", 1000, dt=MS)                                  # 4
    f.c("PA", 1000, dt=0.01 * MS)                                   # 5
    cap.duplicate(first, dt=5e-6)                                   # 6: copy of 4
    ack = f.s("A", dt=MS, ack=1001)                                 # 7
    f.s("A", dt=0.01 * MS)                                          # 8: ACK 2001
    cap.duplicate(ack, dt=5e-6)                                     # 9: copy of 7
    return cap


def s36_duplicate_ack_train_v6():
    """IPv6 without SACK: the receiver's duplicate ACKs are identical and come one after another (a capture
    next to the sender); they are duplicate ACKs, not capture copies, and call a fast retransmission."""
    cap = Capture(); f = cap.flow(v6=True, timestamps=False)
    f.c("S", options=[("MSS", 1460)]); f.s("SA", dt=10 * MS, options=[("MSS", 1460)]); f.c("A", dt=2 * MS)
    for k in range(5):
        f.c("PA", 1000, dt=0.01 * MS)                               # 4-8: the first is lost downstream
    for k in range(4):
        f.s("A", dt=(10 if k == 0 else 0.01) * MS, ack=1)           # 9-12: four ACKs of 1
    f.c("PA", 1000, dt=0.1 * MS, seq=1, advance=False)              # 13: the resend
    f.s("A", dt=10 * MS)
    return cap


def s37_repeated_ack_without_sack():
    """No SACK: after a timeout resend the receiver, which had everything, acknowledges it all and then
    repeats that ACK with nothing new from the sender: it received a second copy (RFC 5681 4.2)."""
    cap = Capture(); f = cap.flow(timestamps=False)
    f.c("S", options=[("MSS", 1460)]); f.s("SA", dt=10 * MS, options=[("MSS", 1460)]); f.c("A", dt=2 * MS)
    f.c("PA", 1000, dt=MS)                                          # 4: reaches the receiver late
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)                   # 5: timeout resend
    f.s("A", dt=10 * MS)                                            # 6: ACK 1001
    f.s("A", dt=0.05 * MS)                                          # 7: the same ACK again
    return cap


def s38_eifel_after_the_edge_filler():
    """A timeout resend fills the receiver's left edge (the ACK echoes its TSval); a second resend sent
    after it, of bytes the receiver already had, is covered by that ACK: not needed."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    ts = lambda v: [("NOP", None), ("NOP", None), ("Timestamp", (v, 900))]  # noqa: E731
    f.c("PA", 1000, dt=MS, options=ts(7000))                        # 4: seq 1, lost downstream
    f.c("PA", 1000, options=ts(7000))                               # 5: seq 1001, arrives
    f.c("PA", 1000, dt=0.3, seq=1, advance=False, options=ts(7300))     # 6: resend of 1 (needed)
    f.c("PA", 1000, dt=0.01, seq=1001, advance=False, options=ts(7310))  # 7: resend of 1001
    f.s("A", dt=10 * MS, options=[("NOP", None), ("NOP", None), ("Timestamp", (900, 7300))])  # 8: ACK 2001
    return cap


def _no_sack_flow(cap):
    """A flow whose handshake offers neither SACK nor timestamps (MSS only): SYN, SYN-ACK 10 ms later, ACK 2 ms
    later (the server's side of the capture point is 10 ms away and back)."""
    f = cap.flow(timestamps=False)
    f.c("S", options=[("MSS", 1460)]); f.s("SA", dt=10 * MS, options=[("MSS", 1460)]); f.c("A", dt=2 * MS)
    return f


def _repeated_ack_after_new_data(gap):
    """As s37, but the sender's new data (frame 7) passes the capture point ``gap`` s before the receiver
    repeats its ACK (frame 8)."""
    cap = Capture(); f = _no_sack_flow(cap)
    f.c("PA", 1000, dt=MS)                                          # 4: reaches the receiver late
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)                   # 5: timeout resend
    f.s("A", dt=10 * MS)                                            # 6: ACK 1001 (the late original arrived)
    f.c("PA", 1000, dt=0.5 * MS)                                    # 7: new data, seq 1001
    f.s("A", dt=gap, ack=1001)                                      # 8: ACK 1001 again
    f.s("A", dt=10 * MS)                                            # 9: ACK 2001
    return cap


def s48_repeated_ack_before_new_data_can_arrive():
    """The receiver repeats its ACK 50 us after the sender's new data passed the capture point, a round
    trip to the receiver being 10 ms: that ACK cannot answer the new data; it answered the second copy."""
    return _repeated_ack_after_new_data(0.05 * MS)


def s49_repeated_ack_after_new_data_could_arrive():
    """The same repeated ACK 20 ms after the new data: it may answer that (a hole before it): no evidence."""
    return _repeated_ack_after_new_data(20 * MS)


def s50_repeated_ack_explained_by_a_later_copy():
    """A needed timeout resend (frame 7) waits for the receiver's verdict; after the ACK of everything the
    sender resends bytes that ACK covered (frame 9, not needed, known at once). The receiver's repeated ACK
    (frame 12) answers that copy, not frame 7: frame 7 stays needed."""
    cap = Capture(); f = _no_sack_flow(cap)
    f.c("PA", 1000, dt=MS)                                          # 4: seq 1, lost downstream
    f.c("PA", 1000, dt=0.01 * MS)                                   # 5: seq 1001, arrives
    f.s("A", dt=10 * MS, ack=1)                                     # 6: ACK 1
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)                   # 7: timeout resend of 1 (needed)
    f.s("A", dt=10 * MS)                                            # 8: ACK 2001
    f.c("PA", 1000, dt=0.1 * MS, seq=1001, advance=False)           # 9: resend of 1001, acknowledged before
    f.s("PA", 100, dt=2 * MS)                                       # 10: server data, ACK 2001
    f.c("PA", 1000, dt=7.9 * MS)                                    # 11: new data, seq 2001
    f.s("A", dt=0.1 * MS, ack=2001)                                 # 12: ACK 2001 again: answers frame 9
    f.s("A", dt=10 * MS)                                            # 13: ACK 3001
    return cap


def s51_tail_loss_then_peer_data_too_recent_to_answer():
    """As s33, but the server's data comes 0.1 ms before the client's in-order segment, the client being 2 ms
    away and back: the packet missing from the client's IP IDs, sent before, cannot be the ACK of it."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(16):
        f.c("PA", 1000, dt=MS); f.s("A", dt=MS)                     # 4-35
    f.c("PA", 1000, dt=MS)                                          # 36: IP ID 118
    f.s("A", dt=MS)                                                 # 37: ACK 17001
    f.ends["c"][4] += 1                                             # IP ID 119 not captured
    f.s("PA", 100, dt=0.3)                                          # 38: server data
    f.c("PA", 1000, dt=0.1 * MS, ack=1)                             # 39: IP ID 120, seq 17001, not acking 38
    f.s("A", dt=MS)
    return cap


def _go_back_n(lost):
    """No SACK: five segments, those at ``lost`` (indexes) lost after the capture point; one duplicate ACK of 1
    per segment that arrived above the hole; a timeout resend of 1, a partial ACK, then the sender resends
    the rest from the ACK on (go-back-N: frames 14 onwards)."""
    cap = Capture(); f = _no_sack_flow(cap)
    for k in range(5):
        f.c("PA", 1000, dt=0.01 * MS)                               # 4-8: seq 1, 1001, 2001, 3001, 4001
    for j in range(5 - len(lost)):                                  # a duplicate ACK of 1 for each that arrived
        f.s("A", dt=(10 if j == 0 else 0.05) * MS, ack=1)
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)                   # timeout resend of 1
    top = 1 + 1000 * next(k for k in range(1, 5) if k in lost)
    f.s("A", dt=10 * MS, ack=top)                                   # ACK up to the second hole
    for seq in range(top, 5001, 1000):
        f.c("PA", 1000, dt=0.01 * MS, seq=seq, advance=False)       # go-back-N resends
    f.s("A", dt=10 * MS, ack=5001)
    return cap


def s52_go_back_n_of_segments_the_receiver_held():
    """Segments 1 and 2001 lost: the receiver's three duplicate ACKs count 1001, 3001 and 4001 held; after the
    resend of 1 its ACK of 2001 takes 1001 out: two held, the two captured above 2001. The resends of 3001
    and 4001 were not needed."""
    return _go_back_n((0, 2))


def s53_go_back_n_with_a_segment_unaccounted_for():
    """The same with 4001 lost too: two duplicate ACKs, one segment held above 2001 of the two captured
    there: which one cannot be told, so both resends count as needed."""
    return _go_back_n((0, 2, 4))


def s54_one_dsack_block_over_two_resends():
    """Three segments sent, the ACKs lost; a timeout resends the first two (go-back-N); the receiver, which had
    them all, reports both copies in one D-SACK block (Linux extends the block over consecutive duplicates,
    tcp_dsack_extend) inside its cumulative ACK: both resends were not needed."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for _ in range(3):
        f.c("PA", 1000, dt=MS)                           # 4, 5, 6
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)        # 7: resent after a timeout
    f.c("PA", 1000, dt=10e-6, seq=1001, advance=False)   # 8: and the next
    isn = f.ends["c"][2]
    f.s("A", dt=MS, ack=3001, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 1, isn + 2001))])  # 9
    f.close()
    return cap


def s55_dsack_block_over_a_range_resent_twice():
    """A segment resent twice after its original and both ACKs were lost; one D-SACK block reports the bytes
    received twice: the later resend was not needed; the earlier one may be the copy that arrived first."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    f.c("PA", 1000, dt=MS)                               # 4: lost
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)        # 5: resent after a timeout (its ACK lost)
    f.c("PA", 1000, dt=0.6, seq=1, advance=False)        # 6: again, the timeout doubled
    isn = f.ends["c"][2]
    f.s("A", dt=MS, ack=1001, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 1, isn + 1001))])  # 7
    f.close()
    return cap


def s56_six_gaps_then_their_resends():
    """Thirteen segments sent, every other one from the second lost before the capture point (their IP IDs
    skipped): six gaps open at once below the highest byte, as a lossy path with a large window gives; then
    a timeout resends the six, each never captured before: original lost upstream, whatever the gaps'
    number."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for k in range(13):
        if k % 2:
            f.ends["c"][4] += 1  # sent, with its IP ID, and lost before the capture point
        else:
            f.c("PA", 1000, dt=MS, seq=1 + 1000 * k, advance=False)   # 4, 5, ..., 10
    f.s("A", dt=MS, ack=1001)                                         # 11
    for k in range(1, 13, 2):
        f.c("PA", 1000, dt=0.3 if k == 1 else 10e-6, seq=1 + 1000 * k, advance=False)  # 12 ... 17
    f.ends["c"][3] = 13001
    f.s("A", dt=MS, ack=13001)                                        # 18
    f.close()
    return cap


SCENARIOS = {name: fn for name, fn in globals().items() if name[:1] == "s" and name[1:3].isdigit()}


def analyzed(tmp_path, name):
    return SCENARIOS[name]().analyze(tmp_path)


# ---- 01 ----------------------------------------------------------------------------------------
def test_normal_connection_has_no_retransmissions(tmp_path):
    t = analyzed(tmp_path, "s01_normal")
    assert t.retransmissions.empty
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_frame, hs.synack_frame, hs.ack_frame) == ("established", 1, 2, 3)
    assert hs.server_rtt == pytest.approx(0.010, abs=1e-9) and hs.client_rtt == pytest.approx(0.002, abs=1e-9)
    assert hs.handshake_rtt == pytest.approx(0.012, abs=1e-9) == hs.wireshark_irtt
    assert (hs.mss_client, hs.wscale_server, hs.sack_permitted, hs.timestamps) == (1460, 7, True, True)
    c = t.connections.iloc[0]
    assert (c.completeness, c.conn_state, c.client_bytes, c.server_bytes) == (31, "SF", 1000, 1000)
    assert c.history == "ShADadFf"


def test_timeout_retransmission(tmp_path):
    t = analyzed(tmp_path, "s02_rto")
    assert rows(t.retransmissions, *RX) == [(5, "retransmission", 4, 1000)]
    r = t.retransmissions.iloc[0]
    assert r.since_original == pytest.approx(0.3, abs=1e-9) and r.seq == 1 and r.direction == "client->server"
    assert "repeats 1000 of 1000 bytes first sent in frame 4" in r.reason
    assert t.connections.retransmitted_bytes[0] == 1000


def test_fast_retransmission_after_dup_acks(tmp_path):
    t = analyzed(tmp_path, "s03_fast")
    # the resent segment's original (seq 1001) was never captured: no original, no repeated bytes
    assert rows(t.retransmissions, *RX, "original_captured", "wireshark_kind") == [
        (10, "fast_retransmission", None, 0, False, "fast_retransmission")]
    reason = t.retransmissions.reason[0]
    assert reason.startswith("its 1000 bytes lie below the highest byte sent but were never captured: the original "
                             "was lost before the capture point; IP ID 105 > 104 of the highest sent: sent after it")
    assert "SACK blocks showing data above it received (frame 7), resent 900 µs later" in reason


def test_spurious_retransmission(tmp_path):
    t = analyzed(tmp_path, "s04_spurious")
    assert rows(t.retransmissions, *RX) == [(6, "spurious_retransmission", 4, 1000)]
    assert t.retransmissions.reason[0].endswith("the receiver had already acknowledged every byte of it")


def test_out_of_order(tmp_path):
    t = analyzed(tmp_path, "s05_out_of_order")
    assert rows(t.retransmissions, *RX, "wireshark_kind") == [(5, "out_of_order", None, 0, "out_of_order")]
    assert "IP ID 102 < 103 of the highest sent: sent before it" in t.retransmissions.reason[0]
    assert t.connections.out_of_order[0] == 1 and t.connections.retransmissions[0] == 0


def test_syn_retransmission_counts_as_retry(tmp_path):
    t = analyzed(tmp_path, "s06_syn_retry")
    assert rows(t.retransmissions, *RX) == [(2, "syn_retransmission", 1, 0)]
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_retries, hs.syn_frame, hs.first_syn_frame) == ("established", 1, 2, 1)
    assert hs.handshake_rtt == pytest.approx(0.012, abs=1e-9) == hs.wireshark_irtt
    assert hs.setup_time == pytest.approx(1.012, abs=1e-9)
    assert t.connections.completeness[0] == 23


def test_refused_connection(tmp_path):
    t = analyzed(tmp_path, "s07_refused")
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.rst_frame) == ("refused", 2) and hs.wireshark_irtt == pytest.approx(1e-4, abs=1e-9)
    assert pd_isna(hs.handshake_rtt)
    c = t.connections.iloc[0]
    assert (c.completeness, c.conn_state) == (37, "REJ")


def test_port_reuse_starts_a_new_stream(tmp_path):
    t = analyzed(tmp_path, "s08_port_reuse")
    assert list(t.connections.stream) == [0, 1] and list(t.connections.reused_ports) == [False, True]
    assert list(t.handshakes.outcome) == ["established", "established"]
    assert t.retransmissions.empty and list(t.connections.completeness) == [31, 31]


def test_keep_alives_are_not_retransmissions(tmp_path):
    t = analyzed(tmp_path, "s09_keepalive")
    assert t.retransmissions.empty and t.connections.keep_alives[0] == 2


def test_zero_window_probe_is_not_a_retransmission(tmp_path):
    t = analyzed(tmp_path, "s10_zero_window")
    assert t.retransmissions.empty and t.connections.zero_window_probes[0] == 1


def test_sequence_wraparound(tmp_path):
    t = analyzed(tmp_path, "s11_wraparound")
    assert rows(t.retransmissions, *RX, "seq") == [(7, "spurious_retransmission", 5, 1000, 1001),
                                                   (9, "retransmission", 8, 1000, 2001)]
    assert t.retransmissions.seq_raw.tolist() == [(2**32 - 1501 + 1001) % 2**32, (2**32 - 1501 + 2001) % 2**32]


def test_midstream_capture(tmp_path):
    t = analyzed(tmp_path, "s12_midstream")
    assert t.retransmissions.empty
    assert t.handshakes.outcome[0] == "midstream" and pd_isna(t.handshakes.handshake_rtt[0])
    c = t.connections.iloc[0]
    assert (c.completeness, c.conn_state, c.client, c.client_port) == (12, "OTH", "10.0.0.1", 40000)


def test_tcp_fast_open(tmp_path):
    t = analyzed(tmp_path, "s13_tfo")
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.tfo, hs.syn_data_bytes) == ("established", True, 18)
    assert hs.handshake_rtt == pytest.approx(0.012, abs=1e-9)
    assert t.retransmissions.empty and t.connections.client_bytes[0] == 18


def test_simultaneous_open_is_labelled_not_retransmitted(tmp_path):
    t = analyzed(tmp_path, "s14_simultaneous_open")
    assert t.handshakes.outcome[0] == "simultaneous_open"
    # Wireshark flags both SYN-ACKs as retransmissions; they repeat their own SYN's ISN by design
    assert rows(t.retransmissions, "frame", "kind", "wireshark_kind") == [(3, "", "retransmission"),
                                                                          (4, "", "retransmission")]
    assert t.retransmissions.reason[0].startswith("a SYN-ACK of a simultaneous open repeats its own SYN's ISN")
    assert t.connections.retransmissions[0] == 0


def test_duplicated_frame_is_its_own_kind(tmp_path):
    t = analyzed(tmp_path, "s15_duplicate")
    assert rows(t.retransmissions, *RX) == [(5, "duplicate", 4, 1000)]
    c = t.connections.iloc[0]
    assert (c.duplicates, c.retransmissions, c.client_bytes) == (1, 0, 1000)


def test_truncated_frame_uses_ip_length(tmp_path):
    t = analyzed(tmp_path, "s16_truncated")
    assert t.retransmissions.empty and t.connections.client_bytes[0] == 1000


def test_tso_super_segment(tmp_path):
    t = analyzed(tmp_path, "s17_tso")
    assert t.retransmissions.empty and t.connections.client_bytes[0] == 8760


def test_syn_and_synack_retries_measure_from_the_last(tmp_path):
    t = analyzed(tmp_path, "s18_syn_and_synack_retry")
    assert rows(t.retransmissions, *RX) == [(3, "syn_retransmission", 1, 0), (4, "syn_retransmission", 2, 0)]
    hs = t.handshakes.iloc[0]
    assert (hs.syn_retries, hs.synack_retries, hs.syn_frame, hs.synack_frame, hs.ack_frame) == (1, 1, 3, 4, 5)
    assert hs.server_rtt == pytest.approx(0.001, abs=1e-9) and hs.client_rtt == pytest.approx(0.002, abs=1e-9)
    assert hs.handshake_rtt == pytest.approx(0.003, abs=1e-9) == hs.wireshark_irtt


def test_repacketised_retransmission_counts_only_repeated_bytes(tmp_path):
    t = analyzed(tmp_path, "s19_repacketised")
    assert rows(t.retransmissions, *RX) == [(5, "retransmission", 4, 1000)]
    assert t.connections.retransmitted_bytes[0] == 1000


def test_unanswered_syns(tmp_path):
    t = analyzed(tmp_path, "s20_no_reply")
    assert rows(t.retransmissions, *RX) == [(2, "syn_retransmission", 1, 0), (3, "syn_retransmission", 1, 0)]
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_retries) == ("no_reply", 2)
    c = t.connections.iloc[0]
    assert (c.completeness, c.conn_state, c.history) == (1, "S0", "S")


def pd_isna(v) -> bool:
    import pandas as pd
    return bool(pd.isna(v))


# ---- 21-25 -------------------------------------------------------------------------------------
def test_repeated_fin_names_its_original(tmp_path):
    t = analyzed(tmp_path, "s21_fin_retransmission")
    assert rows(t.retransmissions, *RX) == [(7, "retransmission", 6, 0)]  # overlap_bytes: payload only
    reason = t.retransmissions.reason[0]
    assert reason.startswith("FIN repeated, first sent in frame 6, 200 ms earlier; ") and "never captured" not in reason
    assert t.connections.retransmissions[0] == 1 and t.connections.retransmitted_bytes[0] == 0


def test_synack_answering_a_repeated_syn_is_not_a_duplicate(tmp_path):
    t = analyzed(tmp_path, "s22_synack_answers_repeated_syn")
    assert rows(t.retransmissions, *RX) == [(3, "syn_retransmission", 2, 0), (4, "syn_retransmission", 1, 0),
                                            (5, "syn_retransmission", 2, 0)]
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_retries, hs.synack_retries, hs.synack_frame) == ("established", 1, 2, 5)
    assert t.connections.duplicates[0] == 0


def test_copy_without_ip_id_is_still_a_duplicate(tmp_path):
    """IPv6 (no IP ID): the same segment again 5 us later, nothing from the peer in between."""
    cap = Capture(); f = cap.flow(v6=True)
    f.handshake()
    data = f.c("PA", 1000, dt=MS)
    cap.duplicate(data, dt=5e-6)
    f.s("A", dt=MS)
    t = cap.analyze(tmp_path)
    assert rows(t.retransmissions, *RX) == [(5, "duplicate", 4, 1000)]
    assert "nothing from the peer in between" in t.retransmissions.reason[0]


def test_dsack_marks_a_repeated_fin_spurious(tmp_path):
    t = analyzed(tmp_path, "s23_dsack_fin")
    assert rows(t.retransmissions, *RX, "evidence_frame") == [(7, "spurious_retransmission", 6, 0, 8)]
    reason = t.retransmissions.reason[0]
    assert reason.startswith("FIN repeated, first sent in frame 6, 20 ms earlier; ")
    assert reason.endswith("but the D-SACK in frame 8 (SLE=101 SRE=102) shows the original had arrived: "
                           "not needed (RFC 2883)")
    assert t.stats["retransmissions"]["spurious_retransmission"] == 1
    assert t.stats["retransmissions"]["retransmission"] == 0


def test_dsack_marks_a_resent_segment_spurious_in_any_batch(tmp_path):
    cap = SCENARIOS["s24_dsack_data"]()
    for size in (None, 1, 6):
        t = cap.analyze(tmp_path, batch_size=size)
        assert rows(t.retransmissions, *RX, "evidence_frame") == [(6, "spurious_retransmission", 4, 1000, 7)]
        assert "D-SACK in frame 7 (SLE=1 SRE=1001)" in t.retransmissions.reason[0]


def test_live_rows_keep_the_label_known_then(tmp_path):
    from analyzer.tcp import Engine
    df = SCENARIOS["s24_dsack_data"]().packets(tmp_path)
    engine = Engine()
    first = engine.feed(df.iloc[:6])
    assert list(first.retransmissions.kind) == ["retransmission"]
    second = engine.feed(df.iloc[6:])
    assert second.retransmissions.empty
    assert list(engine.finish().retransmissions.kind) == ["spurious_retransmission"]


def test_eifel_marks_a_resend_spurious_when_the_ack_echoes_the_original(tmp_path):
    t = analyzed(tmp_path, "s25_eifel")
    assert rows(t.retransmissions, *RX, "evidence_frame") == [(5, "spurious_retransmission", 4, 1000, 6),
                                                              (8, "retransmission", 7, 1000, None)]
    assert t.retransmissions.reason[0].endswith(
        "but the ACK in frame 6, which covers it, echoes TSval 7000, older than this one's 7300: it answered a "
        "segment sent before this one, so the receiver had these bytes before this copy arrived: not needed "
        "(Eifel, RFC 3522)")


# ---- 26-30: engine bugs found on real captures (issue 12, a-e) ------------------------------------------
def test_synack_with_a_new_isn_starts_the_server_direction_over(tmp_path):
    t = analyzed(tmp_path, "s26_synack_new_isn")
    # only the client's repeated SYN is flagged; the new SYN-ACK and the server's data are not resends
    assert rows(t.retransmissions, *RX, "wireshark_kind") == [(4, "syn_retransmission", 1, 0, "retransmission")]
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_retries, hs.synack_frame) == ("established", 1, 5)
    assert t.connections.retransmissions[0] == 1


def test_refused_outcome_does_not_stick_after_a_retry(tmp_path):
    t = analyzed(tmp_path, "s27_refused_then_retried")
    hs = t.handshakes.iloc[0]
    assert (hs.outcome, hs.syn_retries, hs.synack_frame, hs.ack_frame) == ("established", 1, 4, 5)
    # Wireshark flags the first SYN-ACK as a retransmission (its SYN was repeated); no byte of it was sent before
    assert rows(t.retransmissions, "frame", "kind", "wireshark_kind") == [
        (3, "syn_retransmission", "retransmission"), (4, "", "retransmission")]


def test_rst_at_a_stale_ack_value_does_not_move_the_top(tmp_path):
    t = analyzed(tmp_path, "s28_stale_rst")
    assert rows(t.retransmissions, "frame", "kind") == [(4, "syn_retransmission"), (5, "syn_retransmission")]
    assert t.connections.retransmitted_bytes[0] == 0  # frames 7 and 8, the first data, are no resends


def test_clock_going_backwards_is_said(tmp_path):
    t = analyzed(tmp_path, "s29_clock_backwards")
    assert rows(t.retransmissions, "frame", "kind", "wireshark_kind", "original_captured") == [
        (6, "retransmission", "retransmission", False)]  # Wireshark: an unsigned negative gap, not out-of-order
    assert t.retransmissions.reason[0].endswith("; the capture's clock went backwards before this frame")


def test_the_irtt_packet_is_judged_with_the_default_threshold(tmp_path):
    t = analyzed(tmp_path, "s30_irtt_packet")
    # 5 ms after the highest segment: over the 3 ms default, under the iRTT (25 ms) that this very packet sets
    assert rows(t.retransmissions, "frame", "wireshark_kind") == [(4, "retransmission")]
    assert t.handshakes.wireshark_irtt[0] == pytest.approx(0.025)


# ---- 31-38: evidence beyond timing (issue 12) ----------------------------------------------------------
def test_a_pure_ack_shows_bytes_the_capture_never_saw(tmp_path):
    t = analyzed(tmp_path, "s31_pure_ack_shows_the_top")
    assert rows(t.retransmissions, *RX, "original_captured") == [(7, "retransmission", None, 0, False)]
    assert t.retransmissions.reason[0].startswith("its 1000 bytes lie below the highest byte sent but were never "
                                                  "captured: the original was lost before the capture point")


def _tail_loss_reason(carried: str) -> str:
    """The reason of frame 38 of s32 and s44: IP ID 119 of the client (after frame 36's 118) not captured."""
    return ("at the highest byte sent, but IP ID 120 follows 118 of the sender's previous packet (frame 36, 301 ms "
            "earlier): 1 packet of it not captured, while the peer had acknowledged everything and sent nothing "
            f"to answer: they carried {carried}, lost before the capture point (a tail loss)")


def test_a_tail_loss_shows_in_the_ip_ids(tmp_path):
    t = analyzed(tmp_path, "s32_tail_loss_by_ip_id")
    assert rows(t.retransmissions, *RX, "original_captured", "wireshark_kind") == [
        (38, "retransmission", None, 0, False, "")]  # Wireshark sees nothing: the segment is in order
    assert t.retransmissions.reason[0].startswith(_tail_loss_reason("these bytes"))


def test_an_ip_id_gap_is_no_evidence_when_an_ack_was_owed(tmp_path):
    t = analyzed(tmp_path, "s33_ip_id_gap_with_data_to_answer")
    assert t.retransmissions.empty


def test_an_ip_id_gap_of_a_per_host_counter_is_no_evidence(tmp_path):
    t = analyzed(tmp_path, "s39_ip_id_gap_of_a_per_host_counter")
    assert t.retransmissions.empty


def test_a_hole_fill_sent_after_the_segment_above_is_a_resend(tmp_path):
    cap = SCENARIOS["s42_hole_fill_sent_after_the_segment_above"]()
    tsval = dict(zip(*[cap.packets(tmp_path)[c].tolist() for c in ("frame", "tsval")]))
    assert tsval[11] == tsval[10] > tsval[5]  # the highest segment cannot order it; the one above the hole can
    t = cap.analyze(tmp_path)
    assert rows(t.retransmissions, *RX, "original_captured") == [(11, "fast_retransmission", None, 0, False)]
    assert t.retransmissions.reason[0].startswith(
        "its 1000 bytes lie below the highest byte sent but were never captured: the original was lost before "
        f"the capture point; TSval {tsval[11]} newer than {tsval[5]} of a segment above it (sent after its "
        "original): sent after it")


def test_a_late_original_sent_before_the_segment_above_stays_out_of_order(tmp_path):
    t = analyzed(tmp_path, "s43_late_original_sent_before_the_segment_above")
    assert rows(t.retransmissions, *RX) == [(7, "out_of_order", None, 0)]


def test_a_hole_fill_is_timed_from_the_segment_above_it(tmp_path):
    t = analyzed(tmp_path, "s46_hole_fill_an_rtt_after_the_segment_above")
    assert rows(t.retransmissions, *RX, "original_captured", "wireshark_kind") == [
        (8, "fast_retransmission", None, 0, False, "out_of_order")]  # Wireshark times it from frame 7


def test_sack_recovery_reaching_a_hole_late_is_no_timeout(tmp_path):
    t = analyzed(tmp_path, "s47_sack_recovery_reaches_a_second_hole_late")
    assert rows(t.retransmissions, *RX, "original_captured") == [
        (9, "fast_retransmission", None, 0, False), (10, "fast_retransmission", None, 0, False)]
    assert t.retransmissions.reason[1].endswith(
        "(frame 7), resent 40.3 ms later: a hole above the cumulative ACK, which a timeout would have resent first: "
        "SACK loss recovery, hole by hole (RFC 6675)")


def test_a_lost_fin_shows_in_the_ip_ids(tmp_path):
    t = analyzed(tmp_path, "s44_tail_loss_of_a_fin")
    assert rows(t.retransmissions, *RX, "original_captured") == [(38, "retransmission", None, 0, False)]
    assert t.retransmissions.reason[0].startswith(_tail_loss_reason("this FIN"))


def test_an_ip_id_skip_at_a_hole_is_no_sign_of_a_per_host_counter(tmp_path):
    t = analyzed(tmp_path, "s45_tail_loss_after_an_upstream_loss")
    assert rows(t.retransmissions, *RX, "original_captured") == [
        (7, "retransmission", None, 0, False), (41, "retransmission", None, 0, False)]


@pytest.mark.parametrize("name", ["s40_ip_ids_of_a_segmentation_offload_packet",
                                  "s41_ip_ids_of_an_offload_packet_then_a_pause"])
def test_an_ip_id_gap_after_an_offload_packet_is_no_tail_loss(tmp_path, name):
    assert analyzed(tmp_path, name).retransmissions.empty


def test_an_ip_id_gap_after_a_single_segment_is_a_tail_loss_whatever_came_before(tmp_path):
    """s41 with the offload packet's bytes sent as two full-size segments (each shown to be one segment):
    the same skipped ID, 300 ms later, is a tail loss again; and a small packet before the skip is too."""
    for last in ((1460, 1460), (500,)):
        t = _client_ids_skip_after(last, 0.3).analyze(tmp_path)     # the skipped ID: a packet not captured
        frame = 4 + 32 + len(last) + 1
        assert rows(t.retransmissions, *RX, "original_captured") == [(frame, "retransmission", None, 0, False)]


def test_resends_after_a_timeout_stay_timeout_resends(tmp_path):
    t = analyzed(tmp_path, "s34_loss_recovery_after_timeout")
    assert rows(t.retransmissions, *RX, "wireshark_kind") == [(7, "retransmission", 4, 1000, "retransmission"),
                                                              (9, "retransmission", 5, 1000, "retransmission")]
    assert "resent in the loss recovery after the timeout retransmission in frame 7" in t.retransmissions.reason[1]


def test_copies_interleaved_with_other_packets_are_duplicates(tmp_path):
    t = analyzed(tmp_path, "s35_interleaved_copies")
    assert rows(t.retransmissions, *RX) == [(6, "duplicate", 4, 1000), (9, "duplicate", 7, 0)]
    assert t.connections.duplicates[0] == 2


def test_identical_duplicate_acks_are_not_capture_copies(tmp_path):
    t = analyzed(tmp_path, "s36_duplicate_ack_train_v6")
    assert rows(t.retransmissions, *RX, "wireshark_kind") == [(13, "fast_retransmission", 4, 1000,
                                                               "fast_retransmission")]
    assert t.connections.duplicates[0] == 0


def test_a_repeated_ack_without_sack_shows_a_copy_arrived(tmp_path):
    t = analyzed(tmp_path, "s37_repeated_ack_without_sack")
    assert rows(t.retransmissions, *RX, "evidence_frame") == [(5, "spurious_retransmission", 4, 1000, 7)]
    assert t.retransmissions.reason[0].endswith(
        "but in frame 7 the receiver, which had acknowledged everything sent, repeated that ACK with nothing new "
        "from the sender: it had received a second copy (RFC 5681 4.2), the original had arrived, so this was not "
        "needed")


def test_a_repeated_ack_counts_when_the_new_data_since_cannot_have_arrived(tmp_path):
    t = analyzed(tmp_path, "s48_repeated_ack_before_new_data_can_arrive")
    assert rows(t.retransmissions, *RX, "evidence_frame") == [(5, "spurious_retransmission", 4, 1000, 8)]
    t = analyzed(tmp_path, "s49_repeated_ack_after_new_data_could_arrive")
    assert rows(t.retransmissions, *RX) == [(5, "retransmission", 4, 1000)]


def test_a_repeated_ack_answers_the_latest_copy_known_unneeded(tmp_path):
    t = analyzed(tmp_path, "s50_repeated_ack_explained_by_a_later_copy")
    assert rows(t.retransmissions, *RX) == [(7, "retransmission", 4, 1000), (9, "spurious_retransmission", 5, 1000)]


def test_a_tail_loss_despite_peer_data_too_recent_to_answer(tmp_path):
    t = analyzed(tmp_path, "s51_tail_loss_then_peer_data_too_recent_to_answer")
    assert rows(t.retransmissions, *RX, "original_captured") == [(39, "retransmission", None, 0, False)]


def test_without_sack_duplicate_acks_count_the_segments_the_receiver_held(tmp_path):
    t = analyzed(tmp_path, "s52_go_back_n_of_segments_the_receiver_held")
    assert [(f, k) for f, k in rows(t.retransmissions, "frame", "kind")] == [
        (12, "retransmission"), (14, "retransmission"), (15, "spurious_retransmission"),
        (16, "spurious_retransmission")]
    assert t.retransmissions.reason[2].endswith(
        "no SACK, but the receiver's duplicate ACKs said it held 2 segments above its cumulative ACK, all those "
        "captured there: it had these bytes (each segment above a hole draws one duplicate ACK, RFC 5681 4.2)")
    t = analyzed(tmp_path, "s53_go_back_n_with_a_segment_unaccounted_for")
    assert rows(t.retransmissions, "frame", "kind") == [(11, "retransmission"), (13, "retransmission"),
                                                        (14, "retransmission"), (15, "retransmission")]


def test_eifel_judges_resends_sent_after_the_one_that_filled_the_edge(tmp_path):
    t = analyzed(tmp_path, "s38_eifel_after_the_edge_filler")
    assert rows(t.retransmissions, *RX, "evidence_frame") == [(6, "retransmission", 4, 1000, None),
                                                              (7, "spurious_retransmission", 5, 1000, 8)]
    assert t.retransmissions.reason[1].endswith(
        "but the ACK in frame 8, which covers it, echoes TSval 7300, older than this one's 7310: it answered a "
        "segment sent before this one, so the receiver had these bytes before this copy arrived: not needed "
        "(Eifel, RFC 3522)")


# ---- the reasons are worded once per shape of row (retransmit.reasons): each equals the row worded alone ----
class _RealRow:
    """A row's fields as ``retransmit._text`` reads them, with the row's own values (no placeholders)."""

    def __init__(self, ev, i, since, syn_ack):
        from analyzer.tcp.retransmit import SHOWN, durations

        for name in ("kind", "why", "captured", "note", "spur", "ws_kind"):
            setattr(self, name, int(ev[name][i]))
        self.syn_ack = bool(syn_ack[i])
        for name, field in SHOWN.items():
            if field is not None:
                setattr(self, name, int(ev[field][i]))
        self.since, self.gap, self.limit = durations([since[i], ev["gap"][i], ev["limit"][i]])


def test_reasons_worded_by_shape_equal_each_row_worded_alone(tmp_path):
    import numpy as np

    import analyzer
    from analyzer.tcp import Engine
    from analyzer.tcp.retransmit import _text, reasons
    from analyzer.tcp.state import NONE, Evidence
    from tests.synthetic_tcp import lossy_upload

    frames = [SCENARIOS[name]().packets(tmp_path) for name in sorted(SCENARIOS)]
    lossy_upload(tmp_path / "lossy.pcap", captured_twice=True, streams=3)
    frames.append(analyzer.read_packets(str(tmp_path / "lossy.pcap")))
    parts = []
    for df in frames:
        engine = Engine()
        engine.feed(df)
        engine.finish()
        parts.append(engine._events[: int(engine._state.count["events"])])
    ev = np.concatenate(parts)  # every capture's rows in one call: rows alike in all but a value meet
    late = ev["spur"] == Evidence.LATE_ORIGINAL
    orig = np.where(late, ev["spur_frame"], ev["orig_frame"])
    since = np.where((orig != NONE) & ~late, ev["ts"] - ev["orig_ts"], NONE)
    syn_ack = (ev["flags"] & 0x12) == 0x12
    worded = reasons(ev, since, syn_ack).tolist()
    assert worded == [_text(_RealRow(ev, i, since, syn_ack)) for i in range(len(ev))]
    shapes = {(int(k), int(w), int(s)) for k, w, s in zip(ev["kind"], ev["why"], ev["spur"])}
    assert len(shapes) >= 15  # many wordings (19 kind, evidence and later-evidence combinations), not a few


def test_one_dsack_block_marks_every_resend_it_covers(tmp_path):
    cap = SCENARIOS["s54_one_dsack_block_over_two_resends"]()
    for size in (None, 1, 8):
        t = cap.analyze(tmp_path, batch_size=size)
        assert rows(t.retransmissions, *RX, "evidence_frame") == [(7, "spurious_retransmission", 4, 1000, 9),
                                                                  (8, "spurious_retransmission", 5, 1000, 9)]
        assert all("D-SACK in frame 9 (SLE=1 SRE=2001)" in r for r in t.retransmissions.reason)


def test_a_dsack_block_marks_only_the_latest_resend_of_a_range(tmp_path):
    t = analyzed(tmp_path, "s55_dsack_block_over_a_range_resent_twice")
    got = rows(t.retransmissions, *RX, "evidence_frame")
    assert [g[:2] for g in got] == [(5, "retransmission"), (6, "spurious_retransmission")]
    assert got[1][4] == 7


def test_six_gaps_at_once_each_resend_lost_upstream(tmp_path):
    t = analyzed(tmp_path, "s56_six_gaps_then_their_resends")
    r = t.retransmissions
    assert r.frame.tolist() == [12, 13, 14, 15, 16, 17]
    assert r.kind.tolist() == ["retransmission"] * 6
    assert r.original_captured.tolist() == [False] * 6
    assert r.overlap_bytes.tolist() == [0] * 6
