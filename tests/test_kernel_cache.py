"""Where compiled kernels are cached: never a folder another local user could have planted.

numba loads its cache index with pickle, so a cache folder someone else can write is code they can run
as us. ``analyzer.jit.choose_cache`` picks a private folder of ours (made 0700, checked with lstat) or
none at all; these tests plant the folders an attacker would and check each is refused without a
traceback, in process and end to end as user nobody on a read-only copy of the package.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from analyzer import jit

from .tcpbuild import Capture

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="planting a folder owned by another user needs root")


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """XDG_CACHE_HOME and the temp folder pointed into tmp_path; returns (the XDG candidate, the temp one)."""
    xdg, tmp = tmp_path / "xdg", tmp_path / "tmp"
    xdg.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return xdg / jit.CACHE_NAME, tmp / f"{jit.CACHE_NAME}-{os.geteuid()}"


def test_a_fresh_private_folder_is_made_0700(homes):
    first, _ = homes
    choice = jit.choose_cache(os.environ, package_writable=False)
    assert choice == jit.CacheChoice(str(first), True, "")
    assert first.is_dir() and (first.stat().st_mode & 0o777) == 0o700


@needs_root
def test_a_planted_folder_of_another_user_is_refused(homes):
    first, second = homes
    first.mkdir(mode=0o700)
    os.chown(first, NOBODY, NOBODY)
    choice = jit.choose_cache(os.environ, package_writable=False)
    assert choice.folder == str(second) and choice.cached
    assert f"{first} refused: it belongs to uid {NOBODY}" in choice.note and "\n" not in choice.note


def test_a_symlink_is_refused_even_to_our_own_folder(homes, tmp_path):
    first, second = homes
    (tmp_path / "mine").mkdir(mode=0o700)
    first.symlink_to(tmp_path / "mine")
    choice = jit.choose_cache(os.environ, package_writable=False)
    assert choice.folder == str(second) and "it is a symlink" in choice.note


@pytest.mark.parametrize("plant, problem", [
    (lambda p: p.mkdir(mode=0o777) or p.chmod(0o777), "others can write to it (mode 777)"),
    (lambda p: p.write_bytes(b"not a folder"), "it is not a folder"),
])
def test_unusable_folders_are_refused(homes, plant, problem):
    first, second = homes
    plant(first)
    choice = jit.choose_cache(os.environ, package_writable=False)
    assert choice.folder == str(second) and problem in choice.note


def test_with_no_usable_folder_kernels_compile_uncached(homes):
    first, second = homes
    first.write_bytes(b"")
    second.symlink_to("/")
    choice = jit.choose_cache(os.environ, package_writable=False)
    assert choice.folder is None and not choice.cached
    assert choice.note.startswith("tcp-analyzer: kernel cache ") and "compiling without a cache" in choice.note


def test_the_users_own_setting_and_a_writable_package_are_left_to_numba(homes, monkeypatch):
    assert jit.choose_cache({"NUMBA_CACHE_DIR": "/somewhere"}, package_writable=False) == jit.CacheChoice(None, True)
    assert jit.choose_cache({}, package_writable=True) == jit.CacheChoice(None, True)
    assert not homes[0].exists()


def test_cache_true_kernels_compile_when_numba_can_cache_nowhere(monkeypatch, caplog):
    """numba raises at decoration when no locator can write; the kernel then compiles uncached, said once."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in numba 0.61
    monkeypatch.setattr(impl, "_locator_classes", [])  # as if no folder could be written
    monkeypatch.setattr(jit, "CACHE", jit.CacheChoice(None, True))
    with caplog.at_level(logging.WARNING, logger="tcp-analyzer"):
        twice = jit.njit(cache=True)(lambda x: 2 * x)
        thrice = jit.njit(cache=True)(lambda x: 3 * x)
    assert twice(21) == 42 and thrice(2) == 6
    assert [r.getMessage() for r in caplog.records] == [
        "tcp-analyzer: kernel cache: numba found no folder it can write to; compiling without a cache (slower start)"]
    assert not jit.CACHE.cached


# -- end to end, as user nobody -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nobody_world():
    """A read-only copy of the package (nobody cannot write next to the sources), a capture, a home
    nobody cannot write, an XDG cache folder with a planted ``tcp-analyzer-numba`` owned by root, and a
    sticky temp folder."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("running as user nobody needs root and setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="tcp-analyzer-nobody-"))
    try:
        base.chmod(0o755)
        shutil.copytree(ROOT / "analyzer", base / "pkg" / "analyzer", ignore=shutil.ignore_patterns("__pycache__"))
        for d in ("home", "xdg/" + jit.CACHE_NAME):
            (base / d).mkdir(parents=True)
        for d in ("tmp", "out"):
            (base / d).mkdir()
            (base / d).chmod(0o1777)
        cap = Capture()
        f = cap.flow()
        f.handshake()
        f.c("PA", 100, dt=0.001)
        f.close()
        cap.write(base / "cap.pcap").chmod(0o644)
        for p in (base / "pkg").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (base / "pkg").chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)


def run_as_nobody(world: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(world / "home"),
           "XDG_CACHE_HOME": str(world / "xdg"), "TMPDIR": str(world / "tmp"), "PYTHONPATH": str(world / "pkg")}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                           "-m", "analyzer", *args], capture_output=True, text=True, env=env, cwd=world / "tmp",
                          timeout=600)


def test_analyze_as_nobody_refuses_the_planted_cache_and_uses_a_private_one(nobody_world):
    """Package read-only, home not writable, the XDG cache folder planted by root: one line, a private
    folder in TMPDIR, tables written; the planted folder gets nothing."""
    out = nobody_world / "out" / "a"
    res = run_as_nobody(nobody_world, "analyze", "-q", str(nobody_world / "cap.pcap"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    own = nobody_world / "tmp" / f"{jit.CACHE_NAME}-{NOBODY}"
    assert lines == [f"tcp-analyzer: kernel cache {nobody_world}/xdg/{jit.CACHE_NAME} refused: it belongs to uid 0, "
                     f"not {NOBODY}; using {own}"]
    assert (out / "handshakes.csv").read_text().count("\n") == 2
    st = own.lstat()
    assert st.st_uid == NOBODY and (st.st_mode & 0o777) == 0o700
    assert any(own.rglob("*.nbi")), "the kernels were cached in the private folder"
    assert not any((nobody_world / "xdg" / jit.CACHE_NAME).iterdir())
    assert not any((nobody_world / "pkg").rglob("__pycache__"))


def test_every_source_hands_the_decoder_a_writable_buffer(tmp_path):
    """numba compiles a kernel once per argument type, and a read-only array is another type: were a live
    capture's or a reassembled datagram's bytes read-only, their first use after ``make`` would compile the
    decoder again (~10 s). File batches and batches built from frames must both be writable."""
    from analyzer.sources.files import FrameSource
    from analyzer.sources.frames import FrameBatch

    from . import capwrite as cw

    built = FrameBatch.from_frames([b"\x00" * 60, b"\x01" * 70], [0, 1])
    assert built.data.flags.writeable and built.data.dtype == np.uint8
    path = tmp_path / "x.pcap"
    path.write_bytes(cw.pcap([(0, b"\x00" * 60), (1000, b"\x01" * 70)]))
    for batch in FrameSource(str(path)).batches(16):
        assert batch.data.flags.writeable and batch.data.dtype == np.uint8
