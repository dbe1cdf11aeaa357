"""Device selection, the network runner and whole-map prediction."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from deepemhancer_engine.config import BlendMode, InferenceConfig, TilingConfig
from deepemhancer_engine.errors import DeviceError, InputError
from deepemhancer_engine.inference import predict_volume
from deepemhancer_engine.runner import NetworkRunner, select_device
from deepemhancer_engine.weights import load_model

CPU = torch.device("cpu")


class Affine(nn.Module):
    """2x + 1, with the size rule of the U-Net."""

    size_multiple = 8

    def forward(self, x):
        return 2 * x + 1


def test_select_device_cpu():
    assert select_device(InferenceConfig(device="cpu")) == CPU
    assert torch.get_num_threads() >= 1


def test_select_device_auto_without_gpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="deepemhancer_engine.runner"):
        assert select_device(InferenceConfig(device="auto")) == CPU
    assert "Running on CPU (no GPU found)" in caplog.text


def test_select_device_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA was requested but no GPU is available"):
        select_device(InferenceConfig(device="cuda"))
    with pytest.raises(DeviceError, match="no GPU is available"):
        select_device(InferenceConfig(device="auto", gpu_ids=(0,)))


def test_select_device_gpu_ids(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "fake GPU")
    assert select_device(InferenceConfig(device="auto", gpu_ids=(1, 0))) == torch.device("cuda:1")
    assert select_device(InferenceConfig(device="cuda")) == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="GPU id 3 is not available: this process sees 2 GPU"):
        select_device(InferenceConfig(device="cuda", gpu_ids=(3,)))


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("shape", [(20, 30, 41), (16, 16, 16), (9, 40, 5)])
def test_predict_affine_exact(blend, shape):
    vol = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    calls = []
    out, _ = predict_volume(
        vol, TilingConfig(tile=16, stride=8, blend=blend), NetworkRunner(Affine(), CPU, batch_size=3),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * vol + 1, atol=1e-5)
    total = calls[-1][1]
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_predict_tiny_unet(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol = np.random.default_rng(1).normal(scale=0.1, size=(24, 40, 33)).astype(np.float32)
    tiling = TilingConfig(tile=card.tile, stride=16)
    out, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=2))
    assert out.shape == vol.shape and np.isfinite(out).all()
    # same cubes in another batch size: same answer
    out2, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=5))
    np.testing.assert_allclose(out, out2, rtol=1e-5, atol=1e-6)


def test_predict_rejects_bad_input():
    run = NetworkRunner(Affine(), CPU, batch_size=1)
    with pytest.raises(InputError, match="divisible by 8"):
        predict_volume(np.zeros((16, 16, 16), np.float32), TilingConfig(tile=12, stride=6), run)
    with pytest.raises(InputError, match="3-D map"):
        predict_volume(np.zeros((16, 16), np.float32), TilingConfig(tile=16, stride=8), run)
    with pytest.raises(InputError, match="mixed-precision"):
        NetworkRunner(Affine(), CPU, batch_size=1, amp="fp8")


def test_cuda_oom_becomes_device_error():
    class OOM(nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceError, match=r"lower the batch size \(-b\) or use --device cpu"):
        predict_volume(np.zeros((16, 16, 16), np.float32), TilingConfig(16, 8), NetworkRunner(OOM(), CPU, batch_size=4))


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol = np.random.default_rng(2).normal(scale=0.1, size=(40, 48, 37)).astype(np.float32)
    tiling = TilingConfig(tile=32, stride=16, blend=BlendMode.GAUSSIAN)
    cpu, _ = predict_volume(vol, tiling, NetworkRunner(net, CPU, batch_size=4, amp="off"))  # fp32 on any CPU
    gpu32, _ = predict_volume(vol, tiling, NetworkRunner(net, "cuda:0", batch_size=4, amp=False))  # TF32 off
    np.testing.assert_allclose(gpu32, cpu, rtol=1e-3, atol=1e-4 * float(np.abs(cpu).max()))
    gpu16, _ = predict_volume(vol, tiling, NetworkRunner(net, "cuda:0", batch_size=4))  # fp16 autocast
    assert np.abs(gpu16 - cpu).max() <= 2e-2 * float(np.abs(cpu).max())


# --- precision and layout as configuration ------------------------------------------------------


def test_inference_config_amp_and_channels_last_validated():
    cfg = InferenceConfig()
    assert cfg.amp == "auto" and cfg.channels_last is None
    assert InferenceConfig(amp="bf16", channels_last=True).amp == "bf16"
    with pytest.raises(InputError) as err:
        InferenceConfig(amp="bogus")
    assert str(err.value) == "invalid mixed precision 'bogus': choose one of auto, off, fp16, bf16"
    assert "\n" not in str(err.value)
    for bad in (None, False, "FP16"):
        with pytest.raises(InputError, match="invalid mixed precision"):
            InferenceConfig(amp=bad)
    with pytest.raises(InputError, match="channels-last .* got 'yes'"):
        InferenceConfig(channels_last="yes")


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_amp_auto_is_todays_default(monkeypatch, fast_bf16):
    from deepemhancer_engine import runner

    monkeypatch.setattr(runner, "cpu_has_fast_bf16", lambda: fast_bf16)
    auto, none = NetworkRunner(Affine(), CPU, amp="auto"), NetworkRunner(Affine(), CPU)
    assert auto.amp_dtype is none.amp_dtype is (torch.bfloat16 if fast_bf16 else None)
    assert auto.channels_last == none.channels_last == fast_bf16
    assert runner._amp_dtype("auto", torch.device("cuda:0")) is torch.float16


def test_amp_off_runs_fp32():
    seen = []

    class Probe(nn.Module):
        size_multiple = 8

        def forward(self, x):
            y = nn.functional.conv3d(x, torch.ones(1, 1, 1, 1, 1))  # autocast casts convolutions
            seen.append((y.dtype, x.is_contiguous(memory_format=torch.channels_last_3d)))
            return y

    run = NetworkRunner(Probe(), CPU, batch_size=2, amp="off")
    vol = np.random.default_rng(4).normal(size=(16, 16, 24)).astype(np.float32)
    out, timings = predict_volume(vol, TilingConfig(16, 8), run)
    assert run.precision == "float32" and run.describe() == ""
    assert seen and all(dtype is torch.float32 for dtype, _ in seen)
    np.testing.assert_allclose(out, vol, atol=1e-6)
    seen.clear()
    bf16 = NetworkRunner(Probe(), CPU, batch_size=2, amp="bf16")  # channels-last by default with bf16 on CPU
    bf16.forward(vol[None, :16, :16, :16].copy())
    assert seen == [(torch.bfloat16, True)] and bf16.describe() == ", bfloat16 autocast, channels-last"


def test_load_passes_amp_and_channels_last(tiny_weights):
    from deepemhancer_engine import pipeline
    from deepemhancer_engine.config import EnhanceConfig

    cfg = EnhanceConfig(weights=tiny_weights,
                        inference=InferenceConfig(device="cpu", batch_size=3, amp="off", channels_last=True))
    lm = pipeline.load(cfg)
    assert lm.runner.amp_dtype is None and lm.runner.channels_last and lm.runner.batch_size == 3
    vol = np.random.default_rng(5).normal(scale=0.1, size=(24, 30, 33)).astype(np.float32)
    tiling = TilingConfig(tile=lm.card.tile, stride=16)
    out = lm.predict(vol, tiling)
    ref, timings = predict_volume(vol, tiling, lm.runner, null=lm.null)
    np.testing.assert_array_equal(out, ref)
    assert lm.timings.keys() == timings.keys() == {"network", "blend", "predict", "cubes", "skipped", "layout", "null",
                                                   "first_batch", "batch"}
    assert lm.timings["cubes"] == timings["cubes"] > 0
