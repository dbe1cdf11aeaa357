"""Reliability (issue 8): hostile inputs, faults and interruptions never crash, lose data or leave junk.

Every case runs the real command line (``python -m deepemhancer_engine``) in a subprocess on inputs
the suite makes itself, then checks the contract:

* a bad input: the documented exit status (2 input, 3 weights, 4 memory), exactly one ``error: ...``
  line naming the problem, no traceback, no output and no temporary file, inputs byte-identical;
* a valid but unusual input: exit 0 and an output with the input's exact dimensions, voxel size,
  origin, start indices and axis order; inputs byte-identical, nothing else left behind;
* SIGINT/SIGTERM mid-run: exit 130, one line, no output, no temporary file; the next run succeeds.

The error cases and the weights cases run in parallel subprocesses; the valid-but-unusual inputs run
as one ``--inputList`` subprocess (one model load). The hundred seeded header mutations run through
the fork runner of ``fuzz_inputs.py`` (one import, one forked process per mutant, crash and hang
detection). ``docs/reliability.md`` lists every case with the test that proves it.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import fuzz_inputs as fz
import numpy as np
import pytest

from deepemhancer_engine.testing import make_tiny_weights

GiB = 1 << 30
#: Address-space limit for cases whose header claims far more than this: proves nothing is allocated.
NO_BIG_ALLOC = {resource.RLIMIT_AS: 2 * GiB}
#: Safety net for runs that could try to allocate a lot if the engine regressed (also caps memory_limit()).
SAFETY = {resource.RLIMIT_AS: 4 * GiB}
SHAPE = (32, 36, 40)  # [z, y, x] of the standard test map: 40 x 36 x 32, not a cube
ORIGIN = (12.5, -7.25, 30.0)
WORKERS = 4


# --- case definitions -------------------------------------------------------------------------------


@dataclass
class Case:
    """One run of the CLI: arguments, expected exit status and, for errors, a word the message must hold."""

    argv: list
    expect: int
    needle: str = ""
    limits: dict = field(default_factory=dict)
    weights: Path | None = None  # default: the shared tiny weights
    reference: Path | None = None  # success: the input whose geometry the output must have
    keep: dict = field(default_factory=dict)  # path -> bytes that must survive unchanged (old outputs)


ERROR_CASES: dict = {}
OK_CASES: dict = {}
#: Error cases run as ``python -m deepemhancer_engine`` (a representative one or two per kind); the
#: others run through the fork runner: one interpreter imports the engine and torch once, then each case
#: is still its own process running the real ``cli.main`` (crashes and hangs are detected per case).
EXEC: set = set()


def error_case(func=None, *, exec_: bool = False):
    def register(func):
        name = func.__name__.removeprefix("case_")
        ERROR_CASES[name] = func
        if exec_:
            EXEC.add(name)
        return func

    return register(func) if func is not None else register


def ok_case(func):
    OK_CASES[func.__name__.removeprefix("case_")] = func
    return func


def good(d: Path, name: str = "map.mrc", seed: int = 1, shape=SHAPE, **kw) -> Path:
    kw.setdefault("voxel_size", 1.0)
    kw.setdefault("origin", ORIGIN)
    return fz.write_map_file(d / name, fz.blob_map(shape, seed), **kw)


def simple(d: Path, path: Path, expect: int, needle: str, *extra, **kw) -> Case:
    return Case(["-i", path, "-o", d / "out.mrc", *extra], expect, needle, **kw)


# input files that are not usable maps (exit 2)


@error_case(exec_=True)
def case_not_mrc_binary(d, w):
    p = d / "random.mrc"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    return simple(d, p, 2, "not an mrc file")


@error_case
def case_empty_file(d, w):
    p = d / "empty.mrc"
    p.write_bytes(b"")
    return simple(d, p, 2, "not an mrc file")


@error_case
def case_header_only(d, w):
    p = good(d)
    os.truncate(p, 1024)
    return simple(d, p, 2, "truncated")


@error_case(exec_=True)
def case_truncated_data(d, w):
    p = good(d)
    os.truncate(p, p.stat().st_size - 1)
    return simple(d, p, 2, "truncated")


@error_case(exec_=True)
def case_dims_larger_than_file(d, w):  # 2048^3 float32 = 32 GiB declared; RLIMIT_AS 2 GiB proves no allocation
    p = fz.patch_header(good(d), nx=2048, ny=2048, nz=2048)
    return simple(d, p, 2, "truncated: header declares 2048 x 2048 x 2048", limits=NO_BIG_ALLOC)


@error_case
def case_terabyte_header(d, w):  # 10000^3 float32 = 4 TB
    p = fz.patch_header(good(d), nx=10000, ny=10000, nz=10000, mx=10000, my=10000, mz=10000)
    return simple(d, p, 2, "truncated: header declares 10000 x 10000 x 10000", limits=NO_BIG_ALLOC)


@error_case(exec_=True)
def case_terabyte_header_gz(d, w):  # compressed: mrcfile would allocate the declared data block
    p = fz.patch_header(good(d, "raw.mrc"), nx=10000, ny=10000, nz=10000)
    gz = d / "tera.mrc.gz"
    gz.write_bytes(gzip.compress(p.read_bytes(), compresslevel=1))
    p.unlink()
    return simple(d, gz, 2, "truncated", limits=NO_BIG_ALLOC)


@error_case(exec_=True)
def case_extended_header_2gib(d, w):  # NSYMBT = 2^31 - 1: mrcfile would allocate 2 GiB for it
    p = fz.patch_header(good(d), nsymbt=2**31 - 1)
    return simple(d, p, 2, "truncated", limits=NO_BIG_ALLOC)


@error_case
def case_extended_header_negative(d, w):
    p = fz.patch_header(good(d), nsymbt=-1)
    return simple(d, p, 2, "negative extended header")


@error_case(exec_=True)
def case_gzip_bomb(d, w):  # a valid map followed by 80 MB of zeros inside the gzip stream
    raw = good(d, "raw.mrc").read_bytes()
    gz = d / "bomb.mrc.gz"
    with gzip.open(gz, "wb", compresslevel=1) as f:
        f.write(raw)
        for _ in range(80):
            f.write(bytes(1 << 20))
    (d / "raw.mrc").unlink()
    return simple(d, gz, 2, "decompresses to more", limits=NO_BIG_ALLOC)


@error_case(exec_=True)
def case_mode3_complex(d, w):
    return simple(d, fz.patch_header(good(d), mode=3), 2, "complex")


@error_case
def case_mode4_complex(d, w):
    return simple(d, fz.patch_header(good(d), mode=4), 2, "complex")


@error_case
def case_mode_unknown(d, w):
    return simple(d, fz.patch_header(good(d), mode=101), 2, "unsupported mrc mode 101")


@error_case
def case_machine_stamp_unknown(d, w):  # byte order cannot be known; mrcfile's strict rule
    return simple(d, fz.patch_header(good(d), machst=[0, 0, 0, 0]), 2, "machine stamp")


@error_case(exec_=True)
def case_voxel_size_zero(d, w):
    return simple(d, fz.patch_header(good(d), cella=(0.0, 36.0, 32.0)), 2, "voxel size")


@error_case
def case_voxel_size_negative(d, w):
    return simple(d, fz.patch_header(good(d), cella=(40.0, -36.0, 32.0)), 2, "voxel size")


@error_case
def case_voxel_size_nan(d, w):
    return simple(d, fz.patch_header(good(d), cella=(40.0, 36.0, float("nan"))), 2, "voxel size")


@error_case
def case_sampling_zero(d, w):
    return simple(d, fz.patch_header(good(d), mx=0), 2, "sampling")


@error_case
def case_voxel_override_infinite(d, w):
    return simple(d, good(d), 2, "voxel size (-s)", "-s", "inf")


@error_case
def case_voxel_override_negative(d, w):
    return simple(d, good(d), 2, "voxel size (-s)", "-s", "-1.2")


@error_case
def case_voxel_size_absurdly_small(d, w):  # 0.001 A voxels: the map is 0.04 A wide, under 2 voxels at 1 A
    p = fz.patch_header(good(d), cella=(0.04, 0.036, 0.032))
    return simple(d, p, 2, "less than 2 voxels", limits=SAFETY)


@error_case
def case_voxel_size_absurdly_large(d, w):  # 1e30 A voxels: a 1e31-voxel working grid, refused before allocating
    p = fz.patch_header(good(d), cella=(1e31, 36.0, 32.0))
    return simple(d, p, 4, "needs at least", limits=SAFETY)


@error_case
def case_box_exceeds_memory(d, w):  # 60 A voxels: 2400x2160x1920 working voxels (~37 GiB) vs a 4 GiB limit
    p = good(d, voxel_size=60.0)
    return simple(d, p, 4, "needs at least", limits=SAFETY)


@error_case(exec_=True)
def case_map_larger_than_memory(d, w):  # a real (sparse) 700^3 int8 file: 1.4 GB as float32, RLIMIT_AS 1 GiB
    p = fz.write_map_file(d / "big.mrc", np.zeros((2, 2, 2), np.int8))
    fz.patch_header(p, nx=700, ny=700, nz=700, mx=700, my=700, mz=700, cella=(700.0, 700.0, 700.0))
    os.truncate(p, 1024 + 700**3)  # sparse: no disk space used
    return simple(d, p, 4, "the map has 700 x 700 x 700 voxels", limits={resource.RLIMIT_AS: GiB})


@error_case
def case_map_larger_than_memory_gz(d, w):  # the same for a real .gz of 660^3 int8 (1.15 GB as float32)
    header = fz.patch_header(fz.write_map_file(d / "h.mrc", np.zeros((2, 2, 2), np.int8)), nx=660, ny=660, nz=660,
                             mx=660, my=660, mz=660, cella=(660.0, 660.0, 660.0)).read_bytes()[:1024]
    (d / "h.mrc").unlink()
    with gzip.open(d / "big.mrc.gz", "wb", compresslevel=1) as f:
        f.write(header)
        for _ in range(660):
            f.write(bytes(660 * 660))
    return simple(d, d / "big.mrc.gz", 4, "the map has 660 x 660 x 660 voxels", limits={resource.RLIMIT_AS: GiB})


@error_case(exec_=True)
def case_origin_nan(d, w):
    return simple(d, fz.patch_header(good(d), origin=(float("nan"), 0.0, 0.0)), 2, "origin")


@error_case
def case_axis_order_invalid(d, w):
    return simple(d, fz.patch_header(good(d), mapc=1, mapr=3, maps=3), 2, "axis order")


@error_case
def case_neg_inf_voxel(d, w):
    a = fz.blob_map(SHAPE, 2)
    a[5, 6, 7] = -np.inf
    return simple(d, fz.write_map_file(d / "inf.mrc", a), 2, "nan/inf")


@error_case(exec_=True)
def case_constant_map(d, w):
    p = fz.write_map_file(d / "const.mrc", np.full(SHAPE, 3.5, np.float32))
    return simple(d, p, 2, "constant")


@error_case(exec_=True)
def case_one_voxel_thick_x(d, w):
    return simple(d, good(d, shape=(32, 36, 1)), 2, "2d image")


@error_case
def case_one_voxel_thick_y(d, w):
    return simple(d, good(d, shape=(32, 1, 40)), 2, "2d image")


@error_case
def case_image_2d(d, w):
    return simple(d, fz.write_map_file(d / "img.mrc", fz.blob_map((36, 40), 3)), 2, "2d image")


@error_case
def case_image_stack(d, w):
    return simple(d, fz.patch_header(good(d), ispg=0, mz=1), 2, "stack of 32 2d images")


@error_case
def case_volume_stack(d, w):
    p = fz.write_map_file(d / "vstack.mrc", np.stack([fz.blob_map((16, 18, 20), s) for s in (1, 2)]))
    return simple(d, p, 2, "stack of 2 volumes")


@error_case
def case_volume_stack_inconsistent(d, w):
    return simple(d, fz.patch_header(good(d), ispg=401, mz=15), 2, "volume stack")


# two half maps


@error_case(exec_=True)
def case_halves_anisotropic_voxel(d, w):  # differ along x only
    h1 = good(d, "h1.mrc", voxel_size=(1.0, 1.0, 1.0))
    h2 = good(d, "h2.mrc", 2, voxel_size=(1.05, 1.0, 1.0))
    return Case(["-i", h1, "-i2", h2, "-o", d / "out.mrc"], 2, "voxel size")


@error_case
def case_halves_origin_by_nstart(d, w):  # same ORIGIN field, different start indices
    h1 = good(d, "h1.mrc", origin=(0, 0, 0))
    h2 = good(d, "h2.mrc", 2, origin=(0, 0, 0), nstart=(-20, 0, 0))
    return Case(["-i", h1, "-i2", h2, "-o", d / "out.mrc"], 2, "origin")


@error_case
def case_halves_same_file(d, w):
    h1 = good(d, "h1.mrc")
    return Case(["-i", h1, "-i2", h1, "-o", d / "out.mrc"], 2, "same file")


@error_case
def case_half2_not_mrc(d, w):
    h1 = good(d, "h1.mrc")
    h2 = d / "h2.mrc"
    h2.write_text("not a map\n" * 200)
    return Case(["-i", h1, "-i2", h2, "-o", d / "out.mrc"], 2, "h2.mrc")


@error_case
def case_half2_nan(d, w):
    h1 = good(d, "h1.mrc")
    a = fz.blob_map(SHAPE, 2)
    a[0, 0, 0] = np.nan
    h2 = fz.write_map_file(d / "h2.mrc", a, origin=ORIGIN)
    return Case(["-i", h1, "-i2", h2, "-o", d / "out.mrc"], 2, "nan/inf")


# masks


@error_case(exec_=True)
def case_mask_values_above_one(d, w):
    m = fz.write_map_file(d / "mask.mrc", np.linspace(0, 2, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE),
                          origin=ORIGIN)
    return simple(d, good(d), 2, "between 0 and 1", "-m", m)


@error_case
def case_mask_negative_values(d, w):
    m = fz.write_map_file(d / "mask.mrc", np.linspace(-1, 1, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE),
                          origin=ORIGIN)
    return simple(d, good(d), 2, "between 0 and 1", "-m", m)


@error_case
def case_mask_nan(d, w):
    a = (fz.blob_map(SHAPE, 1) > 0.3).astype(np.float32)
    a[1, 2, 3] = np.nan
    return simple(d, good(d), 2, "nan/inf", "-m", fz.write_map_file(d / "mask.mrc", a, origin=ORIGIN))


@error_case
def case_mask_transposed_shape(d, w):  # same voxel count, axes swapped
    a = (fz.blob_map(SHAPE[::-1], 1) > 0.3).astype(np.float32)
    return simple(d, good(d), 2, "mask shape", "-m", fz.write_map_file(d / "mask.mrc", a, origin=ORIGIN))


# outputs


@error_case(exec_=True)
def case_output_is_half2(d, w):
    h1, h2 = good(d, "h1.mrc"), good(d, "h2.mrc", 2)
    return Case(["-i", h1, "-i2", h2, "-o", h2], 2, "overwrite an input")


@error_case
def case_output_is_mask(d, w):
    m = fz.write_map_file(d / "mask.mrc", (fz.blob_map(SHAPE, 1) > 0.3).astype(np.float32), origin=ORIGIN)
    return Case(["-i", good(d), "-m", m, "-o", m, "--force"], 2, "overwrite an input")


@error_case(exec_=True)
def case_output_symlink_to_input(d, w):
    p = good(d)
    (d / "link.mrc").symlink_to(p.name)
    return Case(["-i", p, "-o", d / "link.mrc", "--force"], 2, "overwrite an input")


@error_case
def case_output_hardlink_to_input(d, w):
    p = good(d)
    os.link(p, d / "hard.mrc")
    return Case(["-i", p, "-o", d / "hard.mrc", "--force"], 2, "overwrite an input")


@error_case
def case_output_is_directory(d, w):
    (d / "sub.mrc").mkdir()
    return Case(["-i", good(d), "-o", d / "sub.mrc", "--force"], 2, "directory")


@error_case
def case_output_directory_missing(d, w):
    return Case(["-i", good(d), "-o", d / "nowhere" / "out.mrc"], 2, "does not exist")


@error_case
def case_output_file_size_limit(d, w):  # RLIMIT_FSIZE 64 KiB: the write fails like on a full disk
    return simple(d, good(d), 2, "cannot write", limits={resource.RLIMIT_FSIZE: 1 << 16})


@error_case(exec_=True)
def case_output_force_write_fails_keeps_old(d, w):  # atomic replace: the old output survives a failed write
    out = d / "out.mrc"
    out.write_bytes(b"previous result")
    return Case(["-i", good(d), "-o", out, "--force"], 2, "cannot write", limits={resource.RLIMIT_FSIZE: 1 << 16},
                keep={out: b"previous result"})


# weights (exit 3)


def _weights_copy(d: Path, w: Path) -> tuple[Path, Path, dict]:
    pt, card = d / "model.pt", d / "model.json"
    shutil.copy(w, pt)
    data = json.loads(w.with_suffix(".json").read_text())
    return pt, card, data


def _resign(pt: Path, card: Path, data: dict) -> None:
    data["sha256"] = fz.sha256(pt)
    card.write_text(json.dumps(data))


@error_case(exec_=True)
def case_weights_truncated(d, w):  # card re-signed, so the checksum passes and torch.load must fail cleanly
    pt, card, data = _weights_copy(d, w)
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    _resign(pt, card, data)
    return simple(d, good(d), 3, "cannot read", weights=pt)


@error_case
def case_weights_bit_flip(d, w):  # checksum mismatch
    pt, card, data = _weights_copy(d, w)
    raw = bytearray(pt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pt.write_bytes(bytes(raw))
    card.write_text(json.dumps(data))
    return simple(d, good(d), 3, "checksum mismatch", weights=pt)


@error_case
def case_weights_wrong_architecture(d, w):  # card says a wider network than the file holds
    pt, card, data = _weights_copy(d, w)
    data["kwargs"] = {**data["kwargs"], "filters": [4, 8, 16]}
    card.write_text(json.dumps(data))
    return simple(d, good(d), 3, "do not fit", weights=pt)


@error_case
def case_weights_unknown_architecture(d, w):
    pt, card, data = _weights_copy(d, w)
    data["arch"] = "transformer9000"
    card.write_text(json.dumps(data))
    return simple(d, good(d), 3, "unknown network architecture", weights=pt)


@error_case
def case_weights_card_not_json(d, w):
    pt, card, _ = _weights_copy(d, w)
    card.write_text("{ this is not json")
    return simple(d, good(d), 3, "not valid json", weights=pt)


@error_case
def case_weights_card_missing(d, w):
    pt, _, _ = _weights_copy(d, w)
    return simple(d, good(d), 3, "model card", weights=pt)


@error_case
def case_weights_file_missing(d, w):
    return simple(d, good(d), 3, "not found", weights=d / "absent.pt")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@error_case
def case_weights_pickle_payload(d, w):  # a malicious pickle with a valid checksum is refused, not executed
    pt, card, data = _weights_copy(d, w)
    pt.write_bytes(pickle.dumps({"weight": _Payload(str(d.parent / f"{d.name}.PWNED"))}))
    _resign(pt, card, data)
    return simple(d, good(d), 3, "cannot read", weights=pt)


# valid but unusual inputs: exit 0 and the input's exact geometry


@ok_case
def case_anisotropic_voxel(d, w):
    return good(d, voxel_size=(1.0, 1.3, 0.8))


@ok_case
def case_axis_order_zxy(d, w):  # MAPC/MAPR/MAPS = 3, 1, 2
    return fz.write_map_file(d / "map.mrc", fz.blob_map((36, 40, 32), 2), axis_order=(3, 1, 2), origin=ORIGIN)


@ok_case
def case_axis_order_yzx_anisotropic_nstart(d, w):
    return fz.write_map_file(d / "map.mrc", fz.blob_map((40, 32, 36), 3), axis_order=(2, 3, 1),
                             voxel_size=(0.9, 1.1, 1.2), origin=(0, 0, 0), nstart=(-18, 5, 7))


@ok_case
def case_smaller_than_cube(d, w):  # 16 x 18 x 20 voxels, the network's cube is 32
    return good(d, shape=(20, 18, 16))


@ok_case
def case_big_endian(d, w):
    src = good(d, "le.mrc")
    raw = src.read_bytes()
    header = np.frombuffer(raw[:1024], fz.LE_HEADER).astype(fz.HEADER_DTYPE.newbyteorder(">"))
    header["machst"] = [0x11, 0x11, 0, 0]
    data = np.frombuffer(raw[1024:], "<f4").astype(">f4")
    src.unlink()
    out = d / "map.mrc"
    out.write_bytes(header.tobytes() + data.tobytes())
    return out


@ok_case
def case_gzip_input(d, w):
    return good(d, "map.mrc.gz", compression="gzip")


@ok_case
def case_int16_mode1(d, w):
    return fz.write_map_file(d / "map.mrc", (fz.blob_map(SHAPE, 4) * 1000).astype(np.int16), origin=ORIGIN)


@ok_case
def case_float16_mode12(d, w):
    return fz.write_map_file(d / "map.mrc", fz.blob_map(SHAPE, 5).astype(np.float16), origin=ORIGIN)


@ok_case
def case_extended_header(d, w):  # 1024 bytes of FEI-style extended header before the data
    src = good(d, "plain.mrc")
    raw = src.read_bytes()
    src.unlink()
    header = np.frombuffer(raw[:1024], fz.LE_HEADER).copy()
    header["nsymbt"], header["exttyp"] = 1024, b"FEI1"
    p = d / "map.mrc"
    p.write_bytes(header.tobytes() + np.random.default_rng(0).bytes(1024) + raw[1024:])
    return p


@ok_case
def case_origin_from_nstart(d, w):
    return good(d, origin=(0, 0, 0), nstart=(-20, -18, -16))


@ok_case
def case_volume_stack_of_one(d, w):  # ISPG 401 with NZ == MZ: one volume written as a stack
    return fz.patch_header(good(d), ispg=401)


@ok_case
def case_trailing_bytes(d, w):  # longer than the header says: a warning, the declared data are used
    p = good(d)
    with open(p, "ab") as f:
        f.write(bytes(100))
    return p


@ok_case
def case_cell_angles_not_90(d, w):  # read as orthogonal, with a warning
    return fz.patch_header(good(d), cellb=(90.0, 90.0, 120.0))


@ok_case
def case_halves_differ_in_axis_order(d, w):  # same grid, half map 2 stored transposed: accepted
    a, b = fz.blob_map(SHAPE, 6), fz.blob_map(SHAPE, 7)
    h1 = fz.write_map_file(d / "h1.mrc", a, origin=ORIGIN)
    fz.write_map_file(d / "h2.mrc", np.ascontiguousarray(b.transpose(0, 2, 1)), axis_order=(2, 1, 3), origin=ORIGIN)
    return h1


# --- running -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def weights(workspace) -> Path:
    return make_tiny_weights(workspace / "weights")


def _argv(case: Case, w: Path) -> list:
    return [*case.argv, "--weights", case.weights or w, "-q"]


@pytest.fixture(scope="module")
def error_results(workspace, weights) -> dict:
    """Build every error case and run them all: parallel subprocesses, plus the fork runner."""
    cases, before = {}, {}
    for name, build in ERROR_CASES.items():
        d = workspace / "errors" / name
        d.mkdir(parents=True)
        cases[name] = (build(d, weights), d)
        before[name] = fz.snapshot(d)
    forked = [(name, _argv(case, weights), case.limits) for name, (case, _) in cases.items() if name not in EXEC]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        fork_future = pool.submit(fz.run_forked, forked, workspace / "forked", timeout=120)
        futures = {name: pool.submit(fz.run_cli, _argv(case, weights), limits=case.limits, timeout=180)
                   for name, (case, _) in cases.items() if name in EXEC}
        results = {name: f.result() for name, f in futures.items()}
        for name, (outcome, result) in fork_future.result().items():
            assert outcome["status"] == "exit", f"{name}: {outcome}"
            results[name] = result
    return {name: (case, d, results[name], before[name], fz.snapshot(d)) for name, (case, d) in cases.items()}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_bad_input_rejected_cleanly(error_results, name):
    case, d, result, before, after = error_results[name]
    assert result.returncode == case.expect, result.stderr
    assert fz.clean_error(result) == [], result.stderr
    assert all(fz.is_log_line(ln) for ln in result.lines[:-1]), result.stderr  # only log warnings besides
    line = result.lines[-1]
    assert case.needle.lower() in line.lower(), line
    assert after == before, "inputs changed, or an output or temporary file was left"
    for path, content in case.keep.items():
        assert Path(path).read_bytes() == content
    assert not list(d.parent.glob("*.PWNED")), "a pickle payload in the weights file was executed"


@pytest.fixture(scope="module")
def ok_results(workspace, weights) -> dict:
    """Build every valid-but-unusual input and enhance them all in one ``--inputList`` run."""
    jobs, cases = [], {}
    for name, build in OK_CASES.items():
        d = workspace / "ok" / name
        d.mkdir(parents=True)
        ref = build(d, weights)
        inputs = sorted(p for p in d.iterdir() if p.is_file())  # both halves for the half-map case
        out = d / "out.mrc"
        jobs.append(" ".join(map(str, [*inputs, out])))
        cases[name] = (d, ref, out, fz.snapshot(d))
    job_list = workspace / "ok" / "jobs.txt"
    job_list.write_text("\n".join(jobs) + "\n")
    result = fz.run_cli(["--inputList", job_list, "--weights", weights, "-q"], limits=SAFETY, timeout=300)
    return {"result": result, "cases": cases}


@pytest.mark.parametrize("name", sorted(OK_CASES))
def test_unusual_input_gives_exact_geometry(ok_results, name):
    result = ok_results["result"]
    d, ref, out, before = ok_results["cases"][name]
    assert "Traceback" not in result.stderr
    problems = [ln for ln in result.lines if ln.startswith("error:") and str(d) in ln]
    assert not problems, problems
    assert out.exists(), result.stderr
    assert fz.same_geometry(fz.geometry(out), fz.geometry(ref)) == []
    data = fz.data_of(out)
    assert data.dtype == np.float32 and np.isfinite(data).all() and float(np.ptp(data)) > 0
    after = fz.snapshot(d)
    provenance = {"out.json"} | ({"out_fsc.tsv"} if len(before) == 2 else set())  # the sidecar; the FSC with halves
    assert set(after) == set(before) | {"out.mrc"} | provenance  # nothing else left behind
    assert {k: after[k] for k in before} == before  # inputs byte-identical


def test_unusual_inputs_run_exits_zero(ok_results):
    result = ok_results["result"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# --- interruptions ------------------------------------------------------------------------------------


def _start_long_run(d: Path, w: Path, out: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start a run that takes many seconds (stride 1: hundreds of cubes) and wait until the network runs."""
    inp = d / "map.mrc"
    if not inp.exists():
        good(d, shape=(40, 40, 40))
    argv = ["-i", inp, "-o", out, "--weights", w, "--stride", "1", "-b", "2"]
    proc = subprocess.Popen(fz.cli_command(argv), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=fz.cli_env(), preexec_fn=fz.limiter(SAFETY))
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if "Predicting" in line or time.monotonic() > deadline:
            break
    assert any("Predicting" in ln for ln in seen), "".join(seen)
    time.sleep(0.3)
    return proc, seen


SIGNALS = {"SIGTERM": [signal.SIGTERM], "SIGINT": [signal.SIGINT],
           "SIGTERM-SIGINT-SIGTERM": [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]}


@pytest.fixture(scope="module")
def interrupted(workspace, weights) -> dict:
    """Start one long run per signal sequence (in parallel), interrupt each while the network runs."""

    def interrupt(name: str) -> dict:
        d = workspace / "signals" / name
        d.mkdir(parents=True)
        out = d / "out.mrc"
        proc, _ = _start_long_run(d, weights, out)
        before = fz.snapshot(d)
        t0 = time.monotonic()
        for sig in SIGNALS[name]:
            proc.send_signal(sig)
        rest = proc.stderr.read()  # type: ignore[union-attr]
        code = proc.wait(timeout=60)
        return {"dir": d, "out": out, "code": code, "stderr": rest, "seconds": time.monotonic() - t0,
                "before": before, "after": fz.snapshot(d)}

    with concurrent.futures.ThreadPoolExecutor(len(SIGNALS)) as pool:
        futures = {name: pool.submit(interrupt, name) for name in SIGNALS}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_mid_run_leaves_nothing_and_next_run_succeeds(interrupted, weights, name):
    r = interrupted[name]
    assert r["seconds"] < 30, "the run did not stop promptly"
    assert r["code"] == 130, r["stderr"]
    tail = [ln for ln in r["stderr"].splitlines() if ln.strip() and not fz.is_log_line(ln)]
    kind = "interrupted" if signal.SIGINT in SIGNALS[name] else "terminated"
    assert tail == [f"error: {kind}; no output written"], r["stderr"]
    assert "Traceback" not in r["stderr"]
    assert not r["out"].exists() and fz.temp_files(r["dir"]) == []
    assert r["after"] == r["before"]
    if name != "SIGTERM":
        return  # one rerun is enough to show that nothing blocks the next run
    # the next run (same output name, no --force) succeeds
    inp = r["dir"] / "map.mrc"
    again = fz.run_cli(["-i", inp, "-o", r["out"], "--weights", weights, "-q"], limits=SAFETY)
    assert again.returncode == 0, again.stderr
    assert fz.same_geometry(fz.geometry(r["out"]), fz.geometry(inp)) == []
    assert fz.temp_files(r["dir"]) == []


#: Runs the real entry point with SIGTERM raised inside write_map, after the temporary file is filled.
_SIGTERM_IN_WRITE = r"""
import os, runpy, signal, sys
import deepemhancer_engine.io as io
_fill = io._fill_header
def fill_then_terminate(mrc, grid):
    _fill(mrc, grid)
    os.kill(os.getpid(), signal.SIGTERM)
io._fill_header = fill_then_terminate
sys.argv = ["deepemhancer", *sys.argv[1:]]
runpy.run_module("deepemhancer_engine", run_name="__main__", alter_sys=True)
"""


def test_sigterm_while_writing_keeps_old_output_and_no_temp(tmp_path, weights):
    inp = good(tmp_path)
    out = tmp_path / "out.mrc"
    out.write_bytes(b"previous result")
    before = fz.snapshot(tmp_path)
    argv = ["-i", inp, "-o", out, "--weights", weights, "-q", "--force"]
    res = fz.run_cli(argv, command=[sys.executable, "-c", _SIGTERM_IN_WRITE, *map(str, argv)], limits=SAFETY)
    assert res.returncode == 130, res.stderr
    assert fz.error_lines(res) == ["error: terminated; no output written"], res.stderr
    assert fz.temp_files(tmp_path) == [] and fz.snapshot(tmp_path) == before
    assert out.read_bytes() == b"previous result"


# --- memory and file-system limits -------------------------------------------------------------------------

#: Imports everything, then caps the address space at the current size + argv[1] bytes and runs the CLI:
#: torch needs far more address space to import than the map needs, so the cap must come after the imports.
_RLIMIT_AS_AFTER_IMPORT = r"""
import re, resource, runpy, sys
import numpy, scipy.fft, scipy.ndimage, torch, mrcfile
from deepemhancer_engine import cli, inference, io, model, normalize, pipeline, postprocess, resample, tiling, weights
from deepemhancer_engine.commands import enhance
vm = int(re.search(r"VmSize:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
sys.argv = ["deepemhancer", *sys.argv[2:]]
runpy.run_module("deepemhancer_engine", run_name="__main__", alter_sys=True)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to measure the address space")
def test_huge_box_over_rlimit_as_is_a_clean_out_of_memory(tmp_path, weights):
    # 40 x 36 x 32 voxels of 8 A: a 320 x 288 x 256 working box (~90 MB per array), with only 200 MB of
    # address space left after the imports: the memory pre-check passes, a real allocation fails.
    inp = good(tmp_path, voxel_size=8.0)
    out = tmp_path / "out.mrc"
    before = fz.snapshot(tmp_path)
    argv = ["-i", inp, "-o", out, "--weights", weights, "-q"]
    command = [sys.executable, "-c", _RLIMIT_AS_AFTER_IMPORT, str(200 << 20), *map(str, argv)]
    res = fz.run_cli(argv, command=command)
    assert res.returncode == 4, res.stderr
    assert fz.error_lines(res) == [fz.OUT_OF_MEMORY], res.stderr
    assert "Traceback" not in res.stderr
    assert fz.snapshot(tmp_path) == before and not out.exists()


def _private_mount(directory: Path, options: str) -> list[str] | None:
    """A command prefix running the rest in a private mount namespace with a tmpfs on ``directory``.

    It prints what is left in ``directory`` as a last stdout line ``LEFT:...`` (the tmpfs vanishes with
    the namespace). None when mount namespaces are unavailable (not root, no unshare, seccomp...).
    """
    if shutil.which("unshare") is None:
        return None
    script = ('mount -t tmpfs -o "$1" tmpfs "$0" || exit 99; shift; "$@"; rc=$?; '
              'echo "LEFT:$(ls -A "$0" | tr "\\n" " ")"; exit $rc')
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(directory),
                            options, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(directory), options]


def test_full_disk_leaves_no_partial_output(tmp_path, weights):
    inp = good(tmp_path)
    outdir = tmp_path / "full"
    outdir.mkdir()
    prefix = _private_mount(outdir, "size=64k")
    if prefix is None:
        pytest.skip("no mount namespace to make a real full file system (RLIMIT_FSIZE cases cover the write path)")
    argv = ["-i", inp, "-o", outdir / "out.mrc", "--weights", weights, "-q"]
    before = fz.snapshot(tmp_path)
    res = fz.run_cli(argv, command=[*prefix, *fz.cli_command(argv)], limits=SAFETY)
    assert res.returncode == 2, res.stderr
    lines = fz.error_lines(res)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left" in lines[0], res.stderr
    assert res.stdout.strip().splitlines()[-1].strip() == "LEFT:", res.stdout  # no output, no temporary file
    assert fz.snapshot(tmp_path) == before


def test_read_only_output_location(tmp_path, weights):
    inp = good(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = ["-i", inp, "-o", ro / "out.mrc", "--weights", weights, "-q"]
    command, cleanup = fz.cli_command(argv), None
    if os.geteuid() != 0:
        ro.chmod(0o555)
        cleanup = lambda: ro.chmod(0o755)  # noqa: E731
    else:  # root ignores permissions: a read-only tmpfs in a private mount namespace, else chattr +i
        prefix = _private_mount(ro, "ro,size=64k")
        if prefix is not None:
            command = [*prefix, *command]
        elif subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0:
            cleanup = lambda: subprocess.run(["chattr", "-i", str(ro)])  # noqa: E731
        else:
            pytest.skip("running as root without mount namespaces or chattr: cannot make a read-only directory")
    before = fz.snapshot(tmp_path)
    try:
        res = fz.run_cli(argv, command=command, limits=SAFETY)
        left = sorted(p.name for p in ro.iterdir())
    finally:
        if cleanup:
            cleanup()
    assert res.returncode == 2, res.stderr
    lines = fz.error_lines(res)
    assert len(lines) == 1 and "not writable" in lines[0] and "out.mrc" in lines[0], res.stderr
    assert left == [] and fz.snapshot(tmp_path) == before
    if res.stdout.strip():
        assert res.stdout.strip().splitlines()[-1].strip() == "LEFT:"


# --- a hundred random header mutations ------------------------------------------------------------------

N_MUTANTS = 100


@pytest.mark.slow
def test_random_header_mutations_are_all_clean(workspace, capsys):
    d = workspace / "mutants"
    # a 16^3-cube network and a map smaller than one cube: one cube per valid mutant keeps this quick
    weights = make_tiny_weights(workspace / "weights16", tile=16, name="tiny16")
    base = fz.write_map_file(workspace / "base.mrc", fz.blob_map((14, 15, 16), 3), origin=(10.5, -3.0, 7.25))
    mutants = fz.make_mutants(base, d, N_MUTANTS, seed=20240601)
    (d / "out").mkdir()
    digests = {p.name: fz.sha256(p) for p, _ in mutants}
    jobs = [(p.stem, ["-i", p, "-o", d / "out" / p.name, "--weights", weights, "-q"], SAFETY) for p, _ in mutants]
    outcomes = fz.run_forked(jobs, d / "runs", timeout=60)

    report, clean, kinds = [], 0, {"result": 0, "error": 0}
    for path, what in mutants:
        r, result = outcomes[path.stem]
        stderr = result.stderr
        out = d / "out" / path.name
        problems = []
        if r["status"] != "exit":
            problems.append(f"{r['status']} {r['code']}")
        elif r["code"] == 0:
            kinds["result"] += 1
            if not out.exists():
                problems.append("exit 0 without output")
            else:
                problems += fz.same_geometry(fz.geometry(out), fz.geometry(path))
                if not np.isfinite(fz.data_of(out)).all():
                    problems.append("non-finite output")
            if "Traceback" in stderr:
                problems.append("traceback")
        elif r["code"] in (2, 3, 4):
            kinds["error"] += 1
            problems += fz.clean_error(result)
            if out.exists():
                problems.append("output left after an error")
        else:
            problems.append(f"exit {r['code']}")
        if fz.sha256(path) != digests[path.name]:
            problems.append("input modified")
        if fz.temp_files(d / "out"):
            problems.append("temporary files left")
        clean += not problems
        last = result.lines[-1] if result.lines else ""
        report.append(f"{path.stem}  {what:<60}  exit {r['code']}  {'ok' if not problems else problems}  {last[:100]}")
    with capsys.disabled():
        print(f"\nrandom header mutations: {clean}/{N_MUTANTS} clean "
              f"({kinds['result']} correct results, {kinds['error']} clean errors)")
    (workspace / "mutation_report.txt").write_text("\n".join(report) + "\n")
    assert clean == N_MUTANTS, "\n".join(ln for ln in report if "  ok  " not in ln)
