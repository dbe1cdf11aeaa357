"""Tests for deepemhancer_engine.postprocess: removal of small disconnected blobs."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine.errors import InputError
from deepemhancer_engine.postprocess import clean_small_blobs


def _gauss(shape, centre, sigma, amp=1.0):
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return amp * np.exp(-d2 / (2 * sigma**2))


def _two_blobs():
    shape = (40, 40, 40)
    big = _gauss(shape, (14, 20, 20), 5.0)
    tiny = _gauss(shape, (33, 33, 33), 1.0, amp=0.8)
    noise = np.random.default_rng(0).standard_normal(shape) * 0.002
    return (big + tiny + noise).astype(np.float32), big, tiny


def test_tiny_blob_removed_big_intact():
    vol, big, tiny = _two_blobs()
    out = clean_small_blobs(vol, 0.1)
    assert out.dtype == np.float32 and out is not vol
    tiny_region = tiny > 0.01
    assert np.all(out[tiny_region] == 0)
    big_region = big > 0.01
    np.testing.assert_array_equal(out[big_region], vol[big_region])
    untouched = ~tiny_region
    untouched[28:39, 28:39, 28:39] = False  # the tiny blob's halo may be zeroed too
    np.testing.assert_array_equal(out[untouched], vol[untouched])


def test_low_strength_keeps_everything_above_size():
    vol, _, tiny = _two_blobs()
    out = clean_small_blobs(vol, 1e-4)  # tiny blob is larger than 1e-4 x the big one
    np.testing.assert_array_equal(out[tiny > 0.1], vol[tiny > 0.1])


@pytest.mark.parametrize("strength", [None, 0, -1])
def test_off_returns_input(strength):
    vol, _, _ = _two_blobs()
    assert clean_small_blobs(vol, strength) is vol


def test_single_component_unchanged_and_bad_strength():
    vol = _gauss((20, 20, 20), (10, 10, 10), 3.0).astype(np.float32)
    np.testing.assert_array_equal(clean_small_blobs(vol, 0.5), vol)
    with pytest.raises(InputError, match="between 0 and 1"):
        clean_small_blobs(vol, 1.5)
