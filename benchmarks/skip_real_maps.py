"""Solvent-cube skipping on the shared real maps: cubes skipped, where the model's atoms lie, and (``--network``)
how far the default output moves from the ``--no-skip`` output.

For every map in ``../shared/real_maps`` (the first map of each folder): the working grid at 1 A, the
normalisation the CLI does (a masked map whose solvent is flat, which the automatic estimate refuses, is
normalised with the flat value as mean and a tenth of the molecule's std as noise std, as ``--noiseStats``
would), the default cube layout and :func:`inference.solvent_cubes`. Cubes skipped with the engine's rule
and, beside it, with the whole margin kept (every cube touching the envelope). With an atomic model, its
atoms inside the box: in the molecule's blocks (output exactly the ``--no-skip`` one), in the margin (at
least 80 % of the blending weight kept), outside the envelope (should be 0). ``--network``: the default run
and the ``--no-skip`` run of the map, the correlation of the two over the voxels within 3 A of an atom
and over the box (the box for both where no atom lies in it), and their largest difference inside the first in
units of the ``--no-skip`` output's std there::

    python benchmarks/skip_real_maps.py [--network] [--match TEXT]
"""

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deepemhancer_engine.atoms import Atoms, voxel_indices  # noqa: E402
from deepemhancer_engine.config import EnhanceConfig, NormalizationConfig, TilingConfig  # noqa: E402
from deepemhancer_engine.errors import InputError  # noqa: E402
from deepemhancer_engine.inference import SKIP_MARGIN, cube_alignment, solvent_cubes  # noqa: E402
from deepemhancer_engine.normalize import ENVELOPE_BIN, grow_blocks, molecule_blocks, normalize  # noqa: E402
from deepemhancer_engine.pipeline import enhance, read_half_maps  # noqa: E402
from deepemhancer_engine.resample import to_working_grid  # noqa: E402
from deepemhancer_engine.tiling import TileGrid, pad_to_tile, split_by_mask  # noqa: E402

REAL_MAPS = ROOT.parent / "shared" / "real_maps"


def _normalised(work):
    """The CLI's normalisation, or the flat-solvent fallback (module docstring): ``(map, stats, how)``."""
    try:
        norm, _ = normalize(work, config=NormalizationConfig())
        return norm, None, "auto"
    except InputError:
        flat = float(np.median(work))
        stats = NormalizationConfig(mode="stats", noise_mean=flat, noise_std=float(work[work != flat].std()) / 10)
        return normalize(work, config=stats)[0], stats, "stats(flat solvent)"


def _network_check(vol, vs, stats, atoms_mask) -> str:
    config = EnhanceConfig() if stats is None else EnhanceConfig(normalization=stats)
    skip = enhance(vol, vs, config=config)
    every = enhance(vol, vs, config=config.every_cube())
    near = atoms_mask if atoms_mask is not None and atoms_mask.any() else np.ones(vol.shape, bool)
    cc = [float(np.corrcoef(skip[m], every[m])[0, 1]) for m in (near, np.ones(vol.shape, bool))]
    worst = float(np.abs(skip - every)[near].max() / every[near].std())
    return f"; CC with --no-skip near atoms {cc[0]:.6f}, box {cc[1]:.6f}, largest difference {worst:.4f} std"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", action="store_true", help="run the default and --no-skip enhancements too")
    ap.add_argument("--match", default="", metavar="TEXT", help="only the folders whose name contains TEXT")
    args = ap.parse_args()
    for d in sorted(d for d in glob.glob(f"{REAL_MAPS}/*/") if args.match in os.path.basename(d[:-1])):
        maps = [m for m in sorted(glob.glob(d + "*.mrc") + glob.glob(d + "*.map") + glob.glob(d + "*.mrc.gz"))
                if "mask" not in m]
        models = sorted(glob.glob(d + "*.pdb*") + glob.glob(d + "*.cif*"))
        for mp in maps[:1]:
            vol, _, grid = read_half_maps([mp])
            vs = grid.voxel_size
            work, info = to_working_grid(vol, vs, target=1.0)
            norm, stats, how = _normalised(work)
            tiling = TilingConfig()
            align = cube_alignment(tiling, 8)
            pad, unpad = pad_to_tile(norm, 64, noise_std=0.1, align=align)
            g = TileGrid.from_shape(pad.shape, 64, tiling.stride, align, tiling.cube_lattice)
            core = molecule_blocks(pad, 0.1, 0)
            env = grow_blocks(core, SKIP_MARGIN)
            skip = solvent_cubes(pad, 0.1, g, tiling.blend)[1]
            whole_margin = split_by_mask(g, env, 0.5, block=ENVELOPE_BIN)[1]
            out, atoms_mask = "", None
            if models:
                at = Atoms.from_structure(models[0])
                idx = voxel_indices(at.pos, grid.origin, vs)  # input voxels [z, y, x]
                scale = np.array([info.working_shape[i] / info.original_shape[i] for i in range(3)])
                w = np.rint(idx * scale).astype(int) + np.array([u.start for u in unpad])
                inside = np.all((w >= 0) & (w < np.array(pad.shape)), axis=1)
                b = w[inside] // ENVELOPE_BIN
                in_core, in_env = core[b[:, 0], b[:, 1], b[:, 2]], env[b[:, 0], b[:, 1], b[:, 2]]
                out = (f"; atoms in box {inside.sum()}/{len(w)}: in the molecule's blocks {int(in_core.sum())}, "
                       f"margin {int((in_env & ~in_core).sum())}, outside {int((~in_env).sum())}")
                near = np.zeros(vol.shape, bool)
                iv = np.rint(idx[np.all((idx >= 0) & (idx < np.array(vol.shape)), axis=1)]).astype(int)
                near[tuple(np.clip(iv, 0, np.array(vol.shape) - 1).T)] = True
                from scipy import ndimage
                atoms_mask = ndimage.binary_dilation(near, iterations=max(1, int(round(3 / min(vs)))))
            if args.network and skip:
                out += _network_check(vol, vs, stats, atoms_mask)
            print(f"{os.path.basename(d[:-1])}: {vol.shape} at {vs[0]:.3g} A, norm {how}, skipped {len(skip)}/"
                  f"{g.n_tiles} (whole margin kept: {len(whole_margin)}){out}", flush=True)


if __name__ == "__main__":
    main()
