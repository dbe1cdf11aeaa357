"""Regenerate the bundled example half-maps in examples/ (simulated; see examples/README.txt)."""

from pathlib import Path

import gemmi  # noqa: F401  (training extra)
import numpy as np

from deepemhancer_engine.io import GridInfo, write_map
from deepemhancer_engine.training.simulate import simulate_pair

STRUCTURE = Path(__file__).resolve().parents[2] / "shared/structures/files/1HPX__plip.pdb.gz"
OUT = Path(__file__).resolve().parents[1] / "examples"

pair = simulate_pair(STRUCTURE, 20261128, voxel_size=1.1, resolution=4.0, max_box=72, ligands=False,
                     micelle=False)
grid = GridInfo(shape=pair.half1.shape, voxel_size=pair.voxel_size, origin=pair.origin)
for name, data in (("half1", pair.half1), ("half2", pair.half2)):
    write_map(OUT / f"{name}.mrc", data.astype(np.float32), grid, overwrite=True)
print(pair.half1.shape, pair.voxel_size, pair.origin, f"FSC-0.143 {pair.fsc0143_resolution:.2f} A", pair.info)
