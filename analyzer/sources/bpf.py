"""BPF filters on frame batches: tcpdump's filter language, compiled by libpcap, run by a compiled interpreter.

``BpfFilter("tcp port 443").match(batch)`` says which frames of a ``FrameBatch`` the filter keeps, as
``tcpdump -r FILE FILTER`` would. libpcap (through ctypes) compiles the expression into a classic BPF
program for each link type met (a pcapng file may mix several); ``run_bpf``, a numba kernel,
runs it over the batch's bytes and offsets: the whole classic instruction set, with the semantics of
libpcap's ``bpf_filter.c`` (32-bit unsigned arithmetic, a load past the captured bytes or a division by
zero rejects the frame, ``len`` is the length on the wire).

>>> keep = BpfFilter("tcp[tcpflags] & tcp-syn != 0").match(batch)    # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct

import numpy as np

from ..errors import AnalyzerError
from ..jit import njit

# Instruction fields (libpcap pcap/bpf.h): class, size, mode, operation, source, return value.
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = 0x60, 0x70, 0x80, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_A = 0x10  # return A
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MEMWORDS = 16  # scratch memory words
U32 = 0xFFFFFFFF

SNAPLEN = 262_144  # tcpdump's default; a filter's "ret #snaplen" only has to be non-zero here
NETMASK = 0  # tcpdump -r compiles with netmask 0 (no interface to ask)
PCAP_MAGIC = 0xA1B2C3D4


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):  # struct bpf_program
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


@functools.cache
def _libpcap() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """(libpcap, libc), with the signatures used here (our own handles: scapy's bindings stay untouched)."""
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise AnalyzerError("BPF filters need libpcap (Debian: apt-get install libpcap0.8)")
    pcap, libc = ctypes.CDLL(name), ctypes.CDLL(None)
    libc.fmemopen.restype, libc.fmemopen.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    for fn, res, args in ((pcap.pcap_fopen_offline, ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
                          (pcap.pcap_compile, ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(_Program),
                                                             ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]),
                          (pcap.pcap_geterr, ctypes.c_char_p, [ctypes.c_void_p]),
                          (pcap.pcap_freecode, None, [ctypes.POINTER(_Program)]),
                          (pcap.pcap_close, None, [ctypes.c_void_p])):
        fn.restype, fn.argtypes = res, args
    return pcap, libc


def compile_bpf(expr: str, linktype: int, big_endian: bool = False) -> np.ndarray:
    """The classic BPF program libpcap compiles for ``expr`` on ``linktype``: rows of (code, jt, jf, k).

    Compiled as ``tcpdump -r`` compiles it, against a capture file (an empty one of this link type and
    byte order, read from memory), which libpcap's code generation looks at: the file's link type number
    is mapped to the platform's DLT, and BSD loopback (``NULL``) frames are checked for every system's
    AF_INET6 value, in the file's byte order. Raises ``AnalyzerError`` (one line, libpcap's reason) for a
    bad expression, one the link type cannot express (``vlan`` on raw IP) or one proved to match nothing."""
    pcap, libc = _libpcap()
    header = struct.pack(">IHHiIII" if big_endian else "<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, linktype)
    buffer = ctypes.create_string_buffer(header, len(header))
    errbuf = ctypes.create_string_buffer(256)
    stream = libc.fmemopen(buffer, len(header), b"rb")
    handle = pcap.pcap_fopen_offline(stream, errbuf) if stream else None  # closes the stream when done
    if not handle:
        raise AnalyzerError(f"libpcap cannot compile filters for link type {linktype}: "
                            f"{errbuf.value.decode(errors='replace') or 'no memory'}")
    prog = _Program()
    try:
        if pcap.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, NETMASK) == -1:
            reason = (pcap.pcap_geterr(handle) or b"").decode(errors="replace")
            raise AnalyzerError(f"bad BPF filter {expr!r} for link type {linktype}: {reason}")
        rows = [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[:prog.bf_len]]
        pcap.pcap_freecode(ctypes.byref(prog))
    finally:
        pcap.pcap_close(handle)
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


class BpfFilter:
    """A filter expression, compiled once per link type (and file byte order) met."""

    def __init__(self, expr: str):
        self.expr = expr
        self._programs: dict[tuple[int, bool], np.ndarray] = {}

    def program(self, linktype: int, big_endian: bool = False) -> np.ndarray:
        prog = self._programs.get((linktype, big_endian))
        if prog is None:
            prog = self._programs[linktype, big_endian] = compile_bpf(self.expr, linktype, big_endian)
        return prog

    def match(self, batch, big_endian: bool | np.ndarray = False) -> np.ndarray:
        """Which frames of ``batch`` (a ``FrameBatch`` of a file in this byte order; per frame for a merge of
        files in both orders) the filter keeps."""
        keep = np.zeros(len(batch), dtype=bool)
        if not len(batch):
            return keep
        kind = batch.linktypes.astype(np.int64) * 2 + np.asarray(big_endian, dtype=np.int64)  # (link type, order)
        kinds = [int(kind[0])] if kind[0] == kind[-1] and (kind == kind[0]).all() else np.unique(kind).tolist()
        for k in kinds:
            frames = np.arange(len(batch)) if len(kinds) == 1 else np.flatnonzero(kind == k)
            lt, big = k >> 1, bool(k & 1)
            if lt < 0:  # a frame of an undescribed pcapng interface: nothing to compile for, never kept
                continue
            run_bpf(self.program(lt, big), batch.data, batch.offsets, batch.caplens, batch.wirelens, frames,
                    np.empty(BPF_MEMWORDS, dtype=np.int64), keep)
        return keep


@njit(cache=True, nogil=True, _nrt=False)
def _load(data, start, buflen, k, size):
    """Bytes ``k .. k + size`` of the frame as a big-endian number, or -1 past the captured bytes."""
    if k < 0 or k + size > buflen:
        return -1
    v = 0
    for b in range(size):
        v = (v << 8) | np.int64(data[start + k + b])
    return v


@njit(cache=True, nogil=True, _nrt=False)
def run_bpf(prog, data, offsets, caplens, wirelens, frames, mem, keep):
    """Run ``prog`` on each frame listed in ``frames``; ``keep[i]`` = the program returned non-zero.
    ``mem``: room for the scratch words (``BPF_MEMWORDS``).

    The interpreter of libpcap's ``bpf_filter.c``: registers A and X and 16 scratch words, 32-bit
    unsigned; a load outside the captured bytes, a division or modulo by zero, a jump or a scratch
    index out of range, or an unknown instruction (where libpcap would abort) rejects the frame."""
    n = prog.shape[0]
    for j in range(len(frames)):
        i = frames[j]
        start, buflen, wirelen = offsets[i], np.int64(caplens[i]), np.int64(wirelens[i])
        mem[:] = 0
        a = x = 0
        pc = 0
        ret = 0
        while pc < n:
            code, jt, jf, k = prog[pc, 0], prog[pc, 1], prog[pc, 2], prog[pc, 3]
            pc += 1
            cls = code & 0x07
            if cls == BPF_RET:  # "ret k" or "ret a" (libpcap and Linux have no "ret x")
                src = code & 0x18
                ret = k if src == BPF_K else (a if src == BPF_A else 0)
                break
            if cls == BPF_LD or cls == BPF_LDX:
                mode, size = code & 0xE0, code & 0x18
                if mode == BPF_IMM:
                    v = k
                elif mode == BPF_LEN:
                    v = wirelen
                elif mode == BPF_MEM:
                    if k >= BPF_MEMWORDS:
                        break
                    v = mem[k]
                elif mode == BPF_MSH and cls == BPF_LDX and size == BPF_B:
                    v = _load(data, start, buflen, k, np.int64(1))
                    if v < 0:
                        break
                    v = (v & 0xF) << 2
                elif (mode == BPF_ABS or mode == BPF_IND) and cls == BPF_LD:
                    width = 4 if size == BPF_W else (2 if size == BPF_H else (1 if size == BPF_B else 0))
                    if width == 0:
                        break
                    v = _load(data, start, buflen, k + (x if mode == BPF_IND else 0), width)
                    if v < 0:
                        break
                else:
                    break
                if cls == BPF_LD:
                    a = v
                else:
                    x = v
            elif cls == BPF_ST or cls == BPF_STX:
                if k >= BPF_MEMWORDS:
                    break
                mem[k] = a if cls == BPF_ST else x
            elif cls == BPF_ALU:
                op = code & 0xF0
                v = x if (code & 0x08) == BPF_X else k
                if op == BPF_ADD:
                    a = (a + v) & U32
                elif op == BPF_SUB:
                    a = (a - v) & U32
                elif op == BPF_MUL:
                    a = (a * v) & U32
                elif op == BPF_DIV or op == BPF_MOD:
                    if v == 0:
                        break
                    a = a // v if op == BPF_DIV else a % v
                elif op == BPF_OR:
                    a = a | v
                elif op == BPF_AND:
                    a = a & v
                elif op == BPF_XOR:
                    a = a ^ v
                elif op == BPF_LSH:
                    a = (a << v) & U32 if v < 32 else 0
                elif op == BPF_RSH:
                    a = a >> v if v < 32 else 0
                elif op == BPF_NEG:
                    a = (-a) & U32
                else:
                    break
            elif cls == BPF_JMP:
                op = code & 0xF0
                if op == BPF_JA:
                    pc += k
                    continue
                v = x if (code & 0x08) == BPF_X else k
                if op == BPF_JEQ:
                    taken = a == v
                elif op == BPF_JGT:
                    taken = a > v
                elif op == BPF_JGE:
                    taken = a >= v
                elif op == BPF_JSET:
                    taken = (a & v) != 0
                else:
                    break
                pc += jt if taken else jf
            else:  # BPF_MISC
                if (code & 0xF8) == BPF_TAX:
                    x = a
                elif (code & 0xF8) == BPF_TXA:
                    a = x
                else:
                    break
        keep[i] = ret != 0
