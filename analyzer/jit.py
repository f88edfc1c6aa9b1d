"""``njit`` for the package's compiled kernels: ``numba.njit`` plus a quicker load of cached machine code.

Every kernel is compiled once and cached on disk (``cache=True``). Loading a cached kernel is quick, but
numba first refreshes its whole compilation context: it imports and registers its typing and lowering
tables (about 60 modules, ~0.17 s), which only compiling needs. That is a fifth of a one-million-frame
``analyze`` run. Here a kernel's cache load skips that refresh: the machine code is loaded just as
numba loads it, with numba's runtime (NRT) set up first for a kernel that uses it. When the cache has no
entry, numba compiles as usual (and its compiler refreshes the context itself).

The short-cut uses two internals of numba's cache (``_load_overload`` and
``_guard_against_spurious_io_errors``), unchanged from 0.60 to 0.68. With another numba version, or with
``TCP_ANALYZER_NUMBA_FULL_LOAD=1`` in the environment, kernels load the normal way: slower start, same
results (a test runs ``analyze`` both ways and compares the tables).
"""
from __future__ import annotations

import os

import numba

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


def njit(*args, **options):
    """``numba.njit`` with the same arguments; cached kernels (not inlined helpers) load quickly."""
    if args and callable(args[0]):
        return njit(**options)(args[0])

    def decorate(func):
        dispatcher = numba.njit(*args, **options)(func)
        if options.get("cache") and options.get("inline", "never") == "never" and quick_load_enabled():
            _quick_cache_load(dispatcher)
        return dispatcher

    return decorate
