"""Shape and size of the 3-D U-Net."""

from __future__ import annotations

import pytest
import torch

from deepemhancer_engine.errors import InputError, WeightsError
from deepemhancer_engine.model import ARCHITECTURES, UNet3D, build_model, count_parameters

PAPER = (32, 64, 128)
COMPACT = (16, 32, 64)


@pytest.mark.parametrize(
    "filters, expected",
    [(PAPER, 4_468_726), (COMPACT, 1_118_726)],
    ids=["paper-4.47M", "compact-1.12M"],
)
def test_parameter_counts(filters, expected):
    n = count_parameters(UNet3D(filters=filters))
    assert n == expected
    # an independent PyTorch statement of the paper's layout counts about 4.46 M and 1.12 M
    target = 4.46e6 if filters == PAPER else 1.12e6
    assert abs(n - target) / target < 0.005


@pytest.mark.parametrize("filters", [PAPER, COMPACT], ids=["paper", "compact"])
def test_output_shape_64_on_meta(filters):
    # The meta device propagates shapes without computing, so the full 64^3 shape check is free.
    with torch.device("meta"):
        net = UNet3D(filters=filters)
    assert net(torch.empty(1, 1, 64, 64, 64, device="meta")).shape == (1, 1, 64, 64, 64)


@pytest.mark.parametrize("filters", [PAPER, COMPACT], ids=["paper", "compact"])
def test_forward_32_cpu(filters):
    torch.manual_seed(0)
    net = UNet3D(filters=filters).eval()
    with torch.inference_mode():
        y = net(torch.randn(1, 1, 32, 32, 32))
    assert y.shape == (1, 1, 32, 32, 32) and torch.isfinite(y).all()


def test_tiny_fully_convolutional_noncubic():
    net = UNet3D(filters=(2, 4, 8)).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 1, 16, 24, 40)).shape == (2, 1, 16, 24, 40)
        assert net(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 1, 64, 64, 64)


def test_rejects_size_not_divisible_by_8():
    with pytest.raises(InputError, match="divisible by 8"):
        UNet3D(filters=(2, 4, 8))(torch.zeros(1, 1, 20, 16, 16))


def test_group_norm_groups():
    net = UNet3D(filters=(2, 4, 12))
    groups = {m.num_channels: m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {2: 2, 4: 4, 12: 6}
    assert {m.num_groups for m in UNet3D().modules() if isinstance(m, torch.nn.GroupNorm)} == {8}


def test_build_model():
    assert set(ARCHITECTURES) == {"unet3d"}
    net = build_model("unet3d", {"filters": [2, 4, 8]})
    assert isinstance(net, UNet3D) and net.arch_kwargs["filters"] == [2, 4, 8]
    with pytest.raises(WeightsError, match="unknown network architecture 'resnet'"):
        build_model("resnet", {})
    with pytest.raises(WeightsError, match="cannot build"):
        build_model("unet3d", {"depth": 5})
