"""Solvent-cube skipping on the shared real maps: cubes skipped, and model atoms outside the kept envelope.

For every map in ``../shared/real_maps`` (the first map of each folder): the working grid at 1 A, the
normalisation the CLI does (a masked map whose solvent is flat, which the automatic estimate refuses, is
normalised with the flat value as mean and a tenth of the molecule's std as noise std, as ``--noiseStats``
would), the default cube layout, :func:`normalize.molecule_blocks` and the cubes it skips; with an atomic
model, how many of its atoms (inside the box) lie outside the kept blocks (should be 0)::

    python benchmarks/skip_real_maps.py
"""

import glob
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deepemhancer_engine.atoms import Atoms, voxel_indices  # noqa: E402
from deepemhancer_engine.config import NormalizationConfig, TilingConfig  # noqa: E402
from deepemhancer_engine.errors import InputError  # noqa: E402
from deepemhancer_engine.inference import SKIP_MARGIN, cube_alignment  # noqa: E402
from deepemhancer_engine.normalize import ENVELOPE_BIN, molecule_blocks, normalize  # noqa: E402
from deepemhancer_engine.pipeline import read_half_maps  # noqa: E402
from deepemhancer_engine.resample import to_working_grid  # noqa: E402
from deepemhancer_engine.tiling import TileGrid, pad_to_tile, split_by_mask  # noqa: E402

REAL_MAPS = ROOT.parent / "shared" / "real_maps"

for d in sorted(glob.glob(f"{REAL_MAPS}/*/")):
    maps = sorted(glob.glob(d + '*.mrc') + glob.glob(d + '*.map') + glob.glob(d + '*.mrc.gz'))
    maps = [m for m in maps if 'mask' not in m]
    models = sorted(glob.glob(d + '*.pdb*') + glob.glob(d + '*.cif*'))
    for mp in maps[:1]:
        vol, _, grid = read_half_maps([mp])
        vs = grid.voxel_size
        work, info = to_working_grid(vol, vs, target=1.0)
        try:
            norm, ni = normalize(work, config=NormalizationConfig())
            how = 'auto'
        except InputError:
            flat = float(np.median(work))
            nz = work[work != flat]
            stats = NormalizationConfig(mode='stats', noise_mean=flat, noise_std=float(nz.std()) / 10)
            norm, ni = normalize(work, config=stats)
            how = 'stats(flat solvent)'
        tiling = TilingConfig()
        align = cube_alignment(tiling, 8)
        pad, unpad = pad_to_tile(norm, 64, noise_std=0.1, align=align)
        g = TileGrid.from_shape(pad.shape, 64, tiling.stride, align, tiling.cube_lattice)
        env = molecule_blocks(pad, 0.1, SKIP_MARGIN)
        need, skip = split_by_mask(g, env, 0.5, block=ENVELOPE_BIN)
        out = ''
        if models:
            at = Atoms.from_structure(models[0])
            idx = voxel_indices(at.pos, grid.origin, vs)  # input voxels [z, y, x]
            scale = np.array([info.working_shape[i] / info.original_shape[i] for i in range(3)])
            w = np.rint(idx * scale).astype(int) + np.array([u.start for u in unpad])
            inside = np.all((w >= 0) & (w < np.array(pad.shape)), axis=1)
            b = w[inside] // ENVELOPE_BIN
            cov = env[b[:, 0], b[:, 1], b[:, 2]]
            out = f'atoms in box {inside.sum()}/{len(w)}, outside envelope {int((~cov).sum())}'
        print(f'{os.path.basename(d[:-1])}: {vol.shape} at {vs[0]:.3g} A, norm {how}, skipped {len(skip)}/{g.n_tiles}; '
              f'{out}', flush=True)
