"""Candidate targets of benchmarks/target_ceiling.py: the spatially varying low-pass and the pair's extra targets."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gemmi")

from deepemhancer_engine.training import simulate  # noqa: E402


def _shell_power(vol, s2, lo, hi):
    ft = np.abs(np.fft.rfftn(vol)) ** 2
    s = np.sqrt(s2)
    return float(ft[(s >= lo) & (s < hi)].sum())


def test_spatial_lowpass_known_answer():
    """Constant local resolution: exactly the global low-pass; two halves of the box at 4 and 8 A: each half
    keeps the power of its own low-pass (far from the seam) and none beyond it."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(32, 32, 32)).astype(np.float32)
    s2 = simulate._freq2(vol.shape, 1.0)
    same = simulate.spatial_lowpass(vol, s2, np.full(vol.shape, 5.0, np.float32))
    np.testing.assert_allclose(same, simulate._lowpass(vol, s2, 5.0), atol=1e-6)
    d = np.full(vol.shape, 4.0, np.float32)
    d[:, :, 16:] = 8.0
    out = simulate.spatial_lowpass(vol, s2, d)
    sharp, soft = simulate._lowpass(vol, s2, 4.0), simulate._lowpass(vol, s2, 8.0)
    np.testing.assert_allclose(out[:, :, :16], sharp[:, :, :16], atol=1e-5)
    np.testing.assert_allclose(out[:, :, 16:], soft[:, :, 16:], atol=1e-5)


def test_local_resolution_rule():
    flex = np.array([0.0, 100.0, 300.0], np.float32)
    d = simulate.local_resolution(4.0, 100.0, flex)
    np.testing.assert_allclose(d, [4.0, 4.0 * np.sqrt(2.0), 8.0], rtol=1e-6)


def test_extra_targets_leave_the_pair_unchanged(tmp_path):
    from test_simulate import _write_pdb

    pdb = _write_pdb(tmp_path / "fake.pdb")
    plain = simulate.simulate_pair(pdb, 5, voxel_size=1.5, resolution=5.0, max_box=48)
    extra = simulate.simulate_pair(pdb, 5, voxel_size=1.5, resolution=5.0, max_box=48, local_target=True)
    assert np.array_equal(plain.half1, extra.half1) and np.array_equal(plain.targets["tightTarget"],
                                                                       extra.targets["tightTarget"])
    assert set(extra.targets) == {"tightTarget", "wideTarget", "localTarget", "rigidTarget"}
    far = extra.tight_mask < 1e-6
    assert np.all(extra.targets["localTarget"][far] == 0)
    s2 = simulate._freq2(plain.half1.shape, 1.5)
    # no flexibility blur: the local target keeps at least the rigid core's power the current target damps
    lo, hi = 1 / 12.0, 1 / 6.0
    assert _shell_power(extra.targets["rigidTarget"], s2, lo, hi) >= _shell_power(extra.targets["localTarget"],
                                                                                   s2, lo, hi) * 0.999
