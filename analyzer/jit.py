"""``njit`` for the package's compiled kernels: ``numba.njit``, a safe cache folder, quicker loads of cached code.

Where the cache lives. numba caches machine code next to the sources (``__pycache__``) and loads its
index with pickle, so whoever can write the cache folder can run code as whoever runs the tool. Next to
the sources is as safe as the sources; when the package folder is not writable (an install owned by
root, used by someone else), the cache goes to a private folder of this user (``choose_cache``): the
first of ``$XDG_CACHE_HOME/tcp-analyzer-numba`` (default ``~/.cache/...``) and
``$TMPDIR/tcp-analyzer-numba-<uid>`` that is, or can be made, a real folder (not a symlink) owned by
this user that no one else can write. A folder that fails the check is refused with one line on
stderr; with none usable, kernels are compiled in memory, uncached. ``NUMBA_CACHE_DIR`` set by the
user is respected. This module sets ``NUMBA_CACHE_DIR`` before it imports numba, so it must be
imported before numba is (``analyzer/__init__.py`` imports it first).

Stale code. numba keys a cached kernel on its own file's contents only: a kernel that inlines a helper
from another module (the engine's per-packet pass inlines ``wireshark.py``, ``handshake.py``...) would
keep its old machine code after that helper changed, and an installed upgrade could run a mix of
versions. So the kernels are cached in a subfolder named after a fingerprint of every source file of
the package, numba's and Python's versions (``fingerprint``): any change means a fresh folder, and the
folders of other fingerprints are removed. ``cache_ready()`` says whether this fingerprint's kernels were
all compiled (``analyzer.report.kernels`` compiles them, ``make`` runs it at install time).

Quick loads. Every kernel is compiled once and cached on disk (``cache=True``). Loading a cached kernel
is quick, but numba first refreshes its whole compilation context: it imports and registers its typing
and lowering tables (about 60 modules, ~0.17 s), which only compiling needs. That is a fifth of a
one-million-frame ``analyze`` run. Here a kernel's cache load skips that refresh: the machine code is
loaded just as numba loads it, with numba's runtime (NRT) set up first for a kernel that uses it. When
the cache has no entry, numba compiles as usual (and its compiler refreshes the context itself).

The short-cut uses two internals of numba's cache (``_load_overload`` and
``_guard_against_spurious_io_errors``), unchanged from 0.60 to 0.68. With another numba version, or with
``TCP_ANALYZER_NUMBA_FULL_LOAD=1`` in the environment, kernels load the normal way: slower start, same
results (a test runs ``analyze`` both ways and compares the tables).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import NamedTuple

CACHE_NAME = "tcp-analyzer-numba"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger("tcp-analyzer")


class CacheChoice(NamedTuple):
    """Where numba caches: ``folder`` for ``NUMBA_CACHE_DIR`` (None: next to the sources, or the user's
    own setting), ``cached`` False when no safe folder exists; ``note``: why a folder was refused."""

    folder: str | None
    cached: bool
    note: str = ""


def private_folder_problem(path: str) -> str | None:
    """Make ``path`` (mode 0700) if it does not exist; why it is not a private folder of this user, or None.

    Checked with ``lstat``: a symlink is refused wherever it points."""
    try:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)  # ~/.cache on a fresh account
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not {os.geteuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it is not writable"
    return None


def cache_candidates(environ: Mapping[str, str]) -> list[str]:
    """Private cache folders to try in order: the user's cache folder (XDG), then one in the temp folder."""
    home_cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    paths = [os.path.join(home_cache, CACHE_NAME), os.path.join(tempfile.gettempdir(), f"{CACHE_NAME}-{os.geteuid()}")]
    return [p for p in paths if os.path.isabs(p)]  # no HOME: "~" stays as it is, relative


def choose_cache(environ: Mapping[str, str], package_writable: bool) -> CacheChoice:
    """Where numba should cache the kernels (see the module docstring)."""
    if environ.get("NUMBA_CACHE_DIR") or package_writable:
        return CacheChoice(None, True)
    refused = []
    for path in cache_candidates(environ):
        existed = os.path.lexists(path)
        problem = private_folder_problem(path)
        if problem is None:
            note = f"tcp-analyzer: kernel cache {refused[0]}; using {path}" if refused else ""
            return CacheChoice(path, True, note)
        if existed:  # a folder that could not even be made is no news; one that is there but unsafe is
            refused.append(f"{path} refused: {problem}")
    reason = refused[0] if refused else "no private folder could be made"
    return CacheChoice(None, False, f"tcp-analyzer: kernel cache {reason}; compiling without a cache (slower start)")


def fingerprint(numba_version: str) -> str:
    """A digest of every source file of the package and of numba's and Python's versions."""
    digest = hashlib.sha256(f"{numba_version} {sys.version}".encode())
    for folder, dirs, files in sorted(os.walk(PACKAGE_DIR)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, PACKAGE_DIR).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def _versioned(base: str, name: str) -> str | None:
    """``base/name``, made private (0700) if needed, with the other fingerprints' folders in ``base`` removed;
    None when it cannot be made."""
    path = os.path.join(base, name)
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        for other in os.listdir(base):
            old = os.path.join(base, other)
            if other != name and len(other) == len(name) and all(c in "0123456789abcdef" for c in other) \
                    and os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return None
    return path


CHOSEN = "TCP_ANALYZER_KERNEL_CACHE"  # set beside NUMBA_CACHE_DIR, so that child processes keep the same folder


def _apply(choice: CacheChoice, name: str) -> CacheChoice:
    """Point numba at this fingerprint's folder (see the module docstring); the choice actually made."""
    inherited = os.environ.get("NUMBA_CACHE_DIR")
    if inherited and os.environ.get(CHOSEN) == inherited and os.path.basename(inherited) == name:
        return CacheChoice(inherited, True)  # a process of ours started this one: the same folder
    if choice.note:
        log.warning(choice.note)
    if not choice.cached:
        return choice
    base = choice.folder or inherited or os.path.join(PACKAGE_DIR, "__pycache__", "kernels")
    folder = _versioned(base, name)
    if folder is None:
        log.warning("tcp-analyzer: kernel cache %s cannot be written; compiling without a cache (slower start)", base)
        return choice._replace(cached=False)
    os.environ["NUMBA_CACHE_DIR"] = os.environ[CHOSEN] = folder
    return choice._replace(folder=folder)


def _numba_version_text() -> str:
    """numba's version file, read without importing numba (``importlib.metadata`` would cost 40 ms)."""
    import importlib.util

    spec = importlib.util.find_spec("numba")
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "_version.py"), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (AttributeError, TypeError, OSError):
        return "unknown"


CACHE = _apply(choose_cache(os.environ, os.access(PACKAGE_DIR, os.W_OK)), fingerprint(_numba_version_text()))
READY_STAMP = "ready"  # written in the fingerprint's folder once every kernel is compiled there


def cache_ready() -> bool:
    """Every kernel of this version of the package is compiled in the cache (no compile on first use)."""
    return CACHE.cached and CACHE.folder is not None and os.path.exists(os.path.join(CACHE.folder, READY_STAMP))


def mark_ready() -> None:
    """Record that every kernel is compiled in the cache (``analyzer.report.kernels``)."""
    if CACHE.cached and CACHE.folder is not None:
        with open(os.path.join(CACHE.folder, READY_STAMP), "w") as fh:
            fh.write("every kernel of this version is compiled here\n")


import numba  # noqa: E402  (after NUMBA_CACHE_DIR is set)

TESTED_NUMBA = ((0, 60), (0, 68))  # numba versions whose cache internals were checked (inclusive)


def _numba_version() -> tuple[int, int]:
    try:
        major, minor = numba.__version__.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def quick_load_enabled() -> bool:
    return (TESTED_NUMBA[0] <= _numba_version() <= TESTED_NUMBA[1]
            and os.environ.get("TCP_ANALYZER_NUMBA_FULL_LOAD", "") in ("", "0"))


def _quick_cache_load(dispatcher) -> None:
    """Make ``dispatcher``'s cache load skip numba's context refresh (see the module docstring)."""
    cache = getattr(dispatcher, "_cache", None)
    if not (hasattr(cache, "_load_overload") and hasattr(cache, "_guard_against_spurious_io_errors")):
        return
    uses_nrt = dispatcher.targetoptions.get("_nrt", True)

    def load_overload(sig, target_context):
        if uses_nrt:
            from numba.core.runtime import rtsys

            rtsys.initialize(target_context)  # the runtime's symbols, which the machine code links to
        with cache._guard_against_spurious_io_errors():
            return cache._load_overload(sig, target_context)

    cache.load_overload = load_overload


def _dispatcher(func, args, options):
    """``numba.njit(*args, **options)(func)``; uncached when no cache folder can be used (numba refuses
    ``cache=True`` when it finds nowhere to write)."""
    if options.get("cache") and not CACHE.cached:
        options = {**options, "cache": False}
    try:
        return numba.njit(*args, **options)(func)
    except RuntimeError as exc:
        if not (options.get("cache") and "cannot cache" in str(exc)):
            raise
        _no_cache("numba found no folder it can write to")
        return numba.njit(*args, **{**options, "cache": False})(func)


def _no_cache(why: str) -> None:
    """From now on compile without a cache; say so once."""
    global CACHE
    if CACHE.cached:
        log.warning("tcp-analyzer: kernel cache: %s; compiling without a cache (slower start)", why)
        CACHE = CACHE._replace(cached=False)


def njit(*args, **options):
    """``numba.njit`` with the same arguments; cached kernels (not inlined helpers) load quickly."""
    if args and callable(args[0]):
        return njit(**options)(args[0])

    def decorate(func):
        dispatcher = _dispatcher(func, args, options)
        if options.get("cache") and options.get("inline", "never") == "never" and quick_load_enabled():
            _quick_cache_load(dispatcher)
        return dispatcher

    return decorate
