"""Training augmentation (paper recipe): random crops, 90-degree rotations / flips, input blur and
patch corruption, plus pure-noise cubes whose target is zero (so noise maps to ~0).

All functions take a ``numpy.random.Generator`` and work on ``[B, 1, D, D, D]`` tensors (or single
``[D, D, D]`` arrays for :func:`random_crop`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: The three ways to pick the plane of a 90-degree rotation.
_PLANES = ((2, 3), (2, 4), (3, 4))


def random_crop(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator):
    """The same random ``size``^3 window of two cubes."""
    starts = [int(rng.integers(0, n - size + 1)) for n in x.shape]
    sl = tuple(slice(s, s + size) for s in starts)
    return x[sl], y[sl]


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    sl = tuple(slice((n - size) // 2, (n - size) // 2 + size) for n in x.shape)
    return x[sl]


def rotate_flip(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator):
    """Apply one random 90-degree rotation (any plane, any count) and flip to each sample of both."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        a, b = x[i : i + 1], y[i : i + 1]
        for _ in range(2):
            plane = _PLANES[int(rng.integers(3))]
            k = int(rng.integers(4))
            a, b = torch.rot90(a, k, plane), torch.rot90(b, k, plane)
        if rng.random() < 0.5:
            a, b = torch.flip(a, (2,)), torch.flip(b, (2,))
        xs.append(a)
        ys.append(b)
    return torch.cat(xs), torch.cat(ys)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3-D Gaussian blur of a ``[1, 1, D, D, D]`` tensor (replicate padding)."""
    k = _gauss_kernel(sigma)
    r = (len(k) - 1) // 2
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x


def blur_and_corrupt(x: torch.Tensor, rng: np.random.Generator, p_blur: float = 0.2, p_patch: float = 0.2):
    """Input-only degradations: a mild Gaussian blur, and 1-3 patches replaced by noise or zero."""
    out = x.clone()
    d = x.shape[-1]
    for i in range(x.shape[0]):
        if rng.random() < p_blur:
            out[i : i + 1] = gaussian_blur(out[i : i + 1], float(rng.uniform(0.5, 1.2)))
        if rng.random() < p_patch:
            for _ in range(int(rng.integers(1, 4))):
                s = int(rng.integers(4, max(5, d // 4)))
                z, y_, x_ = (int(rng.integers(0, d - s + 1)) for _ in range(3))
                patch = out[i, 0, z : z + s, y_ : y_ + s, x_ : x_ + s]
                if rng.random() < 0.5:
                    patch.zero_()
                else:
                    patch.copy_(torch.from_numpy(rng.normal(0, 0.1, patch.shape).astype(np.float32)))
    return out


def noise_cube(size: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured Gaussian noise normalised like solvent (std 0.1, mean ~0); its target is zero."""
    from scipy import ndimage

    n = rng.normal(size=(size,) * 3).astype(np.float32)
    sigma = float(rng.uniform(0.0, 1.5))
    if sigma > 0.3:
        n = ndimage.gaussian_filter(n, sigma, mode="wrap")
    n = n / (n.std() + 1e-9) * 0.1 * float(rng.uniform(0.8, 1.25))
    return n + np.float32(rng.normal(0, 0.01))


#: Kinds of pure-noise cube (``TrainConfig.noise_cubes``): ``blur``, the shipped weights' (white noise with a
#: Gaussian blur); ``spectra``, noise whose spectrum falls, is flat or rises with frequency, sometimes rolled
#: off near Nyquist and sometimes low-passed as inference conditions its input (see :func:`spectral_noise_cube`).
NOISE_CUBES = ("blur", "spectra")


def spectral_noise_cube(size: int, rng: np.random.Generator) -> np.ndarray:
    """Pure noise as inference may show it, normalised like solvent (std 0.1, mean ~0); its target is zero.

    The network must answer 0 to noise of any colour, not only to the blurred white noise of :func:`noise_cube`:
    users' maps come with noise that falls, stays flat or rises with frequency (unregularised reconstructions,
    fine pixels), and a map with a resolution limit reaches the network low-passed at it. Per cube (1 A/voxel,
    the working grid): a power law ``s^a`` with ``a`` in [-2, 1.5] (falling, flat or rising), a Gaussian roll-off
    ``exp(-(s / s_c)^2)``, ``s_c`` 0.3-0.5 1/A, in half the cubes, and in 60 % the conditioning low-pass at a
    resolution of 2.2-10 A (:func:`condition.response`). These shapes are not those of the evaluation's
    generators (``noisegen.py``, ``benchmarks/robustness_gen.py``), so the noise tests do not test the
    training distribution.
    """
    from ..condition import response
    from ..fourier import frequency_grid

    s = np.sqrt(frequency_grid((size,) * 3, 1.0, squared=True)).astype(np.float32)
    s[0, 0, 0] = 1.0 / size
    amp = s ** np.float32(rng.uniform(-1.0, 0.75))  # amplitude exponent: half the power law's
    if rng.random() < 0.5:
        amp = amp * np.exp(-((s / rng.uniform(0.3, 0.5)) ** 2))
    if rng.random() < 0.6:
        amp = amp * response(s, float(rng.uniform(2.2, 10.0)))
    amp[0, 0, 0] = 0.0
    ft = np.fft.rfftn(rng.normal(size=(size,) * 3).astype(np.float32))
    n = np.fft.irfftn(ft * amp, (size,) * 3, axes=(0, 1, 2)).astype(np.float32)
    n = n / (n.std() + 1e-9) * 0.1 * float(rng.uniform(0.8, 1.25))
    return n + np.float32(rng.normal(0, 0.01))


def make_noise_cube(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A pure-noise training cube of ``kind`` (:data:`NOISE_CUBES`)."""
    return spectral_noise_cube(size, rng) if kind == "spectra" else noise_cube(size, rng)

