"""The fast paths of inference: mask skipping, in-place merging, mixed precision, batch choice, GPU loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepemhancer_engine import inference, runner
from deepemhancer_engine.config import BlendMode, TilingConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.inference import predict_volume
from deepemhancer_engine.runner import NetworkRunner, batch_from_memory
from deepemhancer_engine.tiling import TileGrid, TileMerger, iter_batches, pad_to_tile, split_by_mask
from deepemhancer_engine.weights import load_model

CPU = torch.device("cpu")


def blob_and_mask(shape=(40, 72, 56), centre=(20, 20, 18), radius=9):
    rng = np.random.default_rng(3)
    vol = rng.normal(scale=0.1, size=shape).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    mask = np.clip(radius + 2 - r, 0, 1).astype(np.float32)  # soft edge, zero far away
    vol += (r < radius).astype(np.float32)
    return vol, mask


# --- tiling: subsets, skipping, weighted add, in-place result -----------------------------------


def test_split_by_mask_and_iter_subset():
    grid = TileGrid.from_shape((16, 16, 40), 16, 8)  # x starts 0, 8, 16, 24
    mask = np.zeros(grid.shape, np.float32)
    mask[:, :, 2] = 1  # only cube 0 sees it
    mask[:, :, 39] = 1e-4  # below the threshold: solvent
    needed, skipped = split_by_mask(grid, mask)
    assert needed == [(0, 0, 0)] and skipped == [(0, 0, 8), (0, 0, 16), (0, 0, 24)]
    batches = list(iter_batches(np.zeros(grid.shape, np.float32), grid, 2, starts=skipped))
    assert [s for _, s in batches] == [[(0, 0, 8), (0, 0, 16)], [(0, 0, 24)]]
    with pytest.raises(ValueError, match="mask shape"):
        split_by_mask(grid, np.zeros((16, 16, 39)))


@pytest.mark.parametrize("blend", [BlendMode.CONSTANT, BlendMode.GAUSSIAN])
def test_merger_skip_fills_and_keeps_the_rest(blend):
    # 1-D along x: length 10, tile 5, stride 3 -> cubes at 0, 2, 5; skip the last one.
    grid = TileGrid.from_shape((5, 5, 10), 5, 3)
    merger = TileMerger(grid, blend, fill=-7.0)
    merger.add(np.full((2, 5, 5, 5), 3.0, np.float32), [(0, 0, 0), (0, 0, 2)])
    with pytest.raises(RuntimeError, match="2 of 3 cubes"):
        merger.result()
    merger.skip([(0, 0, 5)])
    out = merger.result()
    np.testing.assert_allclose(out[2, 2], [3, 3, 3, 3, 3, 3, 3, -7, -7, -7], atol=1e-6)
    assert merger.result() is out  # computed once, in place
    with pytest.raises(RuntimeError, match="already returned"):
        merger.add(np.zeros((1, 5, 5, 5)), [(0, 0, 0)])


def test_weighted_add_equals_plain_add():
    grid = TileGrid.from_shape((20, 24, 30), 16, 8)
    rng = np.random.default_rng(0)
    preds = {s: rng.normal(size=(16, 16, 16)).astype(np.float32) for s in grid.iter_starts()}
    plain, weighted = TileMerger(grid, "gaussian"), TileMerger(grid, "gaussian")
    for s, p in preds.items():
        keep = p.copy()
        plain.add(p[None], [s])
        np.testing.assert_array_equal(p, keep)  # the caller's prediction is not modified
        weighted.add((p * weighted.weights)[None], [s], weighted=True)
    np.testing.assert_allclose(plain.result(), weighted.result(), rtol=1e-6, atol=1e-6)


# --- predict_volume: mask skipping is exact inside the mask ------------------------------------------


def test_mask_skipping_exact_inside_mask(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol, mask = blob_and_mask()
    tiling = TilingConfig(tile=card.tile, stride=16)
    # one cube per batch: a cube's output then does not depend on which cubes share its batch (oneDNN's
    # fp32 kernels may round differently for other batch contents), so the comparison can be exact
    run = NetworkRunner(net, CPU, batch_size=1, amp="off")
    full, t_full = predict_volume(vol, tiling, run)
    calls = []
    skipped, t = predict_volume(vol, tiling, run, mask=mask, progress=lambda d, n: calls.append((d, n)))
    assert t["skipped"] > 0 and t["cubes"] + t["skipped"] == t_full["cubes"]
    assert calls[-1] == (t["cubes"],) * 2
    inside = mask > 1e-3
    np.testing.assert_array_equal(skipped[inside], full[inside])
    # the grid: starts on multiples of 16 on the padded map, fcc lattice (Gaussian, stride <= tile/2)
    assert tiling.cube_lattice.value == "fcc" and inference.cube_alignment(tiling, 8) == 16
    padded_mask, unpad = pad_to_tile(mask, card.tile, align=16)
    grid = TileGrid.from_shape(padded_mask.shape, card.tile, 16, 16, "fcc")
    assert t["cubes"] + t["skipped"] == grid.n_tiles
    covered = np.zeros(padded_mask.shape, bool)
    for s in split_by_mask(grid, padded_mask)[0]:
        covered[grid.slices(s)] = True
    assert np.all(skipped[~covered[unpad]] == 0)  # only-solvent cubes give the solvent value


def test_mask_of_zeros_skips_everything_and_wrong_shape_fails():
    run = NetworkRunner(nn.Identity(), CPU, batch_size=2)
    out, t = predict_volume(np.ones((16, 16, 24), np.float32), TilingConfig(16, 8), run, mask=np.zeros((16, 16, 24)))
    assert out.shape == (16, 16, 24) and not out.any() and t["cubes"] == 0
    with pytest.raises(InputError, match="mask shape"):
        predict_volume(np.ones((16, 16, 24), np.float32), TilingConfig(16, 8), run, mask=np.zeros((16, 16, 23)))


# --- precision, layout, batch size --------------------------------------------------------------


def test_cpu_precision_defaults(monkeypatch):
    monkeypatch.setattr(runner, "cpu_has_fast_bf16", lambda: True)
    p = NetworkRunner(nn.Identity(), CPU)
    assert p.amp_dtype is torch.bfloat16 and p.channels_last
    monkeypatch.setattr(runner, "cpu_has_fast_bf16", lambda: False)
    p = NetworkRunner(nn.Identity(), CPU)
    assert p.amp_dtype is None and not p.channels_last
    p = NetworkRunner(nn.Identity(), CPU, amp="bf16", channels_last=False)
    assert p.amp_dtype is torch.bfloat16 and not p.channels_last
    assert isinstance(runner.cpu_has_fast_bf16(), bool)


def test_bf16_channels_last_close_to_fp32(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol, _ = blob_and_mask()
    tiling = TilingConfig(tile=card.tile, stride=16)
    fp32, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=4, amp="off", channels_last=False))
    bf16, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=4, amp="bf16", channels_last=True))
    cc = np.corrcoef(fp32.ravel(), bf16.ravel())[0, 1]
    assert cc > 0.999 and bf16.flags.c_contiguous and bf16.dtype == np.float32


def test_batch_size_choice():
    assert batch_from_memory(80e9, 300e6) == 64
    assert batch_from_memory(4e9, 300e6) == 6
    assert batch_from_memory(1e6, 300e6) == 1
    assert batch_from_memory(80e9, 300e6, cap=8) == 8
    assert NetworkRunner(nn.Identity(), CPU).resolve_batch_size(64) == runner.CPU_BATCH_SIZE
    assert NetworkRunner(nn.Identity(), CPU, batch_size="auto").batch_size is None
    assert NetworkRunner(nn.Identity(), CPU, batch_size=3).resolve_batch_size(64) == 3
    for bad in (0, -1, 2.5, "big", True):
        with pytest.raises(InputError, match="batch size"):
            NetworkRunner(nn.Identity(), CPU, batch_size=bad)


def test_timings_reported():
    _, t = predict_volume(np.zeros((20, 20, 20), np.float32), TilingConfig(16, 8),
                          NetworkRunner(nn.Identity(), CPU, batch_size=2))
    assert t["cubes"] == 8 and t["skipped"] == 0 and t["network"] >= 0 and t["blend"] >= 0
    assert t["predict"] >= t["network"]


# --- GPU loop (skipped without CUDA) ------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_loop_matches_cpu_with_auto_batch_and_mask(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol, mask = blob_and_mask(shape=(45, 70, 58))
    tiling = TilingConfig(tile=card.tile, stride=12)  # many cubes: several double-buffered batches
    cpu, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=5, amp="off"), mask=mask)
    gpu = NetworkRunner(net, torch.device("cuda:0"), batch_size=5, amp="off")
    out, _ = predict_volume(vol, tiling, gpu, mask=mask)  # 5 does not divide the cube count: a short last batch
    scale = float(np.abs(cpu).max())
    np.testing.assert_allclose(out, cpu, rtol=1e-3, atol=1e-4 * scale)
    auto = NetworkRunner(net, torch.device("cuda:0"), batch_size=None)
    assert 1 <= auto.resolve_batch_size(card.tile) <= runner.MAX_CUDA_BATCH
    out16, _ = predict_volume(vol, tiling, auto, mask=mask)  # fp16 autocast
    assert np.abs(out16 - cpu).max() <= 2e-2 * scale


@pytest.mark.gpu
def test_cuda_oom_is_device_error_with_auto_batch():
    class Huge(nn.Module):
        size_multiple = 1

        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    from deepemhancer_engine.errors import DeviceError

    with pytest.raises(DeviceError, match="lower the batch size"):
        predict_volume(np.zeros((16, 16, 16), np.float32), TilingConfig(16, 8),
                       NetworkRunner(Huge(), torch.device("cuda:0"), batch_size=2))
