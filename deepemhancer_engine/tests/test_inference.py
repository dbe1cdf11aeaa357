"""Device selection and whole-map prediction."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from deepemhancer_engine.config import BlendMode, InferenceConfig, TilingConfig
from deepemhancer_engine.errors import DeviceError, InputError
from deepemhancer_engine.inference import Predictor
from deepemhancer_engine.runner import select_device
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
    out = Predictor(Affine(), CPU, batch_size=3).predict(
        vol, TilingConfig(tile=16, stride=8, blend=blend), progress=lambda d, t: calls.append((d, t))
    )
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * vol + 1, atol=1e-5)
    total = calls[-1][1]
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_predict_tiny_unet(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol = np.random.default_rng(1).normal(scale=0.1, size=(24, 40, 33)).astype(np.float32)
    tiling = TilingConfig(tile=card.tile, stride=16)
    out = Predictor(net, CPU, batch_size=2).predict(vol, tiling)
    assert out.shape == vol.shape and np.isfinite(out).all()
    # same cubes in another batch size: same answer
    out2 = Predictor(net, CPU, batch_size=5).predict(vol, tiling)
    np.testing.assert_allclose(out, out2, rtol=1e-5, atol=1e-6)


def test_predict_rejects_bad_input():
    pred = Predictor(Affine(), CPU, batch_size=1)
    with pytest.raises(InputError, match="divisible by 8"):
        pred.predict(np.zeros((16, 16, 16), np.float32), TilingConfig(tile=12, stride=6))
    with pytest.raises(InputError, match="3-D map"):
        pred.predict(np.zeros((16, 16), np.float32), TilingConfig(tile=16, stride=8))
    with pytest.raises(InputError, match="mixed-precision"):
        Predictor(Affine(), CPU, 1, amp="fp8")


def test_cuda_oom_becomes_device_error():
    class OOM(nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceError, match=r"lower the batch size \(-b\) or use --device cpu"):
        Predictor(OOM(), CPU, batch_size=4).predict(np.zeros((16, 16, 16), np.float32), TilingConfig(16, 8))


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_weights):
    net, card = load_model("tightTarget", tiny_weights)
    vol = np.random.default_rng(2).normal(scale=0.1, size=(40, 48, 37)).astype(np.float32)
    tiling = TilingConfig(tile=32, stride=16, blend=BlendMode.GAUSSIAN)
    cpu = Predictor(net, CPU, batch_size=4, amp="off").predict(vol, tiling)  # fp32 on any CPU
    gpu32 = Predictor(net, torch.device("cuda:0"), batch_size=4, amp=False).predict(vol, tiling)  # TF32 off
    np.testing.assert_allclose(gpu32, cpu, rtol=1e-3, atol=1e-4 * float(np.abs(cpu).max()))
    gpu16 = Predictor(net, torch.device("cuda:0"), batch_size=4).predict(vol, tiling)  # fp16 autocast
    assert np.abs(gpu16 - cpu).max() <= 2e-2 * float(np.abs(cpu).max())
