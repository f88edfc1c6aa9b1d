"""The engine's record arrays keep their bytes when grown (copied as opaque items, not field by field)."""
import numpy as np
import pytest

from analyzer.tcp.state import CONVERSATION, DIRECTION, PENDING, PEND_SLOTS, grow, mapping_of, new_array, raw


def _filled(shape, dtype, seed):
    a = new_array(shape, dtype)
    rng = np.random.default_rng(seed)
    a.view(np.uint8).reshape(-1)[:] = rng.integers(0, 256, a.nbytes, dtype=np.uint8)
    return a


@pytest.mark.parametrize("dtype,shape", [(CONVERSATION, (300,)), (DIRECTION, (4000,)), (PENDING, (50, PEND_SLOTS))])
def test_grow_keeps_every_byte_of_the_used_records(dtype, shape):
    a = _filled(shape, dtype, 1)
    used = shape[0] - 7
    out = grow(a, 2 * shape[0], used)
    assert out.dtype == dtype and out.shape == (2 * shape[0],) + shape[1:]
    assert out[:used].tobytes() == a[:used].tobytes()  # nested fields (history, holes) included


def test_grow_with_kept_rows_copies_those_rows_exactly():
    n = 6000  # > 1 MiB of DIRECTION records: mapped arrays, the run-by-run path
    a = _filled(n, DIRECTION, 2)
    assert mapping_of(a) is not None
    keep = np.r_[np.arange(0, 900), np.arange(1500, 1501), np.arange(2600, 5990)]
    out = grow(a, 2 * n, n - 10, keep)
    assert out[keep].tobytes() == _filled(n, DIRECTION, 2)[keep].tobytes()
    skipped = np.setdiff1d(np.arange(n - 10), keep)
    assert not raw(out)[skipped].view(np.uint8).any()  # rows not kept stay untouched zeros


def test_raw_view_of_a_field_of_records_copies_the_nested_record():
    outer = np.dtype([("pad", "i8"), ("conv", CONVERSATION)])
    rows = np.zeros(5, dtype=outer)
    src = _filled(5, CONVERSATION, 3)
    raw(rows["conv"])[[4, 0]] = raw(src)[[0, 4]]
    assert rows["conv"][4].tobytes() == src[0].tobytes() and rows["conv"][0].tobytes() == src[4].tobytes()
    assert not rows["pad"].any()
