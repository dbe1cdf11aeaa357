"""Null-response correction: the network's fixed response to pure noise is measured and subtracted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepemhancer_engine import nullresponse, runner
from deepemhancer_engine.cli import build_parser, config_from_args
from deepemhancer_engine.config import TilingConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.inference import predict_volume
from deepemhancer_engine.nullresponse import NullCorrection
from deepemhancer_engine.runner import NetworkRunner

CPU = torch.device("cpu")
TILE = 16


def fp32(net: nn.Module, batch_size: int | None = None, device=CPU) -> NetworkRunner:
    return NetworkRunner(net, device, batch_size=batch_size, amp="off")


class PatternNet(nn.Module):
    """Output = a fixed pattern tied to the cube position + ``gain`` x input (a caricature of the
    cube-position bias of a network trained on finite cubes)."""

    def __init__(self, gain: float = 0.0) -> None:
        super().__init__()
        z, y, x = np.indices((TILE, TILE, TILE))
        r = np.sqrt((z - 7.5) ** 2 + (y - 7.5) ** 2 + (x - 7.5) ** 2)
        self.register_buffer("pattern", torch.from_numpy((-0.05 * (r < 5)).astype(np.float32)))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pattern + self.gain * x


def test_fixed_pattern_removed_exactly():
    vol = np.random.default_rng(0).normal(0, 0.1, (40, 33, 50)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=10)
    raw, _ = predict_volume(vol, tiling, fp32(PatternNet(), 4))
    assert np.abs(raw).max() > 0.02  # without the correction: a grid of blobs
    run = fp32(PatternNet(), 4)
    fixed, _ = predict_volume(vol, tiling, run, null=NullCorrection(run, 0.1))
    np.testing.assert_allclose(fixed, 0.0, atol=1e-6)


def test_linear_part_kept_and_null_deterministic():
    vol = np.random.default_rng(1).normal(0, 1.0, (32, 32, 32)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=8)
    run_a = fp32(PatternNet(gain=2.0), 3)
    a = NullCorrection(run_a, 0.1)
    b = NullCorrection(fp32(PatternNet(gain=2.0), 5), 0.1)
    out, timings = predict_volume(vol, tiling, run_a, null=a)
    # null response = pattern + 2 x (mean of the NULL_CUBES noise cubes): within a few std of the pattern
    null = a.response(TILE)
    assert np.abs(null - PatternNet().pattern.numpy()).max() < 5 * 2 * 0.1 / np.sqrt(nullresponse.NULL_CUBES)
    np.testing.assert_array_equal(null, b.response(TILE))  # fixed seed, independent of batch size
    assert np.corrcoef(out.ravel(), vol.ravel())[0, 1] > 0.99
    assert timings["cubes"] == 14  # 3 x 3 x 3 grid, fcc lattice: the 14 cubes of even index sum (corners among them)
    assert a.response(TILE) is null  # measured once per cube size


def test_off_without_a_correction_and_validated(tiny_weights):
    from deepemhancer_engine import pipeline
    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig

    vol = np.zeros((16, 16, 16), np.float32)
    raw, _ = predict_volume(vol, TilingConfig(tile=TILE, stride=8), fp32(PatternNet()))
    assert np.abs(raw).max() > 0.02  # no correction unless one is given
    off = pipeline.load(EnhanceConfig(weights=tiny_weights, inference=InferenceConfig(device="cpu",
                                                                                      null_correction=False)))
    assert off.null is None
    with pytest.raises(InputError, match="must be positive"):
        NullCorrection(fp32(nn.Identity()), 0.0)


def test_cli_switch():
    parser = build_parser()
    on = config_from_args(parser.parse_args(["-i", "a.mrc", "-o", "b.mrc"]))
    off = config_from_args(parser.parse_args(["-i", "a.mrc", "-o", "b.mrc", "--no-null-correction"]))
    assert on.inference.null_correction and not off.inference.null_correction


def test_band_limited_null_noise():
    rng = np.random.default_rng(0)
    cubes = nullresponse._band_noise(rng, 3, TILE, (1.0, 0.5, 0.25), 0.1)
    assert cubes.shape == (3, TILE, TILE, TILE) and cubes.dtype == np.float32
    np.testing.assert_allclose(cubes.std(axis=(1, 2, 3)), 0.1, rtol=1e-5)
    power = np.abs(np.fft.fftn(cubes[0])) ** 2
    f = np.abs(np.fft.fftfreq(TILE))
    assert power[:, f > 0.25 + 1e-9, :].max() < 1e-8 * power.sum()  # y: half the Nyquist frequency
    assert power[:, :, f > 0.125 + 1e-9].max() < 1e-8 * power.sum()  # x: a quarter
    p = NullCorrection(fp32(PatternNet(gain=1.0), 4), 0.1)
    white, band = p.response(TILE), p.response(TILE, (1.0, 0.5, 0.5))
    assert white is p.response(TILE, (1.0, 1.0, 1.2))  # at or beyond Nyquist everywhere = white
    assert band is not white and not np.array_equal(band, white)


@pytest.mark.gpu
def test_cuda_null_correction_matches_cpu():
    vol = np.random.default_rng(2).normal(0, 0.3, (40, 36, 50)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=8)
    cpu_run, gpu_run = fp32(PatternNet(gain=1.5), 4), fp32(PatternNet(gain=1.5), 3, torch.device("cuda:0"))
    cpu, _ = predict_volume(vol, tiling, cpu_run, null=NullCorrection(cpu_run, 0.1))
    gpu, _ = predict_volume(vol, tiling, gpu_run, null=NullCorrection(gpu_run, 0.1))
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)


# ------------------------------------------------------------------ null responses shipped with weights
def test_shipped_file_round_trip_and_used(tiny_weights, caplog):
    from deepemhancer_engine import pipeline
    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig
    from deepemhancer_engine.nullresponse import NullStore, load_null_responses, measure, null_path
    from deepemhancer_engine.weights import load_model

    path = measure(tiny_weights, cubes=6, precisions=("float32",))
    assert path == null_path(tiny_weights) == tiny_weights.with_suffix(".null.npz")
    cfg = EnhanceConfig(weights=tiny_weights, inference=InferenceConfig(device="cpu"))
    lm = pipeline.load(cfg)
    store = lm.null.store
    assert isinstance(store, NullStore) and set(store.shipped) == {(32, "float32")}
    shipped = store.shipped[(32, "float32")]
    # the file holds what a NullCorrection measures with that many cubes (stored as float16)
    ref = NullCorrection(fp32(load_model("tightTarget", tiny_weights)[0]), 0.1)
    np.testing.assert_allclose(shipped, ref.measure(32, cubes=6), rtol=1e-3, atol=1e-6)
    # used as it is in the matching precision, measured (NULL_CUBES cubes) in another
    off = NullCorrection(fp32(lm.runner.model), 0.1, store=store)
    np.testing.assert_array_equal(off.response(32), shipped)
    bf_run = NetworkRunner(lm.runner.model, CPU, amp="bf16")
    bf = NullCorrection(bf_run, 0.1, store=store)
    assert bf_run.precision == "bfloat16" and not np.array_equal(bf.response(32), shipped)
    # stale file (other weights or noise level): ignored with a warning
    caplog.clear()
    assert load_null_responses(tiny_weights, "0" * 64, 0.1) == {}
    assert load_null_responses(tiny_weights, lm.card.sha256, 0.2) == {}
    assert "other weights" in caplog.text and "noise level 0.1, not 0.2" in caplog.text
    good = null_path(tiny_weights).read_bytes()
    for bad in (b"not a zip", good[: len(good) // 2]):  # garbage, and a file cut short
        caplog.clear()
        null_path(tiny_weights).write_bytes(bad)
        assert load_null_responses(tiny_weights, lm.card.sha256, 0.1) == {} and "cannot read" in caplog.text


def test_null_responses_not_shipped_cached_per_user(tiny_weights, tmp_path, monkeypatch, caplog):
    from deepemhancer_engine import nullresponse
    from deepemhancer_engine.nullresponse import NullStore, cache_dir, measure
    from deepemhancer_engine.weights import load_model

    model, card = load_model("tightTarget", tiny_weights)
    band = (0.5, 0.5, 0.75)
    cache = tmp_path / "cache"
    first = NullCorrection(fp32(model), 0.1, store=NullStore(tiny_weights, card.sha256, 0.1, cache))
    measured = first.response(32, band)
    (entry,) = cache.iterdir()
    assert card.sha256[:16] in entry.name and "0.500_0.500_0.750" in entry.name
    assert entry.name.endswith(f"-s{nullresponse.NULL_SEED}x{nullresponse.NULL_CUBES}.npz")
    # a second run (new correction) reads it back instead of measuring: no forward pass at all
    second_run = fp32(model)
    second = NullCorrection(second_run, 0.1, store=NullStore(tiny_weights, card.sha256, 0.1, cache))
    monkeypatch.setattr(second_run, "forward", lambda batch: pytest.fail("measured although cached"))
    with caplog.at_level("INFO", logger="deepemhancer_engine.nullresponse"):
        np.testing.assert_allclose(second.response(32, band), measured, rtol=1e-3, atol=1e-6)
    assert "cached in" in caplog.text
    # other weights do not use it
    other = NullStore(tiny_weights, "f" * 64, 0.1, cache)
    assert other.get(32, "float32", band) == (None, "")
    # white noise in a precision the shipped file lacks (fp16 on a GPU) is cached too; one it holds is not
    first.store.put(32, "float16", None, measured)
    found, where = first.store.get(32, "float16")
    assert where.startswith("cached in") and "-float16-32-white-" in where
    np.testing.assert_allclose(found, measured, rtol=1e-3, atol=1e-6)
    measure(tiny_weights, cubes=6, precisions=("float32",))
    with_file = NullStore(tiny_weights, card.sha256, 0.1, cache)
    with_file.put(32, "float32", None, measured)
    assert len(list(cache.iterdir())) == 2 and with_file.get(32, "float32")[1] == "shipped with the weights"
    # an unwritable cache is skipped
    blocked = tmp_path / "file"
    blocked.write_text("x")
    NullStore(tiny_weights, card.sha256, 0.1, blocked / "sub").put(32, "float32", band, measured)
    # where the cache lives
    monkeypatch.setenv(nullresponse.CACHE_ENV, "off")
    assert cache_dir() is None and NullStore(tiny_weights, card.sha256, 0.1).cache is None
    monkeypatch.setenv(nullresponse.CACHE_ENV, str(tmp_path / "c2"))
    assert cache_dir() == tmp_path / "c2"
    monkeypatch.delenv(nullresponse.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "deepemhancer"


def test_shipped_null_responses_match_the_weights():
    """Every shipped model has its null responses; the default precision's matches a run-time measurement."""
    from deepemhancer_engine.config import ModelName
    from deepemhancer_engine.nullresponse import load_null_responses
    from deepemhancer_engine.weights import load_model, resolve_weights

    for name in ModelName:
        pt, card = resolve_weights(name)
        table = load_null_responses(pt, card.sha256, 0.1)
        assert (card.tile, "float32") in table, f"{pt}: no shipped null response"
        if runner.cpu_has_fast_bf16():
            assert (card.tile, "bfloat16") in table
    pt, _ = resolve_weights(ModelName.TIGHT)
    model, card = load_model(ModelName.TIGHT)
    run = NetworkRunner(model, CPU)
    shipped = load_null_responses(pt, card.sha256, 0.1)[(card.tile, run.precision)]
    measured = NullCorrection(run, 0.1).measure(card.tile, cubes=32)  # the first 32 of the file's 128, for speed
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    # 32 noise cubes leave ~15 % sampling noise against the 128-cube file (the shipped default responds
    # faintly: rms ~0.001 for noise of std 0.1); the other precision's entry differs by ~50 %, garbage or
    # another model's by ~100 % or more
    assert rms(measured - shipped) < 0.3 * rms(shipped), (rms(measured - shipped), rms(shipped))


# ------------------------------------------------------------------ NullCorrection: cache and store
class FakeStore:
    """Records the lookups and keeps what is put."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.kept: dict[tuple, np.ndarray] = {}

    def get(self, tile, precision, band, colour=None):
        key = band if colour is None else (band, colour)
        self.calls.append(("get", tile, precision, key))
        found = self.kept.get((tile, precision, key))
        return (found, "the fake store") if found is not None else (None, "")

    def put(self, tile, precision, band, response, colour=None):
        key = band if colour is None else (band, colour)
        self.calls.append(("put", tile, precision, key))
        self.kept[(tile, precision, key)] = response


def test_null_correction_measures_once_per_cube_and_band_with_the_store_given(monkeypatch):
    run = fp32(PatternNet(gain=1.0), 4)
    forwards = []
    forward = run.forward
    monkeypatch.setattr(run, "forward", lambda batch: forwards.append(len(batch)) or forward(batch))
    store = FakeStore()
    null = NullCorrection(run, 0.1, store=store)
    white = null.response(TILE)
    assert sum(forwards) == nullresponse.NULL_CUBES and max(forwards) == 4  # the runner's batch
    band = null.response(TILE, (0.5, 0.5, 1.0))
    assert null.response(TILE) is white and null.response(TILE, (1.0, 1.2, 1.0)) is white
    assert null.response(TILE, (0.5004, 0.4996, 1.0)) is band  # the same band to 3 decimals
    assert sum(forwards) == 2 * nullresponse.NULL_CUBES  # nothing measured twice
    assert store.calls == [("get", TILE, "float32", None), ("put", TILE, "float32", None),
                           ("get", TILE, "float32", (0.5, 0.5, 1.0)), ("put", TILE, "float32", (0.5, 0.5, 1.0))]
    # another correction with the same store finds both: no forward pass
    forwards.clear()
    again = NullCorrection(run, 0.1, store=store)
    assert again.response(TILE) is white and again.response(TILE, (0.5, 0.5, 1.0)) is band and not forwards
    # a stored response of the wrong shape is measured again; without a store nothing is kept outside
    store.kept[(8, "float32", None)] = np.zeros((4, 4, 4), np.float32)
    assert NullCorrection(fp32(nn.Identity()), 0.1, store=store).response(8).shape == (8, 8, 8)
    assert store.calls[-1] == ("put", 8, "float32", None)
    np.testing.assert_array_equal(NullCorrection(run, 0.1).response(TILE), white)


def test_band_noise_is_the_cached_responses_noise():
    """The band limit keeps exactly the frequencies (cycles/voxel) up to band x 0.5 on each axis: the
    noise, and so every cached and shipped response, stays what it was measured with."""
    tile, band = 16, (0.5, 1.0, 0.25)
    rng = np.random.default_rng(nullresponse.NULL_SEED)
    ref = rng.normal(0.0, 1.0, (2, tile, tile, tile))
    spec = np.fft.rfftn(ref, axes=(1, 2, 3))
    spec[:, np.abs(np.fft.fftfreq(tile)) > 0.25 + 1e-9] = 0
    spec[..., np.fft.rfftfreq(tile) > 0.125 + 1e-9] = 0
    ref = np.fft.irfftn(spec, s=(tile,) * 3, axes=(1, 2, 3))
    ref *= 0.1 / ref.std(axis=(1, 2, 3), keepdims=True)
    got = nullresponse._band_noise(np.random.default_rng(nullresponse.NULL_SEED), 2, tile, band, 0.1)
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    assert nullresponse.band_key((1.0, 1.0, 1.0)) is None and nullresponse.band_key(band) == band


class ColourNet(nn.Module):
    """Output = a fixed cube-position pattern scaled by how much of the input's power lies in its fine
    detail (mean squared Laplacian over mean square): its response to pure noise depends on the noise's
    colour, as the real network's does, and not on the noise level."""

    def __init__(self) -> None:
        super().__init__()
        self.pattern = PatternNet().pattern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lap = -6 * x
        for dim in (1, 2, 3):
            lap = lap + torch.roll(x, 1, dim) + torch.roll(x, -1, dim)
        ratio = (lap ** 2).mean(dim=(1, 2, 3), keepdim=True) / (x ** 2).mean(dim=(1, 2, 3), keepdim=True)
        return self.pattern * ratio / 12.0


def _rising_noise(shape, seed):
    """Noise whose power grows like the squared frequency (an unregularised reconstruction's)."""
    from deepemhancer_engine.noisegen import coloured_noise

    return coloured_noise(shape, (1.0, 1.0, 1.0), "rising", seed, std=0.1)


def test_noise_colour_of_white_rising_masked_and_crowded_maps():
    rng = np.random.default_rng(3)
    assert nullresponse.noise_colour(rng.normal(0, 0.1, (48, 48, 48)).astype(np.float32)) is None  # white
    rising = nullresponse.noise_colour(_rising_noise((48, 48, 48), 4))
    assert rising is not None and len(rising) == len(nullresponse.COLOUR_EDGES) - 1
    assert rising[-1] - rising[1] >= 6  # power up >= 8x from the second bin to Nyquist (half steps of log2)
    assert all(b >= a - 1 for a, b in zip(rising, rising[1:]))  # rising, up to the estimate's noise
    again = nullresponse.noise_colour(_rising_noise((48, 48, 48), 5))  # another realisation: the same colour
    assert max(abs(a - b) for a, b in zip(again, rising)) <= 1
    assert nullresponse.noise_colour(np.zeros((48, 48, 48), np.float32)) is None  # masked: nothing to measure
    crowded = np.full((48, 48, 48), 5.0, np.float32)  # a molecule filling the box: no solvent
    crowded[:2] = rng.normal(0, 0.1, (2, 48, 48))
    assert nullresponse.noise_colour(crowded) is None
    # the colour of a band-limited map is measured inside its band only (white there)
    spec = np.fft.rfftn(rng.normal(0, 1, (48, 48, 48)))
    freqs = np.meshgrid(np.fft.fftfreq(48), np.fft.fftfreq(48), np.fft.rfftfreq(48), indexing="ij")
    spec[np.sqrt(sum(f * f for f in freqs)) > 0.25] = 0
    limited = np.fft.irfftn(spec, s=(48, 48, 48), axes=(0, 1, 2)).astype(np.float32)
    assert nullresponse.noise_colour(limited, (0.5, 0.5, 0.5)) is None


def test_coloured_null_noise_follows_the_colour():
    bins = len(nullresponse.COLOUR_EDGES) - 1
    colour = tuple([0] * 8 + [4] * (bins - 8))  # 4x the power (4 half steps of log2) beyond 1/4 cycle/voxel
    cubes = nullresponse._band_noise(np.random.default_rng(0), 4, 32, None, 0.1, colour)
    np.testing.assert_allclose(cubes.std(axis=(1, 2, 3)), 0.1, rtol=1e-5)
    power = np.abs(np.fft.fftn(cubes, axes=(1, 2, 3))) ** 2
    f = np.fft.fftfreq(32)
    radius = np.sqrt(sum(g * g for g in np.meshgrid(f, f, f, indexing="ij")))
    inner = power[:, (radius > 0.05) & (radius < 0.2)].mean()
    outer = power[:, (radius > 0.3) & (radius < 0.45)].mean()
    assert 3.0 < outer / inner < 5.0
    assert nullresponse.colour_tag(None) == "" and nullresponse.colour_tag((0, -1, 2)) == "-c0.-1.2"


def test_coloured_null_removes_what_the_white_one_leaves():
    """A network whose null response depends on the noise's colour: on a map of rising noise, the response
    measured with the map's colour takes the fixed pattern out, the white one leaves most of it."""
    volume = _rising_noise((48, 48, 48), 6)
    colour = nullresponse.noise_colour(volume)
    assert colour is not None
    run = fp32(ColourNet(), 4)
    tiling = TilingConfig(tile=TILE, stride=8, lattice="cubic")
    null = NullCorrection(run, 0.1)
    raw = predict_volume(volume, tiling, run)[0]
    white = predict_volume(volume, tiling, run, null=null)[0]
    matched = predict_volume(volume, tiling, run, null=null, null_colour=colour)[0]
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(matched) < 0.5 * rms(white) and rms(white) > 0.15 * rms(raw)  # measured 0.0036, 0.0090, 0.038
    assert null.response(TILE, None, colour) is null.response(TILE, None, colour)  # measured once


def test_coloured_responses_cached_under_their_colour(tmp_path, tiny_weights):
    store = nullresponse.NullStore(tiny_weights, "ab" * 32, 0.1, cache=tmp_path)
    response = np.full((8, 8, 8), 0.01, np.float32)
    store.put(8, "float32", None, response, (0, 1, 2))
    assert store.get(8, "float32", None)[0] is None  # white: not the coloured entry
    found, where = store.get(8, "float32", None, (0, 1, 2))
    np.testing.assert_allclose(found, response, rtol=1e-3)
    assert "-c0.1.2-" in where and store.get(8, "float32", None, (0, 1, 3))[0] is None
    # a shipped (white) response is never handed out for a colour
    shipped = nullresponse.NullStore(tiny_weights, "ab" * 32, 0.1, cache=tmp_path / "empty")
    shipped.shipped[(8, "float32")] = response
    assert shipped.get(8, "float32", None)[0] is response
    assert shipped.get(8, "float32", None, (0, 1, 2))[0] is None


def test_colour_of_a_resampled_map_is_measured_inside_its_band():
    """A 2 A map of rising noise on the 1 A working grid holds nothing beyond half the Nyquist frequency on
    each axis; the colour is measured on what the band keeps, so the null noise (band x colour) has the map's
    share of power in the band's corners (beyond the inscribed sphere), not less."""
    from deepemhancer_engine.noisegen import coloured_noise
    from deepemhancer_engine.resample import to_working_grid

    band = (0.5, 0.5, 0.5)
    work = to_working_grid(coloured_noise((40, 40, 40), (2.0,) * 3, "rising", 9), (2.0,) * 3, target=1.0)[0]
    colour = nullresponse.noise_colour(work, band)
    assert colour is not None
    noise = nullresponse._band_noise(np.random.default_rng(1), 2, 80, band, 0.1, colour)

    def corner_share(a):
        power = np.abs(np.fft.fftn(a, axes=(-3, -2, -1))) ** 2
        f = np.fft.fftfreq(a.shape[-1])
        radius = np.sqrt(sum(g * g for g in np.meshgrid(f, f, f, indexing="ij")))
        return float(power[..., radius > 0.25].sum() / power.sum())

    assert corner_share(noise) == pytest.approx(corner_share(work), abs=0.06)  # measured 0.69 and 0.66
    assert corner_share(work) > 0.5


def test_unconditioned_maps_get_their_noise_colour_conditioned_maps_the_band(tiny_weights, monkeypatch):
    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig
    from deepemhancer_engine.pipeline import enhance, load

    monkeypatch.setenv(nullresponse.CACHE_ENV, "off")
    volume = _rising_noise((40, 40, 40), 7)
    config = EnhanceConfig(weights=tiny_weights, inference=InferenceConfig(skip_solvent=False))  # noise: no molecule
    model = load(config)
    enhance(volume, 1.0, config=config, model=model)  # one map, no resolution: nothing conditions it
    (colour_key,) = [k for k in model.null._responses if k[2] is not None]
    assert colour_key[1] is None and colour_key[2] == nullresponse.noise_colour(volume)
    model.null._responses.clear()
    enhance(volume, 1.0, config=config, model=model, resolution=6.0)  # conditioned: the band's low-pass
    assert [k[1:] for k in model.null._responses] == [((1.0, 1.0, 1.0, 6.0), None)]
    model.null._responses.clear()
    enhance(np.random.default_rng(8).normal(0, 1, (40, 40, 40)).astype(np.float32), 1.0, config=config, model=model)
    assert [k[1:] for k in model.null._responses] == [(None, None)]  # white noise: the white response
