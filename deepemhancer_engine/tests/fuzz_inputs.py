"""Hostile-input generators and process runners for the reliability suite (``test_reliability.py``).

Three parts:

* map writers and raw header patching (:func:`write_map_file`, :func:`patch_header`), so a test can
  build any header quirk byte by byte;
* :func:`run_cli`: the real ``python -m deepemhancer_engine`` in a subprocess, optionally under
  resource limits, returning exit status, stderr and timing;
* seeded header mutations (:func:`make_mutants`) and a crash-isolating *fork runner*: run as a script
  (``python fuzz_inputs.py JOBS.json RESULTS.json``) it imports the engine once, then runs every job's
  ``cli.main(argv)`` in its own forked child with its own stderr file and a timeout, so a crash
  (signal), an uncaught exception (traceback) or a hang in one job is recorded, not hidden.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

#: Repository root (PYTHONPATH of the subprocesses).
ROOT = Path(__file__).resolve().parents[2]
#: Marker of the engine's temporary output files.
TMP_MARK = ".deepemhancer-tmp"
LE_HEADER = HEADER_DTYPE.newbyteorder("<")


# --- maps ------------------------------------------------------------------------------------------


def blob_map(shape: Sequence[int], seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """Gaussian blobs plus noise: a small protein-like float32 map of ``shape``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    vol = np.zeros(shape, np.float32)
    centre = np.array(shape) / 2
    for _ in range(8):
        c = centre + rng.normal(0, 0.1, len(shape)) * np.array(shape)
        vol += np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * 2.5**2))
    return (vol + rng.normal(0, noise, shape)).astype(np.float32)


def write_map_file(
    path: Path,
    data: np.ndarray,
    *,
    voxel_size: Sequence[float] | float = 1.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    nstart: Sequence[int] = (0, 0, 0),
    axis_order: Sequence[int] = (1, 2, 3),
    compression: str | None = None,
) -> Path:
    """Write ``data`` as stored (sections, rows, columns) with explicit header geometry."""
    vs = (float(voxel_size),) * 3 if np.ndim(voxel_size) == 0 else tuple(float(v) for v in voxel_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf data on purpose
        with mrcfile.new(path, overwrite=True, compression=compression) as mrc:
            mrc.set_data(data)
            h = mrc.header
            h.mapc, h.mapr, h.maps = axis_order
            h.cella.x, h.cella.y, h.cella.z = (v * int(m) for v, m in zip(vs, (h.mx, h.my, h.mz)))
            h.origin.x, h.origin.y, h.origin.z = origin
            h.nxstart, h.nystart, h.nzstart = nstart
    return Path(path)


def read_header(path: Path) -> np.recarray:
    """The first 1024 bytes of a (little-endian, uncompressed) MRC file as a writable header record."""
    raw = Path(path).read_bytes()[:1024]
    return np.frombuffer(bytearray(raw), dtype=LE_HEADER).view(np.recarray)[0:1]


def write_header(path: Path, header: np.recarray) -> None:
    with open(path, "r+b") as f:
        f.write(header.tobytes())


def patch_header(path: Path, **fields: object) -> Path:
    """Set raw header fields, e.g. ``patch_header(p, mode=3, cella=(0, 10, 10), nx=10**6)``."""
    header = read_header(path)
    for name, value in fields.items():
        if name in ("cella", "cellb", "origin"):
            for axis, v in zip(header[name].dtype.names, value):  # type: ignore[arg-type]
                header[name][axis] = v
        else:
            header[name] = value
    write_header(path, header)
    return Path(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(directory: Path) -> dict[str, str]:
    """Name -> SHA-256 of every file directly in ``directory`` (inputs-unchanged checks).

    Files over 64 MiB (sparse test files) are summarised by size, modification time and their first MiB.
    """
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if p.is_file():
            st = p.stat()
            if st.st_size > 1 << 26:
                with open(p, "rb") as f:
                    head = hashlib.sha256(f.read(1 << 20)).hexdigest()
                out[p.name] = f"{st.st_size}:{st.st_mtime_ns}:{head}"
            else:
                out[p.name] = sha256(p)
    return out


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if TMP_MARK in p.name)


def geometry(path: Path) -> dict[str, object]:
    """Header geometry as a dict: dims (nx, ny, nz), voxel size (x, y, z), origin, nstart, axis order.

    Read permissively with mrcfile (not with the engine under test), voxel size = cell / sampling.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, permissive=True, header_only=True) as mrc:
            h = mrc.header
            dims = (int(h.nx), int(h.ny), int(h.nz))
            sampling = (int(h.mx), int(h.my), int(h.mz))
            cell = (float(h.cella.x), float(h.cella.y), float(h.cella.z))
            return {
                "dims": dims,
                "voxel_size": tuple(c / m if m else math.nan for c, m in zip(cell, sampling)),
                "origin": (float(h.origin.x), float(h.origin.y), float(h.origin.z)),
                "nstart": (int(h.nxstart), int(h.nystart), int(h.nzstart)),
                "axis_order": (int(h.mapc), int(h.mapr), int(h.maps)),
            }


def same_geometry(a: dict, b: dict) -> list[str]:
    """Differences between two :func:`geometry` dicts (empty when equal)."""
    problems = []
    for key in ("dims", "nstart", "axis_order"):
        if tuple(a[key]) != tuple(b[key]):
            problems.append(f"{key} {a[key]} != {b[key]}")
    if not all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a["voxel_size"], b["voxel_size"])):
        problems.append(f"voxel_size {a['voxel_size']} != {b['voxel_size']}")
    if tuple(a["origin"]) != tuple(b["origin"]):  # copied bit for bit (float32 in both headers)
        problems.append(f"origin {a['origin']} != {b['origin']}")
    return problems


def data_of(path: Path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as mrc:
        return np.array(mrc.data)


# --- running the real CLI --------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")  # the suite runs several CLIs at once on few cores
    env.update(extra)
    return env


def cli_command(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "deepemhancer_engine", *map(str, argv)]


def limiter(limits: dict[int, int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` setting soft resource limits ({resource.RLIMIT_*: bytes}) and default SIGINT."""
    import signal

    def apply() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its KeyboardInterrupt handler
        for what, value in (limits or {}).items():
            _, hard = resource.getrlimit(what)
            resource.setrlimit(what, (value, hard))

    return apply


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_cli(
    argv: Sequence[str],
    *,
    timeout: float = 120,
    limits: dict[int, int] | None = None,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Result:
    """Run the real CLI (or ``command``) to completion; a timeout is a failure (raises)."""
    cmd = command or cli_command(argv)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=timeout,
                          preexec_fn=limiter(limits), cwd=cwd)
    return Result(list(map(str, argv)), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def is_log_line(line: str) -> bool:
    """A timestamped log line of the CLI (``HH:MM:SS message``), as opposed to the final error line."""
    return len(line) > 9 and line[2] == ":" and line[5] == ":" and line[:8].replace(":", "").isdigit()


def error_lines(result: Result) -> list[str]:
    """The stderr lines that are not timestamped log lines (for a failed run: just the error line)."""
    return [ln for ln in result.lines if not is_log_line(ln)]


#: The CLI's line for a failed allocation (commands._run._OUT_OF_MEMORY).
OUT_OF_MEMORY = "error: out of memory; use a smaller map, fewer cubes per call (-b) or a bigger machine"


def clean_error(result: Result) -> list[str]:
    """Problems with a failed run's stderr: must end in exactly one ``error: ...`` line, no traceback."""
    problems = []
    if "Traceback" in result.stderr:
        problems.append("traceback printed")
    errors = [ln for ln in result.lines if ln.startswith("error: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} 'error:' lines")
    elif result.lines[-1] != errors[0]:
        problems.append("the error line is not the last line")
    return problems


# --- header mutations ------------------------------------------------------------------------------

_AXES = ("x", "y", "z")
_DIMS = ("nx", "ny", "nz")
_SAMPLING = ("mx", "my", "mz")
_I32 = (-(2**31), 2**31 - 1)


def _pick(rng: np.random.Generator, values: Sequence[object]) -> object:
    return values[int(rng.integers(len(values)))]


def _m_dim(rng, h):
    f = str(_pick(rng, _DIMS))
    n = int(h[f][0])
    v = int(_pick(rng, [0, -1, 1, 2, n - 1, n + 1, 2 * n, 65536, 10**6, _I32[1], _I32[0],
                        int(rng.integers(*_I32))]))
    h[f] = v
    return f"{f}={v}"


def _m_dims_permute(rng, h):
    perm = [int(i) for i in rng.permutation(3)]
    dims = [int(h[f][0]) for f in _DIMS]
    for f, i in zip(_DIMS, perm):
        h[f] = dims[i]
    return f"dims={[dims[i] for i in perm]}"


def _m_dims_huge(rng, h):
    n = int(_pick(rng, [2000, 10000, 65535, 2**20]))
    for f in _DIMS:
        h[f] = n
    for f in _SAMPLING:
        h[f] = n
    return f"dims={n}^3"


def _m_mode(rng, h):
    v = int(_pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 12, 16, 101, -1, _I32[1]]))
    h["mode"] = v
    return f"mode={v}"


def _m_nstart(rng, h):
    f = str(_pick(rng, ("nxstart", "nystart", "nzstart")))
    v = int(_pick(rng, [-1, 1, -50, 10**6, _I32[0], _I32[1], int(rng.integers(-1000, 1000))]))
    h[f] = v
    return f"{f}={v}"


def _m_sampling(rng, h):
    f = str(_pick(rng, _SAMPLING))
    n = int(h[f][0])
    v = int(_pick(rng, [0, -1, 1, n // 2, 2 * n, 10**6, _I32[0], int(rng.integers(1, 200))]))
    h[f] = v
    return f"{f}={v}"


def _m_cella(rng, h):
    axis = str(_pick(rng, _AXES))
    n = float(h["cella"][axis][0])
    v = float(_pick(rng, [0.0, -5.0, math.nan, math.inf, -math.inf, 1e-30, 1e-3, 3.0, 1e30, 3e38,
                          0.6 * n, 1.7 * n, float(rng.uniform(0.5, 2.5)) * n]))
    h["cella"][axis] = v
    return f"cella.{axis}={v:g}"


def _m_cellb(rng, h):
    axis = str(_pick(rng, ("alpha", "beta", "gamma")))
    v = float(_pick(rng, [0.0, 60.0, 120.0, 180.0, -90.0, math.nan]))
    h["cellb"][axis] = v
    return f"cellb.{axis}={v:g}"


def _m_axis_order(rng, h):
    if rng.random() < 0.6:
        order = [int(i) + 1 for i in rng.permutation(3)]
    else:
        order = [int(_pick(rng, [0, 1, 2, 3, 4, -1, 99])) for _ in range(3)]
    h["mapc"], h["mapr"], h["maps"] = order
    return f"axis_order={order}"


def _m_stats(rng, h):
    f = str(_pick(rng, ("dmin", "dmax", "dmean", "rms")))
    v = float(_pick(rng, [math.nan, math.inf, -1e30, 0.0, float(rng.normal())]))
    h[f] = v
    return f"{f}={v:g}"


def _m_ispg(rng, h):
    v = int(_pick(rng, [0, 1, 2, 230, 401, 630, 631, -1, 10**6]))
    h["ispg"] = v
    return f"ispg={v}"


def _m_nsymbt(rng, h):
    v = int(_pick(rng, [-1, 4, 80, 1024, 2**20, _I32[1], _I32[0]]))
    h["nsymbt"] = v
    return f"nsymbt={v}"


def _m_origin(rng, h):
    axis = str(_pick(rng, _AXES))
    v = float(_pick(rng, [math.nan, math.inf, -1e38, 1e-40, -123.5, float(rng.normal(0, 500))]))
    h["origin"][axis] = v
    return f"origin.{axis}={v:g}"


def _m_map_id(rng, h):
    v = bytes(_pick(rng, [b"MAP\0", b"map ", b"PAM ", b"\0\0\0\0", bytes(rng.integers(0, 256, 4, np.uint8))]))
    h["map"] = v
    return f"map={v!r}"


def _m_machst(rng, h):
    v = bytes(_pick(rng, [b"\x11\x11\0\0", b"\x44\x41\0\0", b"\0\0\0\0", b"\xff\xff\xff\xff",
                          bytes(rng.integers(0, 256, 4, np.uint8))]))
    h["machst"] = np.frombuffer(v, np.uint8)
    return f"machst={v!r}"


def _m_labels(rng, h):
    v = int(_pick(rng, [-1, 0, 10, 11, 1000]))
    h["nlabl"] = v
    h["label"][0][int(rng.integers(10))] = bytes(rng.integers(0, 256, 80, np.uint8))
    return f"nlabl={v}+random label"


def _m_ext(rng, h):
    exttyp = bytes(_pick(rng, [b"CCP4", b"MRCO", b"SERI", b"FEI1", b"FEI2", b"HDF5", b"\xff\0\xff\0"]))
    nversion = int(_pick(rng, [0, 20140, 20141, -1, 99999]))
    h["exttyp"] = exttyp
    h["nversion"] = nversion
    return f"exttyp={exttyp!r},nversion={nversion}"


def _m_byteflip(rng, h):
    raw = bytearray(h.tobytes())
    pos = int(rng.integers(0, 224))
    raw[pos] ^= int(rng.integers(1, 256))
    h[:] = np.frombuffer(bytes(raw), dtype=LE_HEADER)
    return f"byte[{pos}] flipped"


MUTATORS: dict[str, Callable[[np.random.Generator, np.recarray], str]] = {
    "dim": _m_dim, "dims_permute": _m_dims_permute, "dims_huge": _m_dims_huge, "mode": _m_mode,
    "nstart": _m_nstart, "sampling": _m_sampling, "cella": _m_cella, "cellb": _m_cellb,
    "axis_order": _m_axis_order, "stats": _m_stats, "ispg": _m_ispg, "nsymbt": _m_nsymbt,
    "origin": _m_origin, "map_id": _m_map_id, "machst": _m_machst, "labels": _m_labels, "ext": _m_ext,
    "byteflip": _m_byteflip,
}


def mutate(header: np.recarray, rng: np.random.Generator) -> list[str]:
    """Apply one to three random mutators to ``header`` in place; return what was done."""
    names = list(MUTATORS)
    k = int(_pick(rng, [1, 1, 1, 2, 2, 3]))
    chosen = [names[int(i)] for i in rng.choice(len(names), size=k, replace=False)]
    return [MUTATORS[name](rng, header) for name in chosen]


def make_mutants(base: Path, directory: Path, n: int = 100, seed: int = 20240601) -> list[tuple[Path, str]]:
    """``n`` seeded header mutants of ``base`` in ``directory``; returns (path, description) pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    body = Path(base).read_bytes()
    mutants = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        header = read_header(base).copy()
        with np.errstate(all="ignore"):
            what = mutate(header, rng)
        path = directory / f"mut{i:03d}.mrc"
        path.write_bytes(header.tobytes() + body[1024:])
        mutants.append((path, "; ".join(what)))
    return mutants


# --- fork runner -----------------------------------------------------------------------------------


def _child(argv: list[str], stderr_path: str, limits: dict[int, int]) -> None:
    """In a forked child: run ``cli.main(argv)`` with stderr to a file and exit with its code."""
    code = 1
    try:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.close(fd)
        for what, value in limits.items():
            resource.setrlimit(what, (value, resource.getrlimit(what)[1]))
        from deepemhancer_engine.cli import main

        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what an uncaught exception does in a real process
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(int(code) & 0xFF)


def fork_run(jobs: Iterable[dict], *, timeout: float, parallel: int = 2) -> list[dict]:
    """Run jobs ``{"name", "argv", "stderr", "limits"?}`` in forked children; return their outcomes.

    Outcome: ``{"name", "status": "exit"|"signal"|"timeout", "code", "seconds"}``.
    """
    pending = list(jobs)
    running: dict[int, tuple[dict, float]] = {}
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            limits = {int(k): int(v) for k, v in job.get("limits", {}).items()}
            pid = os.fork()
            if pid == 0:
                _child(job["argv"], job["stderr"], limits)
            running[pid] = (job, time.perf_counter())
        time.sleep(0.01)
        for pid, (job, t0) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.perf_counter() - t0
            if done == 0:
                if elapsed > timeout:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    results[job["name"]] = {"name": job["name"], "status": "timeout", "code": None,
                                            "seconds": elapsed}
                    del running[pid]
                continue
            del running[pid]
            if os.WIFSIGNALED(status):
                outcome = {"status": "signal", "code": os.WTERMSIG(status)}
            else:
                outcome = {"status": "exit", "code": os.WEXITSTATUS(status)}
            results[job["name"]] = {"name": job["name"], "seconds": elapsed, **outcome}
    return [results[name] for name in sorted(results)]


def run_forked(
    jobs: Sequence[tuple[str, Sequence[object], dict[int, int]]],
    workdir: Path,
    *,
    timeout: float = 60,
    parallel: int = 2,
) -> dict[str, tuple[dict, Result]]:
    """Run ``(name, argv, limits)`` jobs through the fork runner (one interpreter, one fork per job).

    Returns name -> (outcome, Result); a killed or hung job has ``outcome["status"]`` "signal"/"timeout".
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec = [{"name": name, "argv": [str(a) for a in argv], "stderr": str(workdir / f"{name}.stderr"),
             "limits": {str(k): int(v) for k, v in limits.items()}} for name, argv, limits in jobs]
    (workdir / "jobs.json").write_text(json.dumps(spec))
    driver = subprocess.run(
        [sys.executable, __file__, str(workdir / "jobs.json"), str(workdir / "results.json"), str(timeout),
         str(parallel)],
        env=cli_env(), capture_output=True, text=True, timeout=timeout * len(spec) + 120,
    )
    if driver.returncode != 0:
        raise RuntimeError(f"fork runner failed: {driver.stderr}")
    results = {}
    for outcome in json.loads((workdir / "results.json").read_text()):
        name = outcome["name"]
        stderr = (workdir / f"{name}.stderr").read_text(errors="replace")
        code = outcome["code"] if outcome["status"] == "exit" else -1
        argv = next(list(map(str, a)) for n, a, _ in jobs if n == name)
        results[name] = (outcome, Result(argv, code, "", stderr, outcome["seconds"]))
    return results


def _driver(jobs_file: str, results_file: str, timeout: float, parallel: int) -> int:
    # import everything the jobs need once, before forking (the network itself is never run here)
    import importlib

    for module in ("scipy.fft", "scipy.ndimage", "torch", *(f"deepemhancer_engine.{m}" for m in (
            "cli", "commands.enhance", "inference", "io", "model", "normalize", "pipeline", "postprocess",
            "resample", "tiling", "weights"))):
        importlib.import_module(module)

    jobs = json.loads(Path(jobs_file).read_text())
    results = fork_run(jobs, timeout=timeout, parallel=parallel)
    Path(results_file).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
