"""Resolution limit: the network's output up to the data's resolution, the data themselves beyond."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import scipy.fft

from deepemhancer_engine import metrics as M
from deepemhancer_engine.cli import build_parser, config_from_args, main
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.fourier import frequency_grid
from deepemhancer_engine.postprocess import DATA_FADE, DATA_FLOOR, LIMIT_EDGE, limit_resolution
from deepemhancer_engine.tests.test_cli import blob_map, write_mrc

VS = (1.2, 1.2, 1.2)
SHAPE = (40, 44, 48)


def _maps(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=SHAPE).astype(np.float32), rng.normal(size=SHAPE).astype(np.float32)


def test_spectrum_is_network_below_and_scaled_input_beyond():
    enh, inp = _maps()
    d = 4.0
    out, c = limit_resolution(enh, inp, VS, d)
    s = frequency_grid(SHAPE, VS)
    fo, fe, fi = (scipy.fft.rfftn(a.astype(np.float64)) for a in (out, enh, inp))
    low, high = s <= (1 - LIMIT_EDGE) / d - 1e-6, s >= 1 / d + 1e-6
    far = s >= (1 + DATA_FADE) / d + 1e-6
    np.testing.assert_allclose(fo[low], fe[low], atol=1e-3 * np.abs(fe).max())
    np.testing.assert_allclose(fo[far], DATA_FLOOR * c * fi[far], atol=1e-3 * np.abs(fe).max())
    ratio = np.abs(fo[high]) / np.maximum(np.abs(fi[high]), 1e-9)  # c x a damping between floor and 1
    assert ratio.min() >= DATA_FLOOR * c * 0.999 and ratio.max() <= c * 1.001
    band = (s > (1 - LIMIT_EDGE) / d) & (s <= 1 / d)
    assert c == pytest.approx(np.sqrt(np.sum(np.abs(fe[band]) ** 2) / np.sum(np.abs(fi[band]) ** 2)), rel=1e-4)


def test_no_fsc_gain_beyond_the_limit():
    """Two 'networks' adding the same invented detail to independent halves: the FSC beyond d is high
    without the limit and equals the raw halves' FSC with it."""
    h1, h2 = _maps(1)
    invented = 3 * M.lowpass(np.random.default_rng(9).normal(size=SHAPE).astype(np.float32), VS, 2.6)
    e1, e2 = 0.3 * h1 + invented, 0.3 * h2 + invented
    d = 5.0
    raw = M.fsc(h1, h2, VS)
    assert M.max_fsc_gain(M.fsc(e1, e2, VS), raw, d) > 0.5
    o1, o2 = (limit_resolution(e, h, VS, d)[0] for e, h in ((e1, h1), (e2, h2)))
    gain = M.max_fsc_gain(M.fsc(o1, o2, VS), raw, d)
    assert abs(gain) < 0.02


def test_noop_at_nyquist_and_bad_values():
    enh, inp = _maps()
    out, c = limit_resolution(enh, inp, VS, 1.2)  # 1.2 A: finer than the box's corner frequency
    assert out is enh and np.isnan(c)
    for bad in (0.0, -3.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="resolution limit"):
            limit_resolution(enh, inp, VS, bad)
    with pytest.raises(InputError, match="differ in shape"):
        limit_resolution(enh, inp[:-1], VS, 5.0)


def test_cli_flags():
    parser = build_parser()
    base = ["-i", "a.mrc", "-i2", "b.mrc", "-o", "c.mrc"]
    cfg = config_from_args(parser.parse_args(base))
    assert cfg.limit_resolution and cfg.resolution is None
    cfg = config_from_args(parser.parse_args(base + ["--resolution", "3.5"]))
    assert cfg.resolution == 3.5
    assert not config_from_args(parser.parse_args(base + ["--no-resolution-limit"])).limit_resolution
    with pytest.raises(InputError, match="resolution"):
        config_from_args(parser.parse_args(base + ["--resolution", "-1"]))


def test_half_maps_get_their_fsc_limit(tmp_path, tiny_weights, capfd):
    truth = blob_map((48, 46, 44), seed=3, noise=0.0)
    rng = np.random.default_rng(4)
    h1 = write_mrc(tmp_path / "h1.mrc", truth + rng.normal(0, 0.3, truth.shape).astype(np.float32))
    h2 = write_mrc(tmp_path / "h2.mrc", truth + rng.normal(0, 0.3, truth.shape).astype(np.float32))
    common = ["-i", str(h1), "-i2", str(h2), "--weights", str(tiny_weights)]
    assert main(common + ["-o", str(tmp_path / "auto.mrc")]) == 0
    log = capfd.readouterr().err
    assert "Half-map FSC-0.143" in log and "Resolution limit" in log
    d = M.fsc(mrcfile.read(h1), mrcfile.read(h2), 1.3).resolution(0.143)
    # The data beyond d over the whole box (no envelope): below d the output is exactly the network's, which the
    # run without the limit returns (the same d to the last digit: the conditioned map, and so the noise that
    # pads it to a cube, must be the same).
    common += ["--resolution", repr(d), "-q", "--no-match-amplitudes"]  # the limit alone
    assert main(common + ["-o", str(tmp_path / "lim.mrc"), "--no-solvent-envelope"]) == 0
    assert main(common + ["-o", str(tmp_path / "raw.mrc"), "--no-resolution-limit"]) == 0
    with mrcfile.open(tmp_path / "lim.mrc") as a, mrcfile.open(tmp_path / "raw.mrc") as b:
        lim, raw = a.data.copy(), b.data.copy()
    assert lim.shape == raw.shape and not np.allclose(lim, raw)
    s = frequency_grid(lim.shape, (1.3,) * 3)
    low = s <= (1 - LIMIT_EDGE) / d - 1e-6
    fl, fr = scipy.fft.rfftn(lim.astype(np.float64)), scipy.fft.rfftn(raw.astype(np.float64))
    np.testing.assert_allclose(fl[low], fr[low], atol=1e-3 * np.abs(fr).max())  # the network's, below d
