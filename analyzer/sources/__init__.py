"""Capture sources: pcap and pcapng files (plain or gzip), and live sniffing, as frame batches.

A ``FrameBatch`` is raw frame bytes plus per-frame offsets, lengths, times and link types
(``frames.py``); ``files.FrameSource`` reads files, ``live.LiveCapture`` an interface. Nothing here
knows about TCP: the decoder (``analyzer.decode``) turns batches into the packet table.
"""
from .frames import FrameBatch

__all__ = ["FrameBatch"]
