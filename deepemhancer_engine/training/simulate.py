"""Simulated half-map pairs and their targets, from an atomic model (training only; needs gemmi).

One call of :func:`simulate_pair` turns a PDB/mmCIF file into an "experimental-like" pair of half maps
and the maps the networks are trained to produce, all on the same grid:

* atoms (first model, no H / water) are optionally cropped to fit the box, then get a few pseudo
  ligand / lipid chains near the surface (they are part of the model, the target and the masks),
  occasional smeared patches (large extra B) and occasional low-occupancy ("missing") patches;
* ``model_map``: noise-free, unsharpened density of the full model (uniform small B);
* signal: the same atoms blurred by a global B plus a spatially varying B (rigid core, flexible
  periphery, smooth random bumps), plus a faint low-frequency solvent background and, sometimes, a
  detergent-micelle-like belt;
* halves: signal + independent coloured Gaussian noise, scaled so that the half-map FSC crosses
  0.143 near the requested resolution (the *measured* crossing is reported); the noise-free signal
  itself is returned too (``SimulatedPair.signal``, the truth of the evaluation's in-band check);
* targets (LocScale-like): the atoms with the model's own local B (core sharp, periphery partly
  blurred, smeared / low-occupancy patches kept as the data show them) low-passed with a soft edge
  centred on the measured FSC-0.143 resolution, times a tight (``tightTarget``) or wide
  (``wideTarget``) soft model mask. Micelle, solvent background and noise never enter a target.

Everything is deterministic given ``seed``. Arrays are ``[z, y, x]`` float32, voxel sizes and origins
``(x, y, z)`` in A.

That is data version ``sim1`` (the default; the shipped weights' data). ``variety="sim2"`` adds per-pair
noise families with and without a roll-off, voxel sizes of 0.5-2.5 A, anisotropic blur, depositor masks,
and a scale and offset of the halves (:mod:`.variety`, :func:`simulate_pair`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..atoms import Atoms, atom_mask, gemmi_module, p1_density, read_model, voxel_indices
from ..errors import InputError
from ..fourier import cosine_edge, frequency_grid
from ..metrics import fsc
from . import variety as V
from .variety import DataVariety, parse_variety

log = logging.getLogger(__name__)

#: Half-map FSC threshold and the signal-to-noise power ratio that gives it: FSC = S / (S + N).
FSC_THRESHOLD = 0.143
_SNR_AT_THRESHOLD = FSC_THRESHOLD / (1.0 - FSC_THRESHOLD)
#: Mask geometry (A): distance from atoms where the mask is 1, and the width of the cosine edge.
TIGHT_MASK = (2.0, 2.5)
WIDE_MASK = (5.0, 5.0)
DEFAULT_MAX_BOX = 144
#: Models with fewer heavy atoms than this are refused.
MIN_ATOMS = 50
_LIGAND_ELEMENTS = ("C", "C", "C", "C", "O", "N", "P", "S")


@dataclass
class SimulatedPair:
    """Two noisy half maps, the noise-free model map, targets and masks on one grid."""

    half1: np.ndarray
    half2: np.ndarray
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    model_map: np.ndarray
    targets: dict[str, np.ndarray]
    tight_mask: np.ndarray
    wide_mask: np.ndarray
    fsc0143_resolution: float
    info: dict[str, Any] = field(default_factory=dict)
    #: The noise-free map both halves share (half_i = signal + noise_i): the truth of the evaluation's
    #: in-band honesty check (``evaluate(..., signal=)``); training does not use it.
    signal: np.ndarray | None = None
    #: sim2: the depositor's mask both halves were multiplied by (None: not masked).
    input_mask: np.ndarray | None = None


@functools.lru_cache(maxsize=8)
def load_atoms(path: str) -> Atoms:
    """The simulator's atoms of ``path``: the first model without hydrogens and waters
    (:func:`atoms.read_model`), elements known to gemmi only; InputError below :data:`MIN_ATOMS`."""
    atoms = Atoms.from_structure(read_model(path))
    atoms = atoms.take(~np.isin(atoms.elem, ("X", "H", "D")))  # X: an element gemmi does not know
    if len(atoms.pos) < MIN_ATOMS:
        raise InputError(f"{path}: the atomic model has only {len(atoms.pos)} heavy atoms "
                         f"(the simulator needs {MIN_ATOMS})")
    return atoms


def density(atoms: Atoms, b: np.ndarray, occ: np.ndarray, corner: np.ndarray, shape_zyx, voxel: float):
    """Electron-scattering density of ``atoms`` on a periodic box starting at ``corner`` (gemmi)."""
    # Apart from modelmap.model_map: a periodic box at the map's own sampling is cheap, and the weights learnt on it.
    st = _p1_structure(atoms, b, occ, corner, shape_zyx, voxel)
    return np.ascontiguousarray(p1_density(st, shape_zyx[::-1], d_min=2.0 * voxel, blur=0.0), dtype=np.float32)


def _p1_structure(atoms: Atoms, b: np.ndarray, occ: np.ndarray, corner: np.ndarray, shape_zyx, voxel: float):
    """A one-chain gemmi structure of ``atoms`` (B ``b``, occupancy ``occ``) in a P1 cell on the box."""
    gemmi = gemmi_module()
    nz, ny, nx = shape_zyx
    st = gemmi.Structure()
    st.add_model(gemmi.Model("1"))
    chain = gemmi.Chain("A")
    rel = atoms.pos - corner
    for start in range(0, len(rel), 100):
        res = gemmi.Residue()
        res.name = "UNK"
        res.seqid = gemmi.SeqId(start // 100 + 1, " ")
        for i in range(start, min(start + 100, len(rel))):
            at = gemmi.Atom()
            at.name = "X"
            at.element = gemmi.Element(str(atoms.elem[i]))
            at.pos = gemmi.Position(*rel[i])
            at.b_iso = float(b[i])
            at.occ = float(occ[i])
            res.add_atom(at)
        chain.add_residue(res)
    st[0].add_chain(chain)
    st.cell = gemmi.UnitCell(nx * voxel, ny * voxel, nz * voxel, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    return st


def _freq2(shape, voxel: float) -> np.ndarray:
    """|s|^2 (1/A^2) on the rfftn grid of ``shape``, as float32 (computed in float64)."""
    return frequency_grid(shape, voxel, squared=True).astype(np.float32)


def blur_levels(vol: np.ndarray, s2: np.ndarray, bs) -> list[np.ndarray]:
    """``vol`` blurred by each B in ``bs`` (amplitudes times exp(-B s^2 / 4))."""
    ft = np.fft.rfftn(vol)
    return [np.fft.irfftn(ft * np.exp(-b * s2 / 4.0), vol.shape, axes=(0, 1, 2)).astype(np.float32) for b in bs]


def spatial_blur(vol: np.ndarray, s2: np.ndarray, base: float, extra: np.ndarray, n_levels: int = 4):
    """Blur by B(x) = base + extra(x), by linear interpolation between ``n_levels`` global blurs."""
    top = float(extra.max())
    if top < 1.0:
        return blur_levels(vol, s2, [base + top / 2])[0]
    bs = np.linspace(0.0, top, n_levels)
    maps = blur_levels(vol, s2, base + bs)
    t = np.clip(extra / top * (n_levels - 1), 0, n_levels - 1 - 1e-6)
    idx = t.astype(int)
    frac = (t - idx).astype(np.float32)
    out = np.zeros_like(vol)
    for k in range(n_levels - 1):
        sel = idx == k
        out[sel] = (1 - frac[sel]) * maps[k][sel] + frac[sel] * maps[k + 1][sel]
    return out


def shell_index(shape, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Shell number of every rfftn coefficient (width 1/(n_max * voxel)) and the shell frequencies."""
    n = max(shape)
    s = np.sqrt(_freq2(shape, voxel))
    idx = np.minimum(np.round(s * n * voxel).astype(int), n // 2 + 1)
    return idx, np.arange(n // 2 + 2) / (n * voxel)


def soft_mask_from_atoms(atoms: Atoms, corner, shape_zyx, voxel: float, inner: float, edge: float):
    """1 within ``inner`` A of an atom, cosine fall-off to 0 over ``edge`` A (:func:`atoms.atom_mask`)."""
    # Atoms outside the box do not count, as in the shipped data (docs/design.md, "Atomic models and masks").
    return atom_mask(voxel_indices(atoms.pos, corner, voxel), shape_zyx, voxel, inner, edge, outside_atoms=False)


def _add_ligands(atoms: Atoms, rng: np.random.Generator, centre: np.ndarray) -> tuple[Atoms, int]:
    """Append 1-4 ligand / lipid-like chains of bonded pseudo-atoms starting just off the surface."""
    n_lig = int(rng.integers(1, 5))
    pos, elem, b = [atoms.pos], [atoms.elem], [atoms.b]
    for _ in range(n_lig):
        anchor = atoms.pos[rng.integers(len(atoms.pos))]
        out = anchor - centre
        out /= np.linalg.norm(out) + 1e-6
        lipid = rng.random() < 0.4
        n = int(rng.integers(14, 20) if lipid else rng.integers(8, 31))
        step_dir = out + 0.5 * rng.normal(size=3)
        p = anchor + 3.8 * out
        chain = []
        for _k in range(n):
            chain.append(p.copy())
            jitter = 0.25 if lipid else 0.9
            step_dir = step_dir / np.linalg.norm(step_dir) + jitter * rng.normal(size=3)
            p = p + 1.5 * step_dir / np.linalg.norm(step_dir)
        el = ["C"] * n if lipid else list(rng.choice(_LIGAND_ELEMENTS, n))
        if lipid:
            el[0] = "P"
        near = np.median(atoms.b[np.argsort(np.linalg.norm(atoms.pos - anchor, axis=1))[:20]])
        pos.append(np.asarray(chain))
        elem.append(np.asarray(el))
        b.append(np.full(n, near))
    return Atoms(np.concatenate(pos), np.concatenate(elem), np.concatenate(b)), n_lig


def _sample_geometry(rng, atoms: Atoms, voxel: float, max_box: int, pad_share: float | None = None):
    """Crop large models to fit ``max_box`` voxels; return atoms, box corner (A) and shape (z, y, x).
    ``pad_share``: for a model that does not fit, the solvent on each side is at most this share of the largest
    box (small voxels make a small box, which 8-22 A of solvent per side would leave without room for the model)."""
    pad_lo = rng.uniform(8.0, 22.0, 3)
    pad_hi = rng.uniform(8.0, 22.0, 3)
    lo, hi = atoms.pos.min(0), atoms.pos.max(0)
    if pad_share is not None and np.any(hi - lo > max_box * voxel - pad_lo - pad_hi):
        pad_lo, pad_hi = (np.minimum(p, pad_share * max_box * voxel) for p in (pad_lo, pad_hi))
    room = max_box * voxel - pad_lo - pad_hi
    if np.any(hi - lo > room):
        c = atoms.pos[rng.integers(len(atoms.pos))]
        c = np.clip(c, lo + room / 2, hi - room / 2)
        keep = np.all(np.abs(atoms.pos - c) <= room / 2, axis=1)
        if not np.any(keep):
            raise InputError(f"no atom fits a box of {max_box} voxels of {voxel:.3g} A around the chosen centre")
        atoms = atoms.take(keep)
        lo, hi = atoms.pos.min(0), atoms.pos.max(0)
    corner = lo - pad_lo - rng.uniform(0, 1, 3) * voxel
    n_xyz = np.ceil((hi + pad_hi - corner) / voxel).astype(int)
    n_xyz = np.minimum(n_xyz + (n_xyz % 2), max_box)
    return atoms, corner, (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))


def _coords(shape_zyx, voxel: float, corner) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = corner[2] + voxel * np.arange(shape_zyx[0])
    y = corner[1] + voxel * np.arange(shape_zyx[1])
    x = corner[0] + voxel * np.arange(shape_zyx[2])
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _flex_field(rng, atoms: Atoms, shape, voxel, corner, top: float) -> np.ndarray:
    """Extra B (A^2): 0 in the rigid core rising to ``top`` at the periphery, plus smooth bumps."""
    z, y, x = _coords(shape, voxel, corner)
    c = atoms.pos.mean(0)
    r = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    rmax = np.percentile(np.linalg.norm(atoms.pos - c, axis=1), 95) + 1e-3
    core = rng.uniform(0.2, 0.6)
    t = np.clip((r / rmax - core) / (1.0 - core), 0, None) ** rng.uniform(1.0, 2.0)
    bumps = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 8.0 / voxel, mode="wrap")
    bumps = bumps / (bumps.std() + 1e-9)
    field_ = top * (0.75 * np.clip(t, 0, 1.5) + 0.25 * np.clip(bumps, 0, None))
    return field_.astype(np.float32)


def _patches(rng, atoms: Atoms, kind: str) -> tuple[np.ndarray, list]:
    """Boolean selection of atoms inside 0-2 random spheres, and their (centre, radius)."""
    sel = np.zeros(len(atoms.pos), bool)
    spheres = []
    if rng.random() < (0.3 if kind == "smear" else 0.15):
        for _ in range(int(rng.integers(1, 3))):
            c = atoms.pos[rng.integers(len(atoms.pos))]
            rad = rng.uniform(6.0, 14.0)
            sel |= np.linalg.norm(atoms.pos - c, axis=1) < rad
            spheres.append((c.tolist(), float(rad)))
    return sel, spheres


def _micelle(rng, atoms: Atoms, shape, voxel, corner, wide: np.ndarray, level: float) -> np.ndarray:
    """A smooth detergent-belt-like shell around a random axis, outside the molecule."""
    z, y, x = _coords(shape, voxel, corner)
    c = atoms.pos.mean(0) + rng.normal(size=3) * 3
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    h = dx * axis[0] + dy * axis[1] + dz * axis[2]
    rho = np.sqrt(np.maximum(dx**2 + dy**2 + dz**2 - h**2, 0))
    rel = atoms.pos - c
    hr = rel @ axis
    rho_atoms = np.sqrt(np.maximum((rel**2).sum(1) - hr**2, 0))
    r_in = np.percentile(rho_atoms[np.abs(hr) < 10] if np.any(np.abs(hr) < 10) else rho_atoms, 60)
    half_h = rng.uniform(12.0, 20.0)
    thick = rng.uniform(12.0, 25.0)
    belt = (np.abs(h) < half_h) & (rho < r_in + thick)
    belt = ndimage.gaussian_filter(belt.astype(np.float32), 2.5 / voxel)
    return (level * belt * (1.0 - wide)).astype(np.float32)


def _coloured_noise(rng, shape, s2: np.ndarray) -> np.ndarray:
    """Unit-variance Gaussian noise whose spectrum falls off like a power law and a B envelope."""
    beta = rng.uniform(0.0, 0.8)
    b_env = rng.uniform(0.0, 40.0)
    amp = (np.sqrt(s2) + 0.02) ** (-beta) * np.exp(-b_env * s2 / 4.0)
    ft = np.fft.rfftn(rng.normal(size=shape).astype(np.float32))
    out = np.fft.irfftn(ft * amp, shape, axes=(0, 1, 2)).astype(np.float32)
    return out / (out.std() + 1e-12)


def _noise_scale(signal: np.ndarray, noise: np.ndarray, voxel: float, resolution: float) -> float:
    """Factor for ``noise`` that puts the half-map FSC at 0.143 at ``resolution`` (shell power ratio)."""
    idx, freqs = shell_index(signal.shape, voxel)
    target = int(np.argmin(np.abs(freqs - 1.0 / resolution)))
    sel = (idx >= target - 1) & (idx <= target + 1)
    ps = float(np.mean(np.abs(np.fft.rfftn(signal)[sel]) ** 2))
    pn = float(np.mean(np.abs(np.fft.rfftn(noise)[sel]) ** 2))
    return float(np.sqrt(ps / (_SNR_AT_THRESHOLD * max(pn, 1e-30))))


def _lowpass(vol: np.ndarray, s2: np.ndarray, resolution: float, width: float = 0.1) -> np.ndarray:
    """Soft low-pass: 1 below (1 - width)/resolution, cosine to 0 at (1 + width)/resolution."""
    filt = cosine_edge(np.sqrt(s2) * resolution, 1 - width, 2 * width)
    return np.fft.irfftn(np.fft.rfftn(vol) * filt, vol.shape, axes=(0, 1, 2)).astype(np.float32)


def sample_resolution_and_voxel(rng, resolution=None, voxel_size=None) -> tuple[float, float]:
    """Target half-map resolution (log-uniform 2.5-8 A) and a voxel size between R/5 and R/2.2."""
    res = float(resolution) if resolution is not None else float(np.exp(rng.uniform(np.log(2.5), np.log(8.0))))
    if voxel_size is None:
        lo, hi = max(0.6, res / 5.0), min(2.0, res / 2.2)
        voxel_size = rng.uniform(lo, max(lo, hi))
    return res, float(voxel_size)


@dataclass
class _Box:
    """A model placed in its box: atoms (ligands appended after the first ``n_model``), corner (A),
    shape (z, y, x), voxel size (A) and |s|^2 of the box's rfftn grid."""

    atoms: Atoms
    corner: np.ndarray
    shape: tuple[int, int, int]
    voxel: float
    s2: np.ndarray
    n_model: int
    n_ligands: int

    def density(self, b: np.ndarray, occ: np.ndarray) -> np.ndarray:
        return density(self.atoms, b, occ, self.corner, self.shape, self.voxel)

    def mask(self, inner_edge: tuple[float, float]) -> np.ndarray:
        return soft_mask_from_atoms(self.atoms, self.corner, self.shape, self.voxel, *inner_edge)


def _place(rng, path: Path, voxel: float, max_box: int, ligands: bool | None, pad_share: float | None = None
           ) -> _Box:
    """Read the model, crop it to the box, and append pseudo ligands (by default at random)."""
    atoms = load_atoms(str(path))
    atoms, corner, shape = _sample_geometry(rng, atoms, voxel, max_box, pad_share)
    centre = atoms.pos.mean(0)
    n_lig, n_model = 0, len(atoms.b)
    if ligands if ligands is not None else rng.random() < 0.4:
        atoms, n_lig = _add_ligands(atoms, rng, centre)
    return _Box(atoms, corner, shape, voxel, _freq2(shape, voxel), n_model, n_lig)


def _atom_maps(rng, box: _Box) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """B of the model map, the model map (uniform B) and the data's atom map (local B, smeared and
    weak patches), and what was drawn."""
    atoms = box.atoms
    b0 = max(10.0, 30.0 * box.voxel**2)
    b_rel = np.clip(atoms.b - np.percentile(atoms.b, 10), 0, 80) * rng.uniform(0.3, 1.0)
    smear, smear_spheres = _patches(rng, atoms, "smear")
    weak, weak_spheres = _patches(rng, atoms, "weak")
    b_data = b0 + b_rel + smear * rng.uniform(150.0, 400.0)
    occ = np.where(weak, rng.uniform(0.0, 0.4), 1.0)
    model_map = box.density(np.full(len(atoms.b), b0), np.ones(len(atoms.b)))
    data_map = box.density(b_data, occ)
    return b0, model_map, data_map, {"smeared": smear_spheres, "weak": weak_spheres}


def _signal(rng, box: _Box, data_map: np.ndarray, res_req: float, micelle: bool | None):
    """Noise-free signal (global + flexible B, micelle, solvent background), the masks and what was drawn."""
    b_global = float(np.clip(rng.uniform(0.5, 1.3) * 8.0 * res_req**2, 20.0, 500.0))
    flex = _flex_field(rng, box.atoms, box.shape, box.voxel, box.corner, rng.uniform(0.2, 1.2) * b_global)
    signal = spatial_blur(data_map, box.s2, b_global, flex)
    tight, wide = box.mask(TIGHT_MASK), box.mask(WIDE_MASK)
    prot_level = float(signal[tight > 0.5].mean()) if np.any(tight > 0.5) else float(signal.max())
    has_micelle = micelle if micelle is not None else rng.random() < 0.3
    if has_micelle:
        signal += _micelle(rng, box.atoms, box.shape, box.voxel, box.corner, wide,
                           rng.uniform(0.15, 0.5) * prot_level)
    bg = ndimage.gaussian_filter(rng.normal(size=box.shape).astype(np.float32), 10.0 / box.voxel, mode="wrap")
    signal += rng.uniform(0.0, 0.05) * prot_level * bg / (bg.std() + 1e-9) + rng.normal() * 0.1 * prot_level
    return signal, flex, tight, wide, {"b_global": b_global, "micelle": bool(has_micelle)}


def _halves(rng, box: _Box, signal: np.ndarray, res_req: float):
    """Signal plus independent coloured noise scaled to FSC 0.143 at ``res_req``; the measured resolution."""
    noise1 = _coloured_noise(rng, box.shape, box.s2)
    noise2 = _coloured_noise(rng, box.shape, box.s2)
    sig0 = signal - signal.mean()
    k = _noise_scale(sig0, 0.5 * (noise1 + noise2), box.voxel, res_req)
    half1, half2 = signal + k * noise1, signal + k * noise2
    return half1, half2, k, fsc(half1, half2, box.voxel).resolution(FSC_THRESHOLD)


def _targets(rng, box: _Box, data_map, flex, res: float, tight, wide) -> tuple[dict[str, np.ndarray], float]:
    """The local-B atom map low-passed at the measured resolution, times the tight and wide masks."""
    gamma = rng.uniform(0.3, 0.7)
    local = spatial_blur(data_map, box.s2, 0.0, gamma * flex)
    local = _lowpass(local, box.s2, max(res, 2.0 * box.voxel))
    return {"tightTarget": local * tight, "wideTarget": local * wide}, gamma


def local_resolution(res: float, b_global: float, flex: np.ndarray) -> np.ndarray:
    """Where the data's FSC would cross the threshold locally (A): with noise of the same power everywhere, a
    Guinier fall-off ``exp(-B s^2 / 4)`` reaches the global crossing's signal level at ``s_d sqrt(B_g / B)``,
    so ``d(x) = res * sqrt((b_global + flex(x)) / b_global)`` (``res`` in the rigid core)."""
    return (res * np.sqrt((b_global + flex) / max(b_global, 1e-6))).astype(np.float32)


def spatial_lowpass(vol: np.ndarray, s2: np.ndarray, local_res: np.ndarray, n_levels: int = 6) -> np.ndarray:
    """``vol`` low-passed (soft edge, :func:`_lowpass`) at the resolution ``local_res(x)`` A, by linear
    interpolation in frequency between ``n_levels`` global low-passes spaced evenly in 1 / d."""
    f_hi, f_lo = 1.0 / float(local_res.min()), 1.0 / float(local_res.max())
    if f_hi - f_lo < 1e-4:
        return _lowpass(vol, s2, float(local_res.min()))
    freqs = np.linspace(f_lo, f_hi, n_levels)
    t = np.clip((1.0 / local_res - f_lo) / (f_hi - f_lo) * (n_levels - 1), 0, n_levels - 1 - 1e-6)
    idx = t.astype(int)
    frac = (t - idx).astype(np.float32)
    out = np.zeros_like(vol, dtype=np.float32)
    below = None
    for k in range(n_levels):
        level = _lowpass(vol, s2, 1.0 / freqs[k])
        if below is not None:
            sel = idx == k - 1
            out[sel] = (1 - frac[sel]) * below[sel] + frac[sel] * level[sel]
        below = level
    return out


def _halves_sim2(rng, box: _Box, signal: np.ndarray, res_req: float, d: V.Sim2Draws, tight: np.ndarray):
    """sim2's halves: the signal (anisotropically blurred when drawn) plus the drawn noise family scaled to FSC
    0.143 at ``res_req``, both rolled off near Nyquist when drawn (a reconstruction's filter acts on signal and
    noise alike, so the FSC stays), masked when drawn, then scaled and offset together.

    Returns the halves, their noise-free part (``half_i = signal + noise_i``), the noise scale, the resolution
    the data support (FSC-0.143 before the mask) and the depositor's mask (or None)."""
    if d.anisotropic:
        signal = V.fourier_filter(signal, V.anisotropic_filter(box.shape, box.voxel, d))
    noise1 = V.coloured_noise(rng, box.shape, box.voxel, d)
    noise2 = V.coloured_noise(rng, box.shape, box.voxel, d)
    k = _noise_scale(signal - signal.mean(), 0.5 * (noise1 + noise2), box.voxel, res_req)
    noise = [np.float32(k) * noise1, np.float32(k) * noise2]
    if d.rolloff:
        filt = V.rolloff_filter(box.shape, box.voxel, d)
        signal, noise = V.fourier_filter(signal, filt), [V.fourier_filter(n, filt) for n in noise]
    supported = fsc(signal + noise[0], signal + noise[1], box.voxel).resolution(FSC_THRESHOLD)
    mask = None
    if d.mask is not None:
        mask = V.depositor_mask(d, box.atoms, box.corner, box.shape, box.voxel)
        signal, noise = signal * mask, [n * mask for n in noise]
    inside = signal[tight > 0.5]
    rms = float(np.sqrt(np.mean(inside.astype(np.float64) ** 2))) if inside.size else float(signal.std())
    (half1, half2, signal), offset = V.scale_and_offset([signal + noise[0], signal + noise[1], signal], d, rms)
    return half1, half2, signal, k, supported, mask, offset


def simulate_pair(
    structure_path,
    seed: int,
    *,
    voxel_size: float | None = None,
    resolution: float | None = None,
    max_box: int = DEFAULT_MAX_BOX,
    ligands: bool | None = None,
    micelle: bool | None = None,
    variety: DataVariety | str = DataVariety.SIM1,
    force: dict[str, Any] | None = None,
    local_target: bool = False,
) -> SimulatedPair:
    """Simulate half maps, model map, targets and masks for one model (see the module docstring).

    ``voxel_size`` (A) and ``resolution`` (target half-map FSC-0.143, A) are drawn from the seed when
    not given; ``ligands`` / ``micelle`` force those features on or off (default: random). The steps
    draw from one generator in a fixed order, so a seed gives the same pair every time.

    ``variety``: the data version (:class:`variety.DataVariety`). ``sim1`` (default) is the shipped weights'
    data, unchanged. ``sim2`` also draws (:mod:`.variety`, recorded in ``info["sim2"]``; ``force`` fixes some
    draws, :func:`variety.draw`): the noise family and roll-off, a voxel size of 0.5-2.5 A, an anisotropic blur,
    a depositor's mask and a scale and offset. In a sim2 pair every map is in the halves' units: the targets and
    the model map carry the scale but no offset (they are deviations from the solvent, as the network's
    denormalised output), and ``signal`` is the halves' noise-free part, offset included.
    ``fsc0143_resolution`` is what the halves as returned measure (a mask raises it); the targets are
    low-passed at the resolution the data support, the FSC-0.143 before the mask (``info["target_resolution"]``),
    and isotropically: the anisotropic blur weakens one direction but the target asks for what the shell-averaged
    FSC supports, as a global B is undone. Masked pairs' targets are multiplied by the depositor's mask: beyond
    it the data hold nothing to recover.

    ``local_target`` (sim1 only) adds ``targets["localTarget"]``: the atoms without the flexibility blur, each
    region low-passed at its own resolution (:func:`local_resolution`), times the tight mask, and
    ``targets["rigidTarget"]``: the same atoms all low-passed at the global resolution, as if nothing were
    flexible (candidates measured by ``benchmarks/target_ceiling.py``; they draw nothing, so the rest of the
    pair is unchanged).
    """
    path = Path(structure_path)
    kind = parse_variety(variety)
    if force and kind is not DataVariety.SIM2:
        raise InputError(f"force= fixes sim2 draws; the {kind} simulator has none")
    if local_target and kind is not DataVariety.SIM1:
        raise InputError("local_target= adds sim1 candidate targets; sim2 has none")
    rng = np.random.default_rng(seed)
    if kind is DataVariety.SIM1:
        res_req, voxel = sample_resolution_and_voxel(rng, resolution, voxel_size)
        draws = None
    else:
        res_req, voxel = V.sample_resolution_and_voxel(rng, resolution, voxel_size)
        draws = V.draw(rng, force)
    box = _place(rng, path, voxel, max_box, ligands, None if draws is None else V.PAD_SHARE)
    b0, model_map, data_map, patches = _atom_maps(rng, box)
    signal, flex, tight, wide, drawn = _signal(rng, box, data_map, res_req, micelle)
    mask, extra = None, {}
    if draws is None:
        half1, half2, k, res = _halves(rng, box, signal, res_req)
        targets, gamma = _targets(rng, box, data_map, flex, res, tight, wide)
        if local_target:
            d_local = np.maximum(local_resolution(res, drawn["b_global"], flex), 2.0 * box.voxel)
            targets["localTarget"] = spatial_lowpass(data_map, box.s2, d_local) * tight
            targets["rigidTarget"] = _lowpass(data_map, box.s2, max(res, 2.0 * box.voxel)) * tight
    else:
        half1, half2, signal, k, supported, mask, offset = _halves_sim2(rng, box, signal, res_req, draws, tight)
        res = fsc(half1, half2, box.voxel).resolution(FSC_THRESHOLD)
        targets, gamma = _targets(rng, box, data_map, flex, supported, tight, wide)
        units = np.float32(draws.scale) * (mask if mask is not None else np.float32(1.0))
        targets = {k_: v * units for k_, v in targets.items()}
        model_map = model_map * np.float32(draws.scale)
        extra = {"sim2": draws.info(), "target_resolution": supported, "offset": offset}
    atoms = box.atoms
    info = {
        "structure": path.name, "seed": int(seed), "requested_resolution": res_req, "b0": b0,
        "b_global": drawn["b_global"], "flex_max": float(flex.max()), "target_gamma": gamma,
        "n_atoms": int(len(atoms.b)), "n_ligands": box.n_ligands,
        "ligand_xyz": atoms.pos[box.n_model:].round(3).tolist(),
        "micelle": drawn["micelle"], **patches, "noise_scale": k, "shape_zyx": list(box.shape),
        "variety": kind.value, **extra,
    }
    log.debug("simulated %s seed %d: %s", path.name, seed, info)
    return SimulatedPair(
        half1=half1.astype(np.float32), half2=half2.astype(np.float32), voxel_size=(voxel,) * 3,
        origin=tuple(float(c) for c in box.corner), model_map=model_map.astype(np.float32),
        targets={k_: v.astype(np.float32) for k_, v in targets.items()}, tight_mask=tight, wide_mask=wide,
        fsc0143_resolution=res, info=info, signal=signal.astype(np.float32), input_mask=mask,
    )
