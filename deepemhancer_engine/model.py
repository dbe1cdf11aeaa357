"""The 3-D U-Net of DeepEMhancer (Sanchez-Garcia et al. 2021), re-stated in PyTorch.

Layout for ``filters=(f1, f2, f3)`` (paper: 32/64/128; compact: 16/32/64) on a ``T^3`` input::

    down 1  (T^3)    : 3 x [conv3 + GN + PReLU] 1 -> f1          -> skip 1 ; conv2/s2 f1 -> f2 + GN + PReLU
    down 2  (T/2)^3  : 3 x [conv3 + GN + PReLU] f2 -> f2         -> skip 2 ; conv2/s2 f2 -> f3 + GN + PReLU
    down 3  (T/4)^3  : 3 x [conv3 + GN + PReLU] f3 -> f3         -> skip 3 ; conv2/s2 f3 -> f3 + GN + PReLU
    up 1    (T/8)^3  : convT2/s2 f3 -> f3, concat skip 3, 3 x [conv3 + GN + PReLU] 2 f3 -> f3
    up 2    (T/4)^3  : convT2/s2 f3 -> f2, concat skip 2, 3 x [conv3 + GN + PReLU] 2 f2 -> f2
    up 3    (T/2)^3  : convT2/s2 f2 -> f1, concat skip 1, 3 x [conv3 + GN + PReLU] 2 f1 -> f1
    output  (T^3)    : conv1 f1 -> 1

GroupNorm uses the largest group count <= 8 that divides the channel count (8 for the real variants,
fewer for test-sized ones); PReLU has one slope per layer. Parameter counts: paper 4,468,726,
compact 1,118,726 (an independent PyTorch statement of the paper's layout counts 4.46 M and 1.12 M).
The network is fully convolutional: any edge divisible by 8 works (trained on 64^3, may be trained on
32^3 crops).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .errors import InputError, WeightsError

log = logging.getLogger(__name__)

#: Input edges must be divisible by this (three stride-2 downsamplings).
SIZE_MULTIPLE = 8
#: Upper bound on GroupNorm groups.
MAX_GROUPS = 8


def _groups(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """Largest group count <= ``max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _norm_act(channels: int, max_groups: int) -> list[nn.Module]:
    return [nn.GroupNorm(_groups(channels, max_groups), channels), nn.PReLU()]


class ConvBlock(nn.Sequential):
    """``n`` x (Conv3d 3^3 'same' + GroupNorm + PReLU)."""

    def __init__(self, in_ch: int, out_ch: int, n_convs: int = 3, max_groups: int = MAX_GROUPS) -> None:
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(nn.Conv3d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, padding=1))
            layers.extend(_norm_act(out_ch, max_groups))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Strided-convolution downsampling (kernel 2, stride 2) + GroupNorm + PReLU."""

    def __init__(self, in_ch: int, out_ch: int, max_groups: int = MAX_GROUPS) -> None:
        super().__init__(nn.Conv3d(in_ch, out_ch, kernel_size=2, stride=2), *_norm_act(out_ch, max_groups))


class Up(nn.Module):
    """Transposed-convolution upsampling (kernel 2, stride 2), skip concatenation, conv block."""

    def __init__(
        self, in_ch: int, skip_ch: int, out_ch: int, n_convs: int = 3, max_groups: int = MAX_GROUPS
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_ch, out_ch, kernel_size=2, stride=2)
        self.block = ConvBlock(out_ch + skip_ch, out_ch, n_convs, max_groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet3D(nn.Module):
    """DeepEMhancer's 3-D U-Net: 3 down blocks, 3 up blocks, skip connections, 1x1x1 output conv.

    Args:
        filters: channels of the three resolution levels (paper: (32, 64, 128)).
        in_channels: input channels (1: the normalised map).
        out_channels: output channels (1: the enhanced map).
        convs_per_block: convolutions per block (paper: 3).
        max_groups: upper bound on GroupNorm groups (paper: 8).

    Input ``[B, in_channels, Z, Y, X]`` with every edge divisible by 8; output has the same spatial shape.

    Example:
        >>> net = UNet3D(filters=(2, 4, 8)).eval()
        >>> tuple(net(torch.zeros(1, 1, 16, 16, 16)).shape)
        (1, 1, 16, 16, 16)
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        filters: Sequence[int] = (32, 64, 128),
        in_channels: int = 1,
        out_channels: int = 1,
        convs_per_block: int = 3,
        max_groups: int = MAX_GROUPS,
    ) -> None:
        super().__init__()
        f = tuple(int(c) for c in filters)
        if len(f) != 3 or min(f) < 1:
            raise ValueError(f"filters must be three positive channel counts, got {tuple(filters)!r}")
        f1, f2, f3 = f
        n, g = int(convs_per_block), int(max_groups)
        #: Constructor arguments, written into the model card by :func:`weights.save_weights`.
        self.arch_kwargs: dict[str, Any] = {
            "filters": list(f),
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "convs_per_block": n,
            "max_groups": g,
        }
        self.enc1 = ConvBlock(in_channels, f1, n, g)
        self.down1 = Down(f1, f2, g)
        self.enc2 = ConvBlock(f2, f2, n, g)
        self.down2 = Down(f2, f3, g)
        self.enc3 = ConvBlock(f3, f3, n, g)
        self.down3 = Down(f3, f3, g)
        self.up1 = Up(f3, f3, f3, n, g)
        self.up2 = Up(f3, f2, f2, n, g)
        self.up3 = Up(f2, f1, f1, n, g)
        self.out = nn.Conv3d(f1, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(s % SIZE_MULTIPLE for s in x.shape[2:]):
            raise InputError(
                f"UNet3D needs a [B, C, Z, Y, X] input with edges divisible by {SIZE_MULTIPLE}, "
                f"got shape {tuple(x.shape)}"
            )
        s1 = self.enc1(x)
        s2 = self.enc2(self.down1(s1))
        s3 = self.enc3(self.down2(s2))
        y = self.down3(s3)
        y = self.up1(y, s3)
        y = self.up2(y, s2)
        y = self.up3(y, s1)
        return self.out(y)


#: Architecture name (the model card's ``arch``) -> class.
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet3d": UNet3D}


def build_model(arch: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate architecture ``arch`` with ``kwargs`` (from a model card).

    Raises:
        WeightsError: unknown architecture or arguments it does not accept.
    """
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        raise WeightsError(
            f"unknown network architecture {arch!r}: this engine knows {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        return cls(**dict(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"cannot build architecture {arch!r} with arguments {dict(kwargs or {})}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
