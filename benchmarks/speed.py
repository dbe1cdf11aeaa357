"""Speed benchmark: the whole ``deepemhancer`` CLI run, per stage, on synthetic maps of growing size.

For each synthetic map (128^3, 192^3, 256^3, 384^3 at 1 A/voxel, and one map at 0.83 A/voxel that is
resampled to 1 A) the CLI runs in a fresh subprocess per configuration:

- ``default``: the CLI defaults (Gaussian blending at the default stride, automatic precision);
- ``legacy``: ``--blend constant --stride 16`` (the original DeepEMhancer's cube count and averaging);
- ``halves`` and ``confidence`` (``--confidence-sizes``): the map and a second half map (same molecule, other
  noise) with ``-i2``, without and with ``--confidence`` (its cost: the ratio of the two walls);
- optionally ``default-fp32`` (mixed precision off, to show what bf16/fp16 costs in accuracy) and a
  stride sweep (``--stride S`` with Gaussian blending) on one size, to choose the default stride.

Each run records the wall time of the whole process (interpreter start, imports, model load
included), the seconds per stage (read, resample, normalise, network, blend, write), the number of
cubes (and how many a mask around the molecule would let the engine skip), the peak resident memory
(``VmHWM`` of the process and ``ru_maxrss``) and, on a GPU, the peak GPU memory. Outputs of
``default`` and ``legacy`` are compared by their correlation (CC) inside the molecule's mask and over
the whole box. Results go to ``speed.jsonl`` (one line per run, written as it finishes) and
``speed.md`` (rewritten after every run) with a plot ``speed.png``.

Map generation and comparison also run in subprocesses, so the parent stays small and cannot
inflate the children's memory figures.

    # full benchmark (about 1.5-2 h on 2 quiet cores; the stride-16 runs dominate)
    python benchmarks/speed.py --out benchmarks/results/speed.md
    # quick check (a few minutes)
    python benchmarks/speed.py --quick
    python benchmarks/speed.py --sizes 128 192 --no-resampled --weights path/to/tightTarget.pt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEGACY_ARGS = ["--blend", "constant", "--stride", "16"]
SHIPPED_WEIGHTS = ROOT / "deepemhancer_engine" / "weights" / "tightTarget.pt"
STAGES = ("read", "resample", "normalise", "network", "blend", "write")


# ================================================================================================
# children (each runs in its own process)
# ================================================================================================


def make_map(path: str, size: int, voxel: float, seed: int, noise_seed: int | None = None) -> dict:
    """Write a synthetic molecule (blobs at ~3.5 A in an ellipsoid, plus noise) and its mask; ``noise_seed``
    draws the noise from its own generator (the second half map of the ``confidence`` rows: same molecule)."""
    import mrcfile
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    box = size * voxel  # A
    semi = np.array([0.30, 0.26, 0.22]) * box  # ellipsoid semi-axes (A)
    n_atoms = int(0.01 * 4 / 3 * math.pi * semi.prod())  # ~1 blob per 100 A^3
    pts = rng.uniform(-1, 1, size=(n_atoms * 2, 3))
    pts = pts[(pts**2).sum(1) <= 1][:n_atoms] * semi + box / 2  # (z, y, x) in A
    idx = np.clip((pts / voxel).astype(int), 0, size - 1)
    vol = np.zeros((size,) * 3, np.float32)
    np.add.at(vol, tuple(idx.T), 1.0)
    vol = ndimage.gaussian_filter(vol, sigma=1.2 / voxel, output=np.float32)
    vol /= vol.max()
    zz, yy, xx = np.ogrid[:size, :size, :size]
    c = (size - 1) / 2
    r = np.sqrt(((zz - c) * voxel / (semi[0] + 6)) ** 2 + ((yy - c) * voxel / (semi[1] + 6)) ** 2
                + ((xx - c) * voxel / (semi[2] + 6)) ** 2)
    mask = np.clip((1.0 - r) * (semi.min() + 6) / (4.0 * voxel), 0, 1).astype(np.float32)
    del r
    noise_rng = rng if noise_seed is None else np.random.default_rng(noise_seed)
    vol += noise_rng.normal(scale=0.05, size=vol.shape).astype(np.float32)
    for p, data in ((path, vol), (path.replace(".mrc", "_mask.mrc"), mask)):
        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(data)
            m.voxel_size = voxel
    return {"skippable": _skippable_cubes(mask, voxel)}


def _skippable_cubes(mask, voxel: float) -> dict:
    """Cubes a mask lets the engine skip, at the default stride (on the 1 A working grid)."""
    import numpy as np

    from deepemhancer_engine.config import TilingConfig
    from deepemhancer_engine.inference import cube_alignment
    from deepemhancer_engine.model import SIZE_MULTIPLE
    from deepemhancer_engine.resample import to_working_grid
    from deepemhancer_engine.tiling import TileGrid, pad_to_tile, split_by_mask

    tiling = TilingConfig()  # the default cubes, as inference.predict_volume lays them out
    align = cube_alignment(tiling, SIZE_MULTIPLE)
    work, _ = to_working_grid(mask, (voxel,) * 3, target=1.0)
    work = pad_to_tile(np.clip(work, 0, 1), tiling.tile, align=align)[0]
    grid = TileGrid.from_shape(work.shape, tiling.tile, tiling.stride, align, tiling.cube_lattice)
    needed, skipped = split_by_mask(grid, work)
    return {"total": grid.n_tiles, "skipped": len(skipped)}


def run_child(spec: dict) -> dict:
    """Run ``cli.main(argv)`` with stage timers around the pipeline's functions; return the figures."""
    import resource

    t_start = time.perf_counter()
    from deepemhancer_engine import cli, pipeline, runner

    timings: dict[str, float] = {}
    loaded: list = []
    _instrument(pipeline, runner, timings, loaded, spec.get("amp"))
    t_import = time.perf_counter() - t_start
    rc = cli.main(spec["argv"])
    result = {"rc": rc, "import_s": t_import, "in_process_s": time.perf_counter() - t_start}
    pred = loaded[0].runner if loaded else None
    ptimes = dict(getattr(loaded[0] if loaded else None, "timings", {}) or {})
    timings["network"] = ptimes.get("network", timings.get("network", float("nan")))
    timings["blend"] = ptimes.get("blend", 0.0)
    result.update(stages=timings, cubes=ptimes.get("cubes"), skipped=ptimes.get("skipped"),
                  batch=getattr(pred, "batch_size", None), amp=str(getattr(pred, "amp_dtype", None)),
                  channels_last=getattr(pred, "channels_last", None))
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["vmhwm_mb"] = _vmhwm_mb()
    import torch

    result["threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    return result


def _instrument(pipeline, runner, timings: dict, loaded: list, amp) -> None:
    """Wrap read/write/enhance/load of ``pipeline`` so their seconds land in ``timings``."""

    def timed(name, func):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    for attr, stage in (("read_inputs", "read"), ("write_map", "write")):
        if hasattr(pipeline, attr):
            setattr(pipeline, attr, timed(stage, getattr(pipeline, attr)))
    enhance = pipeline.enhance

    def enhance_timed(*args, **kwargs):
        stage_times: dict[str, float] = {}
        kwargs["timings"] = stage_times
        out = enhance(*args, **kwargs)
        timings["resample"] = stage_times.get("resample", 0.0) + stage_times.get("resample_back", 0.0)
        timings["normalise"] = stage_times.get("normalise", 0.0)
        timings["network+blend"] = stage_times.get("network", float("nan"))
        return out

    pipeline.enhance = enhance_timed
    load = timed("load", pipeline.load)

    def load_kept(*args, **kwargs):
        model = load(*args, **kwargs)
        loaded.append(model)
        return model

    pipeline.load = load_kept
    if amp is not None:  # force a precision (benchmark only): e.g. "off" for the fp32 reference
        base = runner.NetworkRunner

        class Forced(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                kwargs["amp"] = amp
                super().__init__(*args, **kwargs)

        runner.NetworkRunner = Forced


def _vmhwm_mb() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def compare(a: str, b: str, mask: str) -> dict:
    """CC between two maps inside ``mask > 0.5`` and over the whole box, and the relative max difference."""
    import mrcfile
    import numpy as np

    def read(p):
        with mrcfile.open(p, permissive=True) as m:
            return np.asarray(m.data, dtype=np.float32)

    x, y, m = read(a), read(b), read(mask) > 0.5

    def cc(u, v):
        u = u.astype(np.float64) - u.mean()
        v = v.astype(np.float64) - v.mean()
        return float((u * v).sum() / math.sqrt((u * u).sum() * (v * v).sum()))

    return {"cc_mask": cc(x[m], y[m]), "cc_all": cc(x.ravel(), y.ravel()),
            "max_rel_diff": float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))}


def _child_main(mode: str, payload: str) -> int:
    args = json.loads(payload)
    sys.path.insert(0, str(ROOT))
    if mode == "--make-map":
        out = make_map(**args)
    elif mode == "--run":
        out = run_child(args)
    else:
        out = compare(**args)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ================================================================================================
# parent: plan, run, record, report
# ================================================================================================


def child(mode: str, payload: dict, log_path: Path, timeout: float | None = None) -> tuple[dict, float]:
    """Run this script in ``mode`` in a fresh process; return its RESULT and the wall seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(payload)],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see {log_path}")
    return json.loads(lines[-1][len("RESULT "):]), wall


def plan(args) -> list[dict]:
    """The maps to benchmark: ``{"name", "size", "voxel"}``."""
    maps = [{"name": f"{s}^3 @ 1 A", "size": s, "voxel": 1.0} for s in args.sizes]
    if args.resampled:
        s = args.resampled_size
        maps.append({"name": f"{s}^3 @ {args.resampled_voxel:g} A", "size": s, "voxel": args.resampled_voxel})
    return maps


def configs_for(m: dict, args) -> list[tuple[str, list[str], str | None]]:
    """(label, extra CLI args, forced amp) to run on map ``m``."""
    out: list[tuple[str, list[str], str | None]] = [("default", [], None)]
    if args.legacy_max is None or m["size"] <= args.legacy_max:
        out.append(("legacy", LEGACY_ARGS, None))
    if m["voxel"] == 1.0 and m["size"] in args.fp32_sizes:
        out.append(("default-fp32", [], "off"))
    if m["voxel"] == 1.0 and m["size"] == args.sweep_size:
        from deepemhancer_engine.config import DEFAULT_STRIDE  # light import (no torch)

        out += [(f"stride {s}", ["--stride", str(s)], None) for s in args.sweep if s != DEFAULT_STRIDE]
    if m["voxel"] == 1.0 and m["size"] in args.confidence_sizes:  # two half maps, without and with --confidence
        out += [("halves", ["-i2", "{half2}"], None), ("confidence", ["-i2", "{half2}", "--confidence", "{conf}"], None)]
    return out


def resolve_weights(args, work: Path) -> tuple[Path, str]:
    if args.weights:
        return Path(args.weights), f"`{args.weights}`"
    if SHIPPED_WEIGHTS.exists():
        return SHIPPED_WEIGHTS, f"shipped `{SHIPPED_WEIGHTS.relative_to(ROOT)}`"
    sys.path.insert(0, str(ROOT))
    from deepemhancer_engine.testing import make_random_weights

    pt = make_random_weights(work / "weights", "tightTarget", filters=(16, 32, 64))
    return pt, "RANDOM compact U-Net 16/32/64 (same cost as the trained one; CCs are not meaningful)"


def run_all(args) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="speedbench-"))
    work.mkdir(parents=True, exist_ok=True)
    out_md = Path(args.out) if args.out else work / "speed.md"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out_md.with_suffix(".jsonl")
    jsonl.write_text("")
    weights, weights_note = resolve_weights(args, work)
    meta = machine(args, weights_note)
    log_path = work / "children.log"
    rows: list[dict] = []
    print(f"work dir {work}; results {out_md}; child logs {log_path}", flush=True)
    for m in plan(args):
        path = str(work / f"map_{m['size']}_{m['voxel']:g}.mrc")
        made, secs = child("--make-map", {"path": path, "size": m["size"], "voxel": m["voxel"], "seed": 1}, log_path)
        print(f"[{m['name']}] map written in {secs:.0f} s", flush=True)
        outputs = {}
        for label, extra, amp in configs_for(m, args):
            outputs[label] = str(work / f"out_{m['size']}_{m['voxel']:g}_{label.replace(' ', '')}.mrc")
            if "{half2}" in extra:
                extra = _half_map_args(extra, path, m, work, log_path)
            argv = ["-i", path, "-o", outputs[label], "--weights", str(weights), "--device", args.device,
                    "--force", *extra, *(["-b", str(args.batch_size)] if args.batch_size else [])]
            res, wall = child("--run", {"argv": argv, "amp": amp}, log_path)
            if res.get("rc"):
                raise RuntimeError(f"deepemhancer exited with {res['rc']} for {label} on {m['name']}; see {log_path}")
            row = {"map": m["name"], "size": m["size"], "voxel": m["voxel"], "config": label, "args": extra,
                   "wall_s": wall, "voxels": m["size"] ** 3, "skippable": made["skippable"], **res}
            rows.append(row)
            add_comparisons(rows, m["name"], outputs, path, log_path)
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"[{m['name']}] {label:13s} {wall:7.1f} s, {row.get('cubes')} cubes, "
                  f"peak {row.get('vmhwm_mb') or 0:.0f} MB", flush=True)
            write_report(out_md, rows, meta)
        if not args.keep:
            for p in [*outputs.values(), path, path.replace(".mrc", "_mask.mrc"), path.replace(".mrc", "_half2.mrc"),
                      path.replace(".mrc", "_half2_mask.mrc"), str(work / f"conf_{m['size']}_{m['voxel']:g}.mrc")]:
                Path(p).unlink(missing_ok=True)
    meta["load_end"] = _load()
    write_report(out_md, rows, meta)
    print(f"done: {out_md}", flush=True)


def _half_map_args(extra: list[str], path: str, m: dict, work: Path, log_path: Path) -> list[str]:
    """``extra`` with ``{half2}`` (the same molecule, other noise; made once) and ``{conf}`` filled in."""
    half2 = path.replace(".mrc", "_half2.mrc")
    if not Path(half2).exists():
        child("--make-map", {"path": half2, "size": m["size"], "voxel": m["voxel"], "seed": 1, "noise_seed": 2},
              log_path)
    conf = str(work / f"conf_{m['size']}_{m['voxel']:g}.mrc")
    return [a.replace("{half2}", half2).replace("{conf}", conf) for a in extra]


def compare_child(a: str, b: str, map_path: str, log_path: Path) -> dict:
    res, _ = child("--compare", {"a": a, "b": b, "mask": map_path.replace(".mrc", "_mask.mrc")}, log_path)
    return res


def add_comparisons(rows: list[dict], name: str, outputs: dict, map_path: str, log_path: Path) -> None:
    """Give every run of map ``name`` its CC with the legacy output and (fp32 run) with the default."""
    for row in rows:
        if row["map"] != name:
            continue
        label = row["config"]
        if label != "legacy" and "legacy" in outputs and "cc_mask" not in row:
            row.update(compare_child(outputs[label], outputs["legacy"], map_path, log_path))
            print(f"[{name}] {label:13s} CC vs legacy inside the mask {row['cc_mask']:.4f}", flush=True)
        if label == "default-fp32" and "vs_fp32_cc_mask" not in row:
            res = compare_child(outputs["default"], outputs[label], map_path, log_path)
            row.update({"vs_fp32_" + k: v for k, v in res.items()})


def _load() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine(args, weights_note: str) -> dict:
    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    native = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    mem = "?"
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB"
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": cores, "mem": mem, "flags": ", ".join(native) or "none",
            "python": platform.python_version(), "load_start": _load(), "load_end": "(running)",
            "weights": weights_note, "device": args.device, "date": time.strftime("%Y-%m-%d %H:%M")}


# ---------------------------------------------------------------------------------------------- report

#: How the CPU defaults of inference.py were chosen (forward passes of the compact 16/32/64 U-Net on
#: 64^3 cubes, 2 threads). Measured on a loaded machine, so only the ratios mean something.
DEV_NOTES = [
    "## How the inference defaults were chosen", "",
    "Measured 2026-11-28 on this machine (Xeon with AVX512-BF16/AMX, 2 cores) while other jobs held the "
    "load average at ~8, so only ratios are meaningful. Compact U-Net, 64^3 cubes, `torch.inference_mode`:",
    "",
    "| setting | cubes/s (batch 2) | relative error vs fp32 |",
    "|---|---|---|",
    "| fp32, default layout | 0.35-0.46 | 0 |",
    "| fp32, channels-last-3d | 0.43-0.44 | 7e-5 |",
    "| bf16 autocast, default layout | 0.44-0.48 | 1.3e-2 |",
    "| **bf16 autocast, channels-last-3d** (default where the CPU has AVX512-BF16/AMX) | 0.71-0.82 | 1.3e-2 |",
    "| bf16 + channels-last + `torch.compile` | 0.58 (eager 1.00 in the same run) | - |",
    "",
    "- bf16 + channels-last makes the convolutions ~5x faster (oneDNN/AMX: 4.0 s -> 0.77 s per batch "
    "in the profiler); GroupNorm + PReLU (~1.1 s) then dominate. A hand-fused GroupNorm+PReLU was slower "
    "than the native kernels.",
    "- `torch.compile` took 173 s to compile on 2 cores and ran slower: not used.",
    "- Batch size (bf16, channels-last): 1: 0.5-0.7, 2: 1.05-1.09, 4: 1.37, 8: 1.34 cubes/s; peak RSS of the "
    "forward +100/+155/+250/+420 MB. CPU 'auto' batch = 8.",
    "- On CPUs without native bf16 (AVX2 only) the default stays fp32 (emulated bf16 is slower).",
    "- bf16 changes the output by ~1 % of its range: CC with the fp32 output 0.9999 (rows `default-fp32`).",
    "- GPU (not measured here): fp16 autocast, cuDNN autotune, batch from free memory (probe of 2 cubes, "
    "half the free memory, at most 64), pinned double-buffered copies, weights applied on the GPU.",
]


def write_report(path: Path, rows: list[dict], meta: dict) -> None:
    """Rewrite the Markdown report (and the plot) from the rows so far."""
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), None)
    amp = next((r.get("amp") for r in rows if r["config"] == "default"), "?")
    threads = next((r.get("threads") for r in rows), "?")
    lines = [
        "# Speed benchmark", "",
        f"Machine: {meta['cpu']}, {meta['cores']} usable cores, {meta['mem']} RAM; CPU features "
        f"{meta['flags']}; {'GPU ' + gpu if gpu else 'no GPU'}. Python {meta['python']}, torch threads "
        f"{threads}, device `{meta['device']}`. Run {meta['date']}; load average (1/5/15 min) at start "
        f"{meta['load_start']}, at end {meta['load_end']}.", "",
        f"Weights: {meta['weights']}. Default precision on this machine: `{amp}`.", "",
        "Each row is one fresh `deepemhancer` process (`python benchmarks/speed.py`, child mode): *wall* is the "
        "whole process (start-up, imports, model load included); stage seconds come from timers around the "
        "pipeline's functions; *peak RSS* is the process's `VmHWM` (`ru_maxrss` in the JSONL). "
        "*skippable* = 64^3 cubes a mask around the molecule lets the engine skip at the default stride "
        "(`inference.predict_volume(mask=...)`; not used by these runs). CC = correlation with the legacy output "
        "inside the molecule's mask (whole box in brackets).", "",
        "| map | config | cubes | wall s | read | resample | normalise | network | blend | write | "
        "peak RSS MB | peak GPU MB | skippable | CC vs legacy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.get("stages", {})
        cc = f"{r['cc_mask']:.4f} ({r['cc_all']:.4f})" if "cc_mask" in r else ""
        sk = r.get("skippable") or {}
        lines.append(
            f"| {r['map']} | {r['config']} | {_fmt(r.get('cubes'), 0)} | {r['wall_s']:.1f} | "
            + " | ".join(_fmt(s.get(k), 1) for k in STAGES)
            + f" | {_fmt(r.get('vmhwm_mb'), 0)} | {_fmt(r.get('gpu_peak_mb'), 0)} | "
            f"{sk.get('skipped', '')}/{sk.get('total', '')} | {cc} |"
        )
    lines += ["", *summary(rows), "", *DEV_NOTES]
    if plot(rows, path.with_suffix(".png")):
        lines += ["", f"![time and memory against voxels]({path.with_suffix('.png').name})"]
    path.write_text("\n".join(lines) + "\n")


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}"


def summary(rows: list[dict]) -> list[str]:
    out = ["## Summary", "", "| map | legacy / default wall | legacy / default cubes | CC (mask) | "
           "CC default vs fp32 (mask) |", "|---|---|---|---|---|"]
    by = {(r["map"], r["config"]): r for r in rows}
    for name in dict.fromkeys(r["map"] for r in rows):
        d, leg, f32 = by.get((name, "default")), by.get((name, "legacy")), by.get((name, "default-fp32"))
        if not d:
            continue
        ratio = f"{leg['wall_s'] / d['wall_s']:.1f}x" if leg else ""
        cubes = f"{leg['cubes'] / d['cubes']:.1f}x" if leg and d.get("cubes") else ""
        cc = f"{d['cc_mask']:.4f}" if "cc_mask" in d else ""
        cc32 = f"{f32['vs_fp32_cc_mask']:.5f}" if f32 and "vs_fp32_cc_mask" in f32 else ""
        out.append(f"| {name} | {ratio} | {cubes} | {cc} | {cc32} |")
    out += ["", "Growth with the number of voxels (1 A maps, least-squares slope of log(y) on log(voxels); "
            "1 = linear):", ""]
    for cfg in ("default", "legacy"):
        pts = [(r["voxels"], r["wall_s"], r.get("stages", {}).get("network"), r.get("vmhwm_mb"))
               for r in rows if r["config"] == cfg and r["voxel"] == 1.0]
        if len(pts) >= 2:
            out.append(f"- {cfg}: wall ~ voxels^{_slope([(p[0], p[1]) for p in pts]):.2f}, network ~ voxels^"
                       f"{_slope([(p[0], p[2]) for p in pts if p[2]]):.2f}, peak RSS ~ voxels^"
                       f"{_slope([(p[0], p[3]) for p in pts if p[3]]):.2f}")
    out += ["", *targets(by)]
    return out


def targets(by: dict) -> list[str]:
    out = ["Targets (issue 7):", ""]
    d, leg = by.get(("256^3 @ 1 A", "default")), by.get(("256^3 @ 1 A", "legacy"))
    if d:
        out.append(f"- 256^3 default wall {d['wall_s']:.0f} s (target <= 300 s): "
                   f"{'met' if d['wall_s'] <= 300 else 'NOT met'}")
    if d and leg:
        r = leg["wall_s"] / d["wall_s"]
        out.append(f"- 256^3 legacy/default {r:.1f}x (target >= 8x): {'met' if r >= 8 else 'NOT met'}")
        if "cc_mask" in d:
            out.append(f"- 256^3 CC default vs legacy inside the molecule {d['cc_mask']:.4f} (target >= 0.995): "
                       f"{'met' if d['cc_mask'] >= 0.995 else 'NOT met'}")
    half, conf = by.get(("256^3 @ 1 A", "halves")), by.get(("256^3 @ 1 A", "confidence"))
    if half and conf:
        r = conf["wall_s"] / half["wall_s"]
        out.append(f"- 256^3 --confidence / the same half maps without it {r:.2f}x (target <= 3.2x): "
                   f"{'met' if r <= 3.2 else 'NOT met'}")
    bigc = by.get(("384^3 @ 1 A", "confidence"))
    if bigc and bigc.get("vmhwm_mb"):
        out.append(f"- 384^3 --confidence peak RSS {bigc['vmhwm_mb']:.0f} MB (target <= 3072 MB): "
                   f"{'met' if bigc['vmhwm_mb'] <= 3072 else 'NOT met'}")
    big = by.get(("384^3 @ 1 A", "default"))
    if big and big.get("vmhwm_mb"):
        out.append(f"- 384^3 default peak RSS {big['vmhwm_mb']:.0f} MB (target < 3072 MB): "
                   f"{'met' if big['vmhwm_mb'] < 3072 else 'NOT met'}")
    return out if len(out) > 2 else []


def _slope(points) -> float:
    pts = [(math.log(x), math.log(y)) for x, y in points if x and y and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else float("nan")


def plot(rows: list[dict], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for cfg, style in (("default", "o-"), ("legacy", "s--"), ("default-fp32", "^:")):
        pts = sorted((r["voxels"], r["wall_s"], r.get("vmhwm_mb")) for r in rows
                     if r["config"] == cfg and r["voxel"] == 1.0)
        if not pts:
            continue
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=cfg)
        ax2.plot([p[0] for p in pts], [p[2] or float("nan") for p in pts], style, label=cfg)
    for ax, ylabel in ((ax1, "wall time (s)"), (ax2, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("voxels (1 A/voxel maps)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax2.axhline(3072, color="grey", lw=0.8)
    fig.suptitle("deepemhancer CLI: default vs legacy (--blend constant --stride 16)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256, 384], help="1 A map edges")
    p.add_argument("--resampled-size", type=int, default=308, help="edge of the map that must be resampled")
    p.add_argument("--resampled-voxel", type=float, default=0.83, help="its voxel size (A)")
    p.add_argument("--no-resampled", dest="resampled", action="store_false")
    p.add_argument("--weights", help="weights .pt (default: the shipped tightTarget, else random compact)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("-b", "--batch-size", type=int, default=None, help="pass -b to the CLI (default: its own)")
    p.add_argument("--legacy-max", type=int, default=None, help="run the legacy setting only up to this edge")
    p.add_argument("--fp32-sizes", type=int, nargs="*", default=[256], help="also run default with amp off")
    p.add_argument("--sweep", type=int, nargs="*", default=[24, 32, 40, 48],
                   help="strides to sweep with Gaussian blending (the default stride is the 'default' row)")
    p.add_argument("--sweep-size", type=int, default=256, help="map edge of the stride sweep")
    p.add_argument("--confidence-sizes", type=int, nargs="*", default=[256, 384],
                   help="1 A map edges also run as two half maps, without and with --confidence")
    p.add_argument("--quick", action="store_true", help="128^3 and a small resampled map; small sweep")
    p.add_argument("--out", help="report path (default: WORKDIR/speed.md); JSONL and PNG beside it")
    p.add_argument("--workdir", help="where maps and outputs go (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep maps and outputs")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.quick:
        args.sizes, args.resampled_size, args.fp32_sizes, args.confidence_sizes = [128], 120, [128], [128]
        args.sweep, args.sweep_size = [40], 128
    return args


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--make-map", "--run", "--compare"):
        raise SystemExit(_child_main(sys.argv[1], sys.argv[2]))
    run_all(parse_args())
