"""Tests for deepemhancer_engine.io: strict reading, header geometry, atomic writing."""

from __future__ import annotations

import gzip
import logging
import os
import resource
import time
import warnings

import mrcfile
import numpy as np
import pytest

from deepemhancer_engine.errors import InputError
from deepemhancer_engine.io import GridInfo, check_same_grid, read_map, write_map


def _canonical(shape=(6, 7, 8), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _write_raw(path, file_data, *, voxel_size=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
               nstart=(0, 0, 0), axis_order=(1, 2, 3), sampling=None, compression=None):
    """Write file_data (sections, rows, columns) with explicit header fields."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with mrcfile.new(path, compression=compression, overwrite=True) as mrc:
            mrc.set_data(file_data)
            h = mrc.header
            h.mapc, h.mapr, h.maps = axis_order
            if sampling is not None:
                h.mx, h.my, h.mz = sampling
            h.cella.x = voxel_size[0] * int(h.mx)
            h.cella.y = voxel_size[1] * int(h.my)
            h.cella.z = voxel_size[2] * int(h.mz)
            h.origin.x, h.origin.y, h.origin.z = origin
            h.nxstart, h.nystart, h.nzstart = nstart
    return path


def _patch_header(path, offset, dtype, value):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.array(value, dtype=dtype).tobytes())


def _geometry(path):
    with mrcfile.open(path, header_only=True) as mrc:
        h = mrc.header
        return dict(
            mode=int(h.mode), n=(int(h.nx), int(h.ny), int(h.nz)), m=(int(h.mx), int(h.my), int(h.mz)),
            axes=(int(h.mapc), int(h.mapr), int(h.maps)), cell=tuple(h.cella.item()),
            origin=tuple(h.origin.item()), nstart=(int(h.nxstart), int(h.nystart), int(h.nzstart)),
        )


# --- geometry round trips -------------------------------------------------------------------------

def test_nonzero_origin_round_trip(tmp_path):
    a = _canonical()
    src = _write_raw(tmp_path / "in.mrc", a, voxel_size=(1.3, 1.3, 1.3), origin=(10.5, -3.0, 7.25))
    data, grid = read_map(src)
    assert data.dtype == np.float32 and data.flags.c_contiguous and data.flags.writeable
    assert type(data) is np.ndarray and data.flags.owndata
    np.testing.assert_array_equal(data, a)
    assert grid.shape == (6, 7, 8) and grid.axis_order == (1, 2, 3)
    np.testing.assert_allclose(grid.voxel_size, (1.3, 1.3, 1.3), rtol=1e-6)
    assert grid.origin == (10.5, -3.0, 7.25) and grid.effective_origin == (10.5, -3.0, 7.25)
    out = write_map(tmp_path / "out.mrc", data, grid)
    assert _geometry(out) == _geometry(src)
    data2, grid2 = read_map(out)
    np.testing.assert_array_equal(data2, a)
    assert grid2 == grid


def test_nstart_only_origin(tmp_path):
    a = _canonical()
    src = _write_raw(tmp_path / "in.mrc", a, voxel_size=(2.0, 2.0, 2.0), nstart=(-4, -5, -6))
    _, grid = read_map(src)
    assert grid.origin == (0.0, 0.0, 0.0) and grid.nstart == (-4, -5, -6)
    assert grid.effective_origin == (-8.0, -10.0, -12.0)
    out = write_map(tmp_path / "out.mrc", read_map(src)[0], grid)
    assert _geometry(out) == _geometry(src)


@pytest.mark.parametrize(
    "axis_order, to_file",
    [((3, 2, 1), (2, 1, 0)), ((2, 3, 1), (2, 0, 1)), ((3, 1, 2), (1, 2, 0))],
)
def test_nonstandard_axis_order(tmp_path, axis_order, to_file):
    a = _canonical((5, 6, 7))  # (z, y, x)
    file_data = np.ascontiguousarray(a.transpose(to_file))  # (section, row, column)
    vs = (1.1, 1.2, 1.3)
    src = _write_raw(tmp_path / "in.mrc", file_data, voxel_size=vs, axis_order=axis_order,
                     sampling=(7, 6, 5), nstart=(1, 2, 3), origin=(4.0, 5.0, 6.0))
    data, grid = read_map(src)
    np.testing.assert_array_equal(data, a)
    assert grid.shape == (5, 6, 7) and grid.axis_order == axis_order
    np.testing.assert_allclose(grid.voxel_size, vs, rtol=1e-6)
    out = write_map(tmp_path / "out.mrc", data, grid)
    assert _geometry(out) == _geometry(src)
    with mrcfile.open(out) as mrc:
        np.testing.assert_array_equal(mrc.data, file_data)
    data2, grid2 = read_map(out)
    np.testing.assert_array_equal(data2, a)
    assert grid2 == grid


def test_effective_origin_nstart_follows_axis_order():
    grid = GridInfo((5, 6, 7), (1.0, 2.0, 3.0), nstart=(1, 2, 3), axis_order=(3, 1, 2))
    # columns are z (start 1), rows are x (start 2), sections are y (start 3)
    assert grid.effective_origin == (2.0, 6.0, 3.0)


@pytest.mark.parametrize("dtype, mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2),
                                         (np.uint16, 6), (np.float16, 12)])
def test_modes(tmp_path, dtype, mode):
    a = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 100).astype(dtype)
    src = _write_raw(tmp_path / "in.mrc", a)
    assert _geometry(src)["mode"] == mode
    data, _ = read_map(src)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, a.astype(np.float32))


@pytest.mark.parametrize("name, compression", [("in.map", None), ("in.mrc.gz", "gzip")])
def test_map_and_gz(tmp_path, name, compression):
    a = _canonical()
    src = _write_raw(tmp_path / name, a, voxel_size=(0.8, 0.8, 0.8), compression=compression)
    data, grid = read_map(src)
    np.testing.assert_array_equal(data, a)
    np.testing.assert_allclose(grid.voxel_size, (0.8,) * 3, rtol=1e-6)
    out = write_map(tmp_path / ("out" + name[2:]), data, grid)
    np.testing.assert_array_equal(read_map(out)[0], a)


# --- bad inputs -----------------------------------------------------------------------------------

def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mrc: no such file"):
        read_map(tmp_path / "nope.mrc")
    with pytest.raises(InputError, match="is a directory"):
        read_map(tmp_path)


def test_not_mrc_and_short(tmp_path):
    bad = tmp_path / "half2.mrc"
    bad.write_bytes(b"x" * 2000)
    with pytest.raises(InputError, match=r"half2\.mrc: not an MRC file \(bad MAP identifier\)"):
        read_map(bad)
    short = tmp_path / "short.mrc"
    short.write_bytes(b"x" * 100)
    with pytest.raises(InputError, match=r"short\.mrc: not an MRC file"):
        read_map(short)


@pytest.mark.parametrize("mode, message", [(3, "contains complex data"), (4, "contains complex data"),
                                           (7, "unsupported MRC mode 7")])
def test_bad_modes(tmp_path, mode, message):
    src = _write_raw(tmp_path / "m.mrc", _canonical())
    _patch_header(src, 12, "<i4", mode)
    with pytest.raises(InputError, match=rf"m\.mrc: {message}"):
        read_map(src)


def test_2d_and_stacks(tmp_path):
    img = _write_raw(tmp_path / "img.mrc", _canonical((8, 9)))
    with pytest.raises(InputError, match=r"img\.mrc: is a 2D image"):
        read_map(img)
    flat = _write_raw(tmp_path / "flat.mrc", _canonical((5, 1, 6)))
    with pytest.raises(InputError, match=r"flat\.mrc: is a 2D image .*a 3D map is needed"):
        read_map(flat)
    stack = tmp_path / "stack.mrcs"
    with mrcfile.new(stack) as mrc:
        mrc.set_data(_canonical((4, 8, 8)))
        mrc.set_image_stack()
    with pytest.raises(InputError, match=r"stack\.mrcs: is a stack of 4 2D images"):
        read_map(stack)
    vstack = tmp_path / "vstack.mrc"
    with mrcfile.new(vstack) as mrc:
        mrc.set_data(_canonical((2, 4, 5, 6)))
    with pytest.raises(InputError, match=r"vstack\.mrc: is a stack of 2 volumes"):
        read_map(vstack)


def test_bad_values(tmp_path):
    a = _canonical()
    a[0, 0, :2] = np.nan
    a[1, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"nan\.mrc: contains 3 NaN/Inf voxels"):
        read_map(_write_raw(tmp_path / "nan.mrc", a))
    with pytest.raises(InputError, match=r"zero\.mrc: is empty \(all voxels 0\)"):
        read_map(_write_raw(tmp_path / "zero.mrc", np.zeros((4, 5, 6), np.float32)))
    with pytest.raises(InputError, match=r"const\.mrc: is constant"):
        read_map(_write_raw(tmp_path / "const.mrc", np.full((4, 5, 6), 2.5, np.float32)))


@pytest.mark.parametrize("vs", [(0.0, 1.0, 1.0), (1.0, -1.0, 1.0)])
def test_bad_voxel_size(tmp_path, vs):
    src = _write_raw(tmp_path / "vs.mrc", _canonical(), voxel_size=vs)
    with pytest.raises(InputError, match=r"vs\.mrc: has a zero or negative voxel size"):
        read_map(src)


def test_bad_axis_order(tmp_path):
    src = _write_raw(tmp_path / "ax.mrc", _canonical(), axis_order=(1, 1, 3))
    with pytest.raises(InputError, match=r"ax\.mrc: has an invalid axis order"):
        read_map(src)


def test_extra_bytes_warn(tmp_path, caplog):
    src = _write_raw(tmp_path / "long.mrc", _canonical())
    with open(src, "ab") as f:
        f.write(b"\0" * 16)
    with caplog.at_level(logging.WARNING, logger="deepemhancer_engine.io"):
        data, _ = read_map(src)
    assert "16 bytes larger" in caplog.text
    np.testing.assert_array_equal(data, _canonical())


def test_truncated_file(tmp_path):
    src = _write_raw(tmp_path / "trunc.mrc", _canonical((10, 10, 10)))
    os.truncate(src, os.path.getsize(src) - 100)
    with pytest.raises(InputError, match=r"trunc\.mrc: is truncated"):
        read_map(src)


def test_huge_header_rejected_before_allocation(tmp_path):
    src = _write_raw(tmp_path / "huge.mrc", _canonical())
    _patch_header(src, 0, "<i4", [100000, 100000, 100000])
    _patch_header(src, 28, "<i4", [100000, 100000, 100000])
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"huge\.mrc: is truncated: header declares 100000 x 100000"):
        read_map(src)
    assert time.perf_counter() - start < 2.0


def test_truncated_gz(tmp_path):
    src = _write_raw(tmp_path / "t.mrc.gz", _canonical((20, 20, 20)), compression="gzip")
    os.truncate(src, os.path.getsize(src) // 2)  # broken gzip stream
    with pytest.raises(InputError, match=r"t\.mrc\.gz: cannot read map"):
        read_map(src)
    short = tmp_path / "s.mrc.gz"  # valid gzip stream, too little data for the header
    short.write_bytes(gzip.compress(gzip.decompress(
        (_write_raw(tmp_path / "full.mrc.gz", _canonical((20, 20, 20)), compression="gzip")).read_bytes()
    )[:20000]))
    with pytest.raises(InputError, match=r"s\.mrc\.gz: is truncated"):
        read_map(short)


# --- writing --------------------------------------------------------------------------------------

def _grid(shape=(6, 7, 8)):
    return GridInfo(shape=shape, voxel_size=(1.0, 1.0, 1.0))


def _tmp_left(directory):
    return [p.name for p in directory.iterdir() if ".deepemhancer-tmp" in p.name]


def test_write_refuses_existing_unless_overwrite(tmp_path):
    out = tmp_path / "out.mrc"
    write_map(out, _canonical(), _grid())
    with pytest.raises(InputError, match=r"out\.mrc exists; use --force to overwrite"):
        write_map(out, _canonical(seed=1), _grid())
    write_map(out, _canonical(seed=1), _grid(), overwrite=True)
    np.testing.assert_array_equal(read_map(out)[0], _canonical(seed=1))
    assert _geometry(out)["mode"] == 2
    assert not _tmp_left(tmp_path)


def test_write_to_directory_or_missing_parent(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        write_map(tmp_path, _canonical(), _grid(), overwrite=True)
    with pytest.raises(InputError, match=r"out\.mrc: output directory .* does not exist"):
        write_map(tmp_path / "no" / "out.mrc", _canonical(), _grid())


def test_write_failure_removes_temp_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("deepemhancer_engine.io._fill_header", boom)
    with pytest.raises(RuntimeError):
        write_map(tmp_path / "out.mrc", _canonical(), _grid())
    assert not _tmp_left(tmp_path) and not (tmp_path / "out.mrc").exists()


def test_write_file_size_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(InputError, match=r"big\.mrc: cannot write"):
            write_map(tmp_path / "big.mrc", _canonical((20, 20, 20)), _grid((20, 20, 20)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not _tmp_left(tmp_path) and not (tmp_path / "big.mrc").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_write_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match=r"out\.mrc: cannot write"):
            write_map(ro / "out.mrc", _canonical(), _grid())
    finally:
        ro.chmod(0o700)


# --- grid comparison ------------------------------------------------------------------------------

def test_check_same_grid():
    a = GridInfo((200, 200, 200), (1.0, 1.0, 1.0))
    check_same_grid(a, GridInfo((200, 200, 200), (1.00005, 1.0, 1.0), origin=(0.0005, 0, 0)), "h1", "h2")
    with pytest.raises(InputError, match=r"half map 2 shape \(200, 200, 198\) differs from half map 1 "
                                         r"shape \(200, 200, 200\)"):
        check_same_grid(a, GridInfo((200, 200, 198), (1.0, 1.0, 1.0)), "half map 1", "half map 2")
    with pytest.raises(InputError, match="mask voxel size"):
        check_same_grid(a, GridInfo((200, 200, 200), (1.01, 1.0, 1.0)), "map", "mask")
    with pytest.raises(InputError, match="mask origin"):
        check_same_grid(a, GridInfo((200, 200, 200), (1.0, 1.0, 1.0), nstart=(-1, 0, 0)), "map", "mask")
