"""Strict MRC/CCP4 map reading and atomic writing with exact header geometry.

Maps are returned as C-contiguous float32 arrays indexed ``[z, y, x]`` whatever the file's axis
order; :class:`GridInfo` carries what is needed to write a result with the same geometry. Every
problem with a user file is an :class:`~deepemhancer_engine.errors.InputError` whose one-line
message starts with the file path.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import logging
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import mrcfile
import numpy as np
import numpy.typing as npt

from .errors import DeviceError, InputError

try:
    import resource
except ImportError:  # not on Unix
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Triple = tuple[float, float, float]

#: MRC mode -> (numpy dtype, description); modes 3 and 4 (complex) are rejected explicitly.
_MODES = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}
_COMPLEX_MODES = {3: "complex int16", 4: "complex float32"}
_HEADER_BYTES = 1024
_TMP_SUFFIX = ".deepemhancer-tmp"
#: A compressed map may decompress to at most this much more than its header declares.
_MAX_EXTRA_BYTES = 1 << 26


def _read_umask() -> int:
    mask = os.umask(0o022)  # there is no read-only query; read once at import time
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@dataclass(frozen=True)
class GridInfo:
    """Geometry of a map as read from (and written back to) an MRC header.

    Attributes
    ----------
    shape : (nz, ny, nx) of the canonical ``[z, y, x]`` array.
    voxel_size : (x, y, z) in Å (cell / sampling).
    origin : (x, y, z) header ORIGIN in Å.
    nstart : (nxstart, nystart, nzstart) as stored (column, row, section starts).
    axis_order : (mapc, mapr, maps); (1, 2, 3) is standard.
    """

    shape: tuple[int, int, int]
    voxel_size: Triple
    origin: Triple = (0.0, 0.0, 0.0)
    nstart: tuple[int, int, int] = (0, 0, 0)
    axis_order: tuple[int, int, int] = (1, 2, 3)

    def __post_init__(self) -> None:
        if sorted(self.axis_order) != [1, 2, 3]:
            raise ValueError(f"axis order must be a permutation of (1, 2, 3), got {self.axis_order}")

    @property
    def effective_origin(self) -> Triple:
        """Physical position (x, y, z) Å of voxel [0, 0, 0]: ORIGIN if non-zero, else start × voxel size."""
        if any(o != 0.0 for o in self.origin):
            return self.origin
        # nstart is (column, row, section); map it to x, y, z through the axis order.
        start_xyz = [0, 0, 0]
        for crs_index, axis in enumerate(self.axis_order):
            start_xyz[axis - 1] = self.nstart[crs_index]
        return tuple(float(s) * v for s, v in zip(start_xyz, self.voxel_size))  # type: ignore[return-value]


def _fail(path: Path, problem: str) -> InputError:
    return InputError(f"{path}: {problem}")


def _file_perm(axis_order: tuple[int, int, int]) -> tuple[int, int, int]:
    """Transpose taking the canonical [z, y, x] array to the file's [section, row, column] array."""
    mapc, mapr, maps = axis_order
    return (3 - maps, 3 - mapr, 3 - mapc)


def _canonical_perm(axis_order: tuple[int, int, int]) -> tuple[int, int, int]:
    """Transpose taking the file's [section, row, column] array to canonical [z, y, x]."""
    file_perm = _file_perm(axis_order)
    return tuple(int(i) for i in np.argsort(file_perm))  # type: ignore[return-value]


@contextlib.contextmanager
def _mrcfile_errors(path: Path, what: str) -> Iterator[None]:
    """Turn mrcfile/OS errors into one-line InputErrors; log mrcfile warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except InputError:
            raise
        except FileNotFoundError:
            raise _fail(path, "no such file") from None
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise _fail(path, f"cannot read {what}: {getattr(err, 'strerror', None) or err}") from None
        except ValueError as err:
            text = str(err)
            if "Map ID string not found" in text:
                text = "not an MRC file (bad MAP identifier)"
            elif "Couldn't read enough bytes for MRC header" in text:
                text = "not an MRC file (shorter than the 1024-byte header)"
            elif "Unrecognised mode" in text:
                text = f"unsupported MRC mode ({text})"
            elif "Expected" in text and "bytes" in text:
                text = f"is truncated or its header is corrupt ({text})"
            raise _fail(path, text) from None
    for w in caught:
        log.warning("%s: %s", path, w.message)


def memory_limit() -> int:
    """Bytes of memory this process may use at most: RAM + swap, capped by cgroup, RLIMIT_AS and RLIMIT_DATA."""
    limits: list[int] = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        swap = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/meminfo") as meminfo:
                swap = next((int(ln.split()[1]) * 1024 for ln in meminfo if ln.startswith("SwapTotal:")), 0)
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + swap)
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):  # "max" (no limit) is a ValueError
            limits.append(int(Path(cgroup).read_text().strip()))
    if resource is not None:
        for name in ("RLIMIT_AS", "RLIMIT_DATA"):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                soft = resource.getrlimit(getattr(resource, name))[0]
                if soft != resource.RLIM_INFINITY:
                    limits.append(int(soft))
    limits = [n for n in limits if n > 0]
    return min(limits) if limits else sys.maxsize


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def _open_raw(path: Path, compressed: bool):
    if not compressed:
        return open(path, "rb")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else bz2.open(path, "rb")


def _count_bytes(stream, limit: int) -> int:
    """Bytes left in ``stream``, counted in chunks (no big allocation), stopping at ``limit``."""
    total = 0
    while total < limit:
        chunk = stream.read(min(1 << 20, limit - total))
        if not chunk:
            break
        total += len(chunk)
    return total


def _precheck_sizes(path: Path, compressed: bool) -> None:
    """Compare the sizes the raw header declares with the file before mrcfile reads anything.

    mrcfile allocates the extended header (and, for compressed files, the data block) at the size the
    header claims, so a corrupt or hostile header could exhaust memory before any check ran. Headers that
    mrcfile will reject anyway (bad MAP identifier or machine stamp, too short) are left to it.
    """
    with _open_raw(path, compressed) as stream:
        raw = stream.read(_HEADER_BYTES)
        if len(raw) < _HEADER_BYTES or raw[208:212] != b"MAP ":
            return
        order = {0x44: "<", 0x41: "<", 0x11: ">"}.get(raw[212])
        if order is None:
            return
        nx, ny, nz, mode = (int(v) for v in np.frombuffer(raw[:16], dtype=f"{order}i4"))
        nsymbt = int(np.frombuffer(raw[92:96], dtype=f"{order}i4")[0])
        if nsymbt < 0:
            raise _fail(path, f"header has a negative extended header size {nsymbt}")
        voxels = nx * ny * nz if min(nx, ny, nz) > 0 and mode in _MODES else 0
        need = nsymbt + voxels * (np.dtype(_MODES[mode]).itemsize if voxels else 0)
        too_big = voxels * 4 > memory_limit()
        counted_all = True
        if compressed:  # count the decompressed bytes, up to what could matter
            cap = min(need + _MAX_EXTRA_BYTES + 1, memory_limit()) if too_big else need + _MAX_EXTRA_BYTES + 1
            counted = _count_bytes(stream, cap)
            counted_all = counted < cap or not too_big
            size = _HEADER_BYTES + counted
        else:
            size = path.stat().st_size
    need += _HEADER_BYTES
    if size < need and counted_all:
        declared = f"{nx} x {ny} x {nz} voxels" if voxels else "an extended header"
        if voxels and nsymbt:
            declared += f" and {nsymbt} bytes of extended header"
        raise _fail(path, f"is truncated: header declares {declared} ({need} bytes) but the file has "
                          f"{'only ' if compressed else ''}{size} bytes{' uncompressed' if compressed else ''}")
    if compressed and size > need + _MAX_EXTRA_BYTES:
        raise _fail(path, f"decompresses to more than {need + _MAX_EXTRA_BYTES} bytes, far more than the "
                          f"{need} bytes its header declares (corrupt file or not a single map)")
    if too_big:
        raise DeviceError(
            f"{path}: the map has {nx} x {ny} x {nz} voxels ({_gib(voxels * 4)} as float32), more than the "
            f"{_gib(memory_limit())} of memory available"
        )


def _check_header(path: Path, header: np.recarray, compressed: bool) -> tuple[int, int, int]:
    """Validate mode, dimensions, stack flags and file size; return (nx, ny, nz) as stored."""
    mode = int(header.mode)
    if mode in _COMPLEX_MODES:
        kind = _COMPLEX_MODES[mode]
        raise _fail(path, f"contains complex data (MRC mode {mode}, {kind}); a real map is needed")
    if mode not in _MODES:
        raise _fail(path, f"unsupported MRC mode {mode} (supported: 0, 1, 2, 6, 12)")
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if min(nx, ny, nz) < 1:
        raise _fail(path, f"header has invalid dimensions {nx} x {ny} x {nz}")
    ispg, mz = int(header.ispg), int(header.mz)
    if 401 <= ispg <= 630 and mz > 0 and nz != mz:
        if nz % mz == 0:
            raise _fail(path, f"is a stack of {nz // mz} volumes; a single 3D map is needed")
        raise _fail(path, f"has an inconsistent volume stack header (ISPG {ispg}: NZ {nz} is not a multiple "
                          f"of MZ {mz})")
    if ispg == 0 and nz > 1 and mz == 1:
        raise _fail(path, f"is a stack of {nz} 2D images (ISPG 0, MZ 1); a 3D map is needed")
    if 1 in (nx, ny, nz):
        raise _fail(path, f"is a 2D image ({nx} x {ny} x {nz}); a 3D map is needed")
    if int(header.nsymbt) < 0:
        raise _fail(path, f"header has a negative extended header size {int(header.nsymbt)}")
    order = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(order) != [1, 2, 3]:
        raise _fail(path, f"has an invalid axis order MAPC/MAPR/MAPS = {order}")
    expected = _HEADER_BYTES + int(header.nsymbt) + nx * ny * nz * np.dtype(_MODES[mode]).itemsize
    if not compressed:
        actual = path.stat().st_size
        if actual < expected:
            raise _fail(
                path,
                f"is truncated: header declares {nx} x {ny} x {nz} voxels ({expected} bytes) "
                f"but the file has {actual} bytes",
            )
    return nx, ny, nz


def _voxel_size(path: Path, header: np.recarray) -> Triple:
    cell = (float(header.cella.x), float(header.cella.y), float(header.cella.z))
    sampling = (int(header.mx), int(header.my), int(header.mz))
    if min(sampling) <= 0:
        raise _fail(path, f"has invalid sampling MX/MY/MZ = {sampling} (cannot derive the voxel size)")
    vs = tuple(c / m for c, m in zip(cell, sampling))
    if not all(math.isfinite(v) and v > 0 for v in vs):
        raise _fail(path, f"has a zero or negative voxel size {tuple(round(v, 6) for v in vs)} Å")
    return vs  # type: ignore[return-value]


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(3)
    return magic[:2] == b"\x1f\x8b" or magic == b"BZh"


def _check_values(path: Path, data: npt.NDArray[np.float32]) -> None:
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise _fail(path, f"contains {n_bad} NaN/Inf voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise _fail(path, "is empty (all voxels 0)" if lo == 0 else f"is constant (all voxels {lo:g})")


def read_map(path: PathLike, *, what: str = "map") -> tuple[npt.NDArray[np.float32], GridInfo]:
    """Read a 3D MRC map strictly.

    Parameters
    ----------
    path : .mrc, .map or compressed (.gz, .bz2) MRC file.
    what : what the file is ("half map 1", "mask"), used in messages.

    Returns
    -------
    (Z, Y, X) float32 C-contiguous array and its :class:`GridInfo`.

    Raises
    ------
    InputError
        Missing/unreadable file, not MRC, unsupported mode, 2D image or stack, truncated file (checked
        before anything the header declares is allocated), bad voxel size, origin or axis order, NaN/Inf
        voxels, empty or constant map.
    DeviceError
        The map's voxels (as float32) need more memory than the process may use (:func:`memory_limit`).
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, f"is a directory, not a {what} file")
    with _mrcfile_errors(path, what):
        compressed = _is_compressed(path)
        _precheck_sizes(path, compressed)
        with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
            header = mrc.header.copy()
        _check_header(path, header, compressed)
        geometry = _header_geometry(path, header)
        data = _read_data(path, compressed, geometry["axis_order"])
    _check_values(path, data)
    grid = GridInfo(shape=tuple(int(n) for n in data.shape), **geometry)  # type: ignore[arg-type]
    log.debug(
        "read %s %s: shape (z, y, x) %s, voxel size %s Å, axis order %s",
        what, path, grid.shape, tuple(round(v, 4) for v in grid.voxel_size), grid.axis_order,
    )
    return data, grid


def _header_geometry(path: Path, header: np.recarray) -> dict:
    """``GridInfo`` fields other than the shape: voxel size, origin, start indices and axis order;
    InputError for a bad voxel size or a non-finite origin, a warning for non-orthogonal cells."""
    voxel_size = _voxel_size(path, header)
    origin = (float(header.origin.x), float(header.origin.y), float(header.origin.z))
    if not all(math.isfinite(o) for o in origin):
        raise _fail(path, f"has a non-finite origin {origin} Å")
    angles = (float(header.cellb.alpha), float(header.cellb.beta), float(header.cellb.gamma))
    if any(angles) and not all(abs(a - 90.0) < 1e-3 for a in angles):
        log.warning("%s: cell angles %s are not 90 degrees; the map is treated as orthogonal", path, angles)
    return {
        "voxel_size": voxel_size,
        "origin": origin,
        "nstart": (int(header.nxstart), int(header.nystart), int(header.nzstart)),
        "axis_order": (int(header.mapc), int(header.mapr), int(header.maps)),
    }


def _read_data(path: Path, compressed: bool, axis_order: tuple[int, int, int]) -> npt.NDArray[np.float32]:
    """The voxels as a C-contiguous float32 ``[z, y, x]`` copy (a compressed file is read whole, an
    uncompressed one through a memory map)."""
    opener = mrcfile.open if compressed else mrcfile.mmap
    with opener(path, mode="r", permissive=False) as mrc:
        raw = mrc.data
        if raw is not None and raw.ndim == 4 and raw.shape[0] == 1:
            raw = raw[0]  # a volume stack of one volume (ISPG 401-630, NZ == MZ)
        if raw is None or raw.ndim != 3:
            shape = getattr(raw, "shape", None)
            raise _fail(path, f"has unexpected data shape {shape}; a 3D map is needed")
        # always copy: the data are a read-only buffer or a memory map of the file
        data = np.array(raw.transpose(_canonical_perm(axis_order)), dtype=np.float32, order="C")
        del raw
    return data


def _fill_header(mrc: mrcfile.mrcfile.MrcFile, grid: GridInfo) -> None:
    header = mrc.header
    header.ispg = 1
    header.mapc, header.mapr, header.maps = grid.axis_order
    nz, ny, nx = grid.shape
    header.mx, header.my, header.mz = nx, ny, nz  # sampling along X, Y, Z
    header.cella.x = grid.voxel_size[0] * nx
    header.cella.y = grid.voxel_size[1] * ny
    header.cella.z = grid.voxel_size[2] * nz
    header.origin.x, header.origin.y, header.origin.z = grid.origin
    header.nxstart, header.nystart, header.nzstart = grid.nstart


def write_map(
    path: PathLike, array: npt.ArrayLike, grid: GridInfo, *, overwrite: bool = False, labels: Sequence[str] = ()
) -> Path:
    """Write ``array`` ([z, y, x]) as a float32 (mode 2) MRC file with the geometry of ``grid``.

    ``labels``: header text lines (at most 10 of 80 characters, ASCII), e.g. a summary other tools read back.

    The file is written to a hidden temporary file in the same directory and renamed into place,
    so a failed write never leaves a partial output. ``.gz`` outputs are gzip-compressed.

    Raises
    ------
    InputError
        Output exists and ``overwrite`` is false, or the file cannot be written (message names it).
    """
    path = Path(path)
    data = np.asarray(array, dtype=np.float32)
    if data.shape != tuple(grid.shape):
        raise ValueError(f"array shape {data.shape} does not match grid shape {tuple(grid.shape)}")
    if path.is_dir():
        raise _fail(path, "is a directory; give an output file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; use --force to overwrite")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise _fail(path, f"output directory {parent} does not exist")
    def write(tmp_name: str) -> None:
        compression = "gzip" if path.name.endswith(".gz") else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.new(tmp_name, overwrite=True, compression=compression)
            try:
                mrc.set_data(np.ascontiguousarray(data.transpose(_file_perm(grid.axis_order))))
                _fill_header(mrc, grid)
                for label in labels:
                    mrc.add_label(label[:80])
                mrc.close()  # writes; may raise OSError (disk full, file size limit)
            except BaseException:
                _abandon(mrc)
                raise

    try:
        atomic_write(path, write)
    except OSError as err:
        raise _fail(path, f"cannot write: {getattr(err, 'strerror', None) or err}") from None
    log.debug("wrote %s: shape (z, y, x) %s", path, grid.shape)
    return path


def atomic_write(path: PathLike, write: Callable[[str], object]) -> Path:
    """Write ``path`` all or nothing: ``write(tmp)`` fills a temporary file beside it, which then
    replaces ``path`` in one rename; on any error (or interrupt) the temporary file is removed and
    ``path`` is left as it was. The file gets the permissions of a newly created file (umask).

    The one write path for maps, weights, model cards, null responses, checkpoints and training
    shards: a killed run never leaves a half-written file under the final name.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _abandon(mrc: mrcfile.mrcfile.MrcFile) -> None:
    """Close the file handles of an MrcFile whose close() failed (mrcfile leaves them open)."""
    for attr in ("_iostream", "_fileobj"):
        stream = getattr(mrc, attr, None)
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()  # a failed flush still closes the OS file


def check_same_grid(a: GridInfo, b: GridInfo, name_a: str, name_b: str) -> None:
    """Raise InputError unless ``b`` has the shape, voxel size and origin of ``a``.

    Voxel sizes are compared with relative tolerance 1e-4, origins (Å) with absolute tolerance 1e-3.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"{name_b} shape {tuple(b.shape)} differs from {name_a} shape {tuple(a.shape)}")
    if not all(math.isclose(x, y, rel_tol=1e-4) for x, y in zip(a.voxel_size, b.voxel_size)):
        raise InputError(
            f"{name_b} voxel size {_fmt(b.voxel_size)} Å differs from "
            f"{name_a} voxel size {_fmt(a.voxel_size)} Å"
        )
    oa, ob = a.effective_origin, b.effective_origin
    if not all(abs(x - y) <= 1e-3 for x, y in zip(oa, ob)):
        raise InputError(f"{name_b} origin {_fmt(ob)} Å differs from {name_a} origin {_fmt(oa)} Å")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
