"""Speed benchmark: the whole ``deepemhancer`` CLI run, per stage, on synthetic maps of growing size.

For each synthetic map (128^3, 192^3, 256^3, 384^3 at 1 A/voxel, and one map at 0.83 A/voxel that is
resampled to 1 A) the CLI runs in a fresh subprocess per configuration (:data:`CONFIGS`; ``--configs``
picks them, a new one is one entry there):

- ``default``: the CLI defaults (Gaussian blending at the default stride, automatic precision, solvent
  cubes skipped);
- ``no-skip``: the defaults with ``--no-skip`` (every cube runs);
- ``legacy``: ``--blend constant --stride 16 --no-skip`` (the original DeepEMhancer: its cube count and
  averaging, every cube);
- ``halves``: the defaults on two half maps whose average is the map (adds the half-map FSC and the
  resolution limit to the stages);
- ``confidence`` (``--confidence-sizes``): the ``halves`` run with ``--confidence`` (its cost: the ratio of the
  two walls, and its peak RSS);
- ``before``: the defaults run by another checkout (``--before PATH``, e.g. the main branch), for the
  stages before and after a change, measured in the same run;
- optionally ``default-fp32`` (mixed precision off, to show what bf16/fp16 costs in accuracy) and a
  stride sweep (``--stride S`` with Gaussian blending) on one size, to choose the default stride.

Each run records the wall time of the whole process and the seconds per stage (:data:`STAGES`: interpreter
start-up, imports, model load, read, half-map FSC, resample, normalise, cube layout and skip decision, null
response, the first batch's extra time over a typical batch (kernel set-up), network, blend, resolution
limit, shell amplitudes, write, the process's exit (interpreter teardown); ``other`` is what no timer saw: argument parsing,
lazy imports, logging), the cubes run and skipped, the peak resident memory
(``VmHWM`` of the process and ``ru_maxrss``) and, on a GPU, the peak GPU memory. Outputs are compared by
their correlation (CC) inside the molecule's mask and over the whole box (with ``legacy`` and, for
``default``, with ``no-skip``), and each output's solvent/molecule rms ratio (``metrics.solvent_ratio``:
solvent = mask 0, molecule = mask > 0.5). Results go to ``speed.jsonl`` (one line per run, written as it
finishes; every row has ``config`` and ``args``, so new configurations need no format change) and
``speed.md`` (rewritten after every run) with a plot ``speed.png``.

Map generation and comparison also run in subprocesses, so the parent stays small and cannot
inflate the children's memory figures.

    # full benchmark (about 1.5-2 h on 2 quiet cores; the stride-16 runs dominate)
    python benchmarks/speed.py --out benchmarks/results/speed.md
    # issue 24's figures: 256^3 and 384^3, legacy at 256^3 only, before/after against the main branch
    python benchmarks/speed.py --sizes 256 384 --legacy-max 256 --fp32-sizes --sweep --no-resampled \
        --before ../main --out benchmarks/results/speed.md
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

T0 = time.time()  # a child's start: its interpreter start-up (and these imports) is T0 minus the spawn time

ROOT = Path(__file__).resolve().parents[1]
#: The original's behaviour: its cube count and uniform averaging, every cube run (it never skipped).
LEGACY_ARGS = ["--blend", "constant", "--stride", "16", "--no-skip"]
#: label -> extra CLI arguments of the configurations run on every map (``--configs`` picks among them;
#: ``halves`` and ``before`` are built in :func:`configs_for`).
CONFIGS = {"default": [], "no-skip": ["--no-skip"], "legacy": LEGACY_ARGS}
SHIPPED_WEIGHTS = ROOT / "deepemhancer_engine" / "weights" / "tightTarget.pt"
STAGES = ("startup", "import", "load", "read", "fsc", "resample", "normalise", "layout", "null", "warm-up",
          "network", "blend", "limit", "amplitudes", "write", "exit", "other")
#: The stages that are not the network's forward passes (the fixed costs of issue 24).
FIXED_STAGES = tuple(s for s in STAGES if s not in ("network", "blend"))


# ================================================================================================
# children (each runs in its own process)
# ================================================================================================


def make_map(path: str, size: int, voxel: float, seed: int) -> dict:
    """Write a synthetic molecule (blobs at ~3.5 A in an ellipsoid, plus noise) and its mask."""
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
    vol += rng.normal(scale=0.05, size=vol.shape).astype(np.float32)
    half_noise = rng.normal(scale=0.05, size=vol.shape).astype(np.float32)  # halves: vol +- this, average vol
    for p, data in ((path, vol), (path.replace(".mrc", "_mask.mrc"), mask),
                    (path.replace(".mrc", "_half1.mrc"), vol + half_noise),
                    (path.replace(".mrc", "_half2.mrc"), vol - half_noise)):
        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(data)
            m.voxel_size = voxel
    del half_noise
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

    timings: dict[str, float] = {"startup": T0 - spec["spawn"]} if spec.get("spawn") else {}
    loaded: list = []
    _instrument(pipeline, runner, timings, loaded, spec.get("amp"))
    timings["import"] = t_import = time.perf_counter() - t_start
    rc = cli.main(spec["argv"])
    result = {"rc": rc, "import_s": t_import, "in_process_s": time.perf_counter() - t_start}
    pred = loaded[0].runner if loaded else None
    ptimes = dict(getattr(loaded[0] if loaded else None, "timings", {}) or {})
    timings.update(predict_stages(ptimes))
    if "fsc" in timings:
        timings["read"] = timings.get("read", 0.0) - timings["fsc"]
    result.update(stages=timings, predict=ptimes, cubes=ptimes.get("cubes"), skipped=ptimes.get("skipped"),
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


def predict_stages(ptimes: dict) -> dict:
    """Split ``inference.predict_volume``'s timings into stages: ``layout``, ``null``, ``warm-up`` (the first
    batch's time beyond a typical batch's: kernel set-up), ``network`` (the rest of the forward passes) and
    ``blend`` (cutting and blending). Timings without the parts (older code) give network and blend only."""
    net, blend = ptimes.get("network", float("nan")), ptimes.get("blend", 0.0)
    if "first_batch" not in ptimes:
        return {"network": net, "blend": blend}
    null, layout, first = ptimes["null"], ptimes["layout"], ptimes["first_batch"]
    batches = math.ceil(ptimes["cubes"] / max(ptimes.get("batch") or 1, 1))
    forward = net - null
    warm = max(0.0, first - (forward - first) / (batches - 1)) if batches > 1 else 0.0
    return {"layout": layout, "null": null, "warm-up": warm, "network": forward - warm, "blend": blend - layout}


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

    for attr, stage in (("read_inputs", "read"), ("write_map", "write"), ("half_map_resolution", "fsc")):
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
        for stage in ("limit", "amplitudes"):
            if stage in stage_times:
                timings[stage] = stage_times[stage]
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

    from deepemhancer_engine.metrics import solvent_ratio

    x, y, mask_map = read(a), read(b), read(mask)
    m = mask_map > 0.5

    def cc(u, v):
        u = u.astype(np.float64) - u.mean()
        v = v.astype(np.float64) - v.mean()
        return float((u * v).sum() / math.sqrt((u * u).sum() * (v * v).sum()))

    solvent = mask_map <= 0
    return {"cc_mask": cc(x[m], y[m]), "cc_all": cc(x.ravel(), y.ravel()),
            "max_rel_diff": float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)),
            "solvent_ratio_a": solvent_ratio(x, m, solvent), "solvent_ratio_b": solvent_ratio(y, m, solvent)}


def _child_main(mode: str, payload: str) -> int:
    args = json.loads(payload)
    sys.path.insert(0, str(ROOT))
    if args.get("root"):  # another checkout's engine (the ``before`` configuration)
        sys.path.insert(0, args["root"])
    args.pop("root", None)
    if mode == "--make-map":
        out = make_map(**args)
    elif mode == "--run":
        out = run_child(args)
    else:
        out = compare(**args)
    out["end"] = time.time()  # the parent's wall minus this: the process's exit
    print("RESULT " + json.dumps(out), flush=True)
    if mode == "--run":  # end as the deepemhancer command does (``cli.run``), where the engine has that
        from deepemhancer_engine import cli

        if hasattr(cli, "exit_now"):
            cli.exit_now(0)
    return 0


# ================================================================================================
# parent: plan, run, record, report
# ================================================================================================


def child(mode: str, payload: dict, log_path: Path, timeout: float | None = None) -> tuple[dict, float]:
    """Run this script in ``mode`` in a fresh process; return its RESULT and the wall seconds."""
    root = payload.get("root") or str(ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    if mode == "--run":
        payload = dict(payload, spawn=time.time())
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(payload)],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    end = time.time()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see {log_path}")
    res = json.loads(lines[-1][len("RESULT "):])
    if mode == "--run" and "stages" in res:
        res["stages"]["exit"] = end - res.pop("end")
    return res, wall


def plan(args) -> list[dict]:
    """The maps to benchmark: ``{"name", "size", "voxel"}``."""
    maps = [{"name": f"{s}^3 @ 1 A", "size": s, "voxel": 1.0} for s in args.sizes]
    if args.resampled:
        s = args.resampled_size
        maps.append({"name": f"{s}^3 @ {args.resampled_voxel:g} A", "size": s, "voxel": args.resampled_voxel})
    return maps


def configs_for(m: dict, args) -> list[dict]:
    """The runs on map ``m``: ``{"label", "args" (extra CLI arguments), "amp" (forced precision or None),
    "root" (another checkout or None), "halves" (run on the two half maps)}``."""
    def run(label, extra, amp=None, root=None, halves=False):
        return {"label": label, "args": list(extra), "amp": amp, "root": root, "halves": halves}

    out = []
    limits = {"legacy": args.legacy_max, "no-skip": args.no_skip_max}
    for label in args.configs:
        if label != "legacy" and (limits.get(label) is None or m["size"] <= limits[label]):
            out.append(run(label, CONFIGS[label]))
    if args.before and (args.before_max is None or m["size"] <= args.before_max):
        out.append(run("before", [], root=str(Path(args.before).resolve())))
    confidence = m["voxel"] == 1.0 and m["size"] in args.confidence_sizes
    if m["voxel"] == 1.0 and (m["size"] in (args.halves or []) or confidence):
        out.append(run("halves", [], halves=True))
        if confidence:
            out.append(run("confidence", ["--confidence", "{conf}"], halves=True))
        if args.before and (args.before_max is None or m["size"] <= args.before_max):
            out.append(run("before-halves", [], root=str(Path(args.before).resolve()), halves=True))
    if m["voxel"] == 1.0 and m["size"] in args.fp32_sizes:
        out.append(run("default-fp32", [], amp="off"))
    if m["voxel"] == 1.0 and m["size"] == args.sweep_size:
        from deepemhancer_engine.config import DEFAULT_STRIDE  # light import (no torch)

        out += [run(f"stride {s}", ["--stride", str(s)]) for s in args.sweep if s != DEFAULT_STRIDE]
    if "legacy" in args.configs and (args.legacy_max is None or m["size"] <= args.legacy_max):
        out.append(run("legacy", CONFIGS["legacy"]))  # last: the longest run
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
        outputs: dict[str, str] = {}
        for cfg in configs_for(m, args):
            rows.append(run_config(m, cfg, path, made, weights, args, outputs, log_path))
            add_comparisons(rows, m["name"], outputs, path, log_path)
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            write_report(out_md, rows, meta)
        if not args.keep:
            extra = [path.replace(".mrc", f"_{k}.mrc") for k in ("mask", "half1", "half2")]
            extra.append(str(Path(path).parent / f"conf_{m['size']}_{m['voxel']:g}.mrc"))
            for p in [*outputs.values(), path, *extra]:
                Path(p).unlink(missing_ok=True)
    meta["load_end"] = _load()
    write_report(out_md, rows, meta)
    print(f"done: {out_md}", flush=True)


def run_config(m: dict, cfg: dict, path: str, made: dict, weights: Path, args, outputs: dict,
               log_path: Path) -> dict:
    """One CLI run of configuration ``cfg`` on map ``m``; returns its row (the output's path in ``outputs``)."""
    label = cfg["label"]
    outputs[label] = str(Path(path).parent / f"out_{m['size']}_{m['voxel']:g}_{label.replace(' ', '')}.mrc")
    inputs = (["-i", path.replace(".mrc", "_half1.mrc"), "-i2", path.replace(".mrc", "_half2.mrc")]
              if cfg["halves"] else ["-i", path])
    conf = str(Path(path).parent / f"conf_{m['size']}_{m['voxel']:g}.mrc")
    argv = [*inputs, "-o", outputs[label], "--weights", str(weights), "--device", args.device, "--force",
            *(a.replace("{conf}", conf) for a in cfg["args"]),
            *(["-b", str(args.batch_size)] if args.batch_size else [])]
    res, wall = child("--run", {"argv": argv, "amp": cfg["amp"], "root": cfg["root"]}, log_path)
    if res.get("rc"):
        raise RuntimeError(f"deepemhancer exited with {res['rc']} for {label} on {m['name']}; see {log_path}")
    stages = res.get("stages", {})
    stages["other"] = wall - sum(v for k, v in stages.items() if k in STAGES and k != "other" and v == v)
    row = {"map": m["name"], "size": m["size"], "voxel": m["voxel"], "config": label, "args": cfg["args"],
           "halves": cfg["halves"], "code": cfg["root"] or "this checkout", "wall_s": wall,
           "voxels": m["size"] ** 3, "skippable": made["skippable"], **res}
    print(f"[{m['name']}] {label:13s} {wall:7.1f} s, {row.get('cubes')} cubes ({row.get('skipped')} skipped), "
          f"peak {row.get('vmhwm_mb') or 0:.0f} MB", flush=True)
    return row


def compare_child(a: str, b: str, map_path: str, log_path: Path) -> dict:
    res, _ = child("--compare", {"a": a, "b": b, "mask": map_path.replace(".mrc", "_mask.mrc")}, log_path)
    return res


def add_comparisons(rows: list[dict], name: str, outputs: dict, map_path: str, log_path: Path) -> None:
    """Give the runs of map ``name`` their CC with the legacy output, ``default`` its CC with ``no-skip``
    (and both their solvent/molecule rms ratios), the fp32 run its CC with the default."""
    for row in rows:
        if row["map"] != name:
            continue
        label = row["config"]
        compared = label not in ("legacy", "halves", "before-halves", "confidence")
        if compared and "legacy" in outputs and "cc_mask" not in row:
            res = compare_child(outputs[label], outputs["legacy"], map_path, log_path)
            row.update({k: res[k] for k in ("cc_mask", "cc_all", "max_rel_diff")})
            print(f"[{name}] {label:13s} CC vs legacy inside the mask {row['cc_mask']:.4f}", flush=True)
        if label == "default" and "no-skip" in outputs and "vs_noskip_cc_mask" not in row:
            res = compare_child(outputs["default"], outputs["no-skip"], map_path, log_path)
            row.update({"vs_noskip_" + k: v for k, v in res.items()})
            print(f"[{name}] default vs no-skip: CC inside the mask {res['cc_mask']:.5f}, solvent/molecule rms "
                  f"{res['solvent_ratio_a']:.4f} vs {res['solvent_ratio_b']:.4f}", flush=True)
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
        "whole process; the stage seconds come from timers around the pipeline's functions (module docstring): "
        "*start* interpreter start-up, *import*, *load* model load, *read*, *fsc* half-map FSC, *resample* "
        "(there and back), *normalise*, *layout* padding, cube grid and skip decision, *null* null response, "
        "*warm-up* the first batch's time beyond a typical batch, *network*, *blend*, *limit* resolution limit, "
        "*write*, *exit* the end of the process, *other* what no timer saw (argument parsing, lazy imports). "
        "*cubes* = run (skipped). *peak RSS* is the process's `VmHWM`. "
        "*skippable with a mask* = 64^3 cubes a mask around the molecule would let the engine skip. "
        "CC = correlation with the legacy output inside the molecule's mask (whole box in brackets).", "",
        "| map | config | cubes | wall s | " + " | ".join(STAGES) + " | peak RSS MB | peak GPU MB | "
        "skippable with a mask | CC vs legacy |",
        "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|",
    ]
    for r in rows:
        s = r.get("stages", {})
        cc = f"{r['cc_mask']:.4f} ({r['cc_all']:.4f})" if "cc_mask" in r else ""
        sk = r.get("skippable") or {}
        cubes = _fmt(r.get("cubes"), 0) + (f" ({_fmt(r.get('skipped'), 0)})" if r.get("skipped") else "")
        lines.append(
            f"| {r['map']} | {r['config']} | {cubes} | {r['wall_s']:.1f} | "
            + " | ".join(_fmt(s.get(k), 1) for k in STAGES)
            + f" | {_fmt(r.get('vmhwm_mb'), 0)} | {_fmt(r.get('gpu_peak_mb'), 0)} | "
            f"{sk.get('skipped', '')}/{sk.get('total', '')} | {cc} |"
        )
    lines += ["", *summary(rows), "", *before_after(rows), "", *DEV_NOTES]
    if plot(rows, path.with_suffix(".png")):
        lines += ["", f"![time and memory against voxels]({path.with_suffix('.png').name})"]
    path.write_text("\n".join(lines) + "\n")


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}"


def summary(rows: list[dict]) -> list[str]:
    out = ["## Summary", "", "| map | legacy / default wall | default / no-skip wall | legacy / default cubes | "
           "CC vs legacy (mask) | CC default vs no-skip (mask, box) | solvent/molecule rms default, no-skip | "
           "CC default vs fp32 (mask) |", "|---|---|---|---|---|---|---|---|"]
    by = {(r["map"], r["config"]): r for r in rows}
    for name in dict.fromkeys(r["map"] for r in rows):
        d, leg, f32 = by.get((name, "default")), by.get((name, "legacy")), by.get((name, "default-fp32"))
        ns = by.get((name, "no-skip"))
        if not d:
            continue
        ratio = f"{leg['wall_s'] / d['wall_s']:.1f}x" if leg else ""
        skip = f"{d['wall_s'] / ns['wall_s']:.2f}x" if ns else ""
        cubes = f"{leg['cubes'] / d['cubes']:.1f}x" if leg and d.get("cubes") else ""
        cc = f"{d['cc_mask']:.4f}" if "cc_mask" in d else ""
        ccs = f"{d['vs_noskip_cc_mask']:.5f}, {d['vs_noskip_cc_all']:.5f}" if "vs_noskip_cc_mask" in d else ""
        ratios = (f"{d['vs_noskip_solvent_ratio_a']:.4f}, {d['vs_noskip_solvent_ratio_b']:.4f}"
                  if "vs_noskip_cc_mask" in d else "")
        cc32 = f"{f32['vs_fp32_cc_mask']:.5f}" if f32 and "vs_fp32_cc_mask" in f32 else ""
        out.append(f"| {name} | {ratio} | {skip} | {cubes} | {cc} | {ccs} | {ratios} | {cc32} |")
    out += ["", "Growth with the number of voxels (1 A maps, least-squares slope of log(y) on log(voxels); "
            "1 = linear):", ""]
    for cfg in ("default", "no-skip", "legacy"):
        pts = [(r["voxels"], r["wall_s"], r.get("stages", {}).get("network"), r.get("vmhwm_mb"))
               for r in rows if r["config"] == cfg and r["voxel"] == 1.0]
        if len(pts) >= 2:
            out.append(f"- {cfg}: wall ~ voxels^{_slope([(p[0], p[1]) for p in pts]):.2f}, network ~ voxels^"
                       f"{_slope([(p[0], p[2]) for p in pts if p[2]]):.2f}, peak RSS ~ voxels^"
                       f"{_slope([(p[0], p[3]) for p in pts if p[3]]):.2f}")
    out += ["", *targets(by)]
    return out


def targets(by: dict) -> list[str]:
    """The targets of issue 24 that this run measured."""
    out = ["Targets (issue 24):", ""]
    d, leg, ns = (by.get(("256^3 @ 1 A", c)) for c in ("default", "legacy", "no-skip"))

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if d and ns:
        r = d["wall_s"] / ns["wall_s"]
        out.append(f"- 256^3 default / no-skip wall {r:.2f}x (target <= 0.6x): {verdict(r <= 0.6)}")
    if d and "vs_noskip_cc_mask" in d:
        c = d["vs_noskip_cc_mask"]
        out.append(f"- 256^3 CC default vs no-skip inside the molecule {c:.5f} (target >= 0.999): "
                   f"{verdict(c >= 0.999)}; "
                   f"solvent/molecule rms {d['vs_noskip_solvent_ratio_a']:.4f} (default), "
                   f"{d['vs_noskip_solvent_ratio_b']:.4f} (no-skip)")
    if d and leg:
        r = leg["wall_s"] / d["wall_s"]
        out.append(f"- 256^3 legacy / default wall {r:.1f}x (target >= 15x): {verdict(r >= 15)}")
    def peak_rss(config: str, label: str, limit: int) -> None:
        row = by.get(("384^3 @ 1 A", config))
        if row and row.get("vmhwm_mb"):
            out.append(f"- 384^3 {label} peak RSS {row['vmhwm_mb']:.0f} MB (target <= {limit} MB): "
                       f"{verdict(row['vmhwm_mb'] <= limit)}")

    peak_rss("default", "default", 2048)
    half, conf = by.get(("256^3 @ 1 A", "halves")), by.get(("256^3 @ 1 A", "confidence"))
    if half and conf:
        r = conf["wall_s"] / half["wall_s"]
        out.append(f"- 256^3 --confidence / the same half maps without it {r:.2f}x (target <= 3.2x): "
                   f"{verdict(r <= 3.2)}")
    peak_rss("confidence", "--confidence", 3072)
    return out if len(out) > 2 else []


def before_after(rows: list[dict]) -> list[str]:
    """The non-network stages of ``before`` (another checkout) and this checkout's runs, side by side."""
    after_of = {"before": ("no-skip", "default"), "before-halves": ("halves",)}
    groups = [[b, *(a for a in rows if a["map"] == b["map"] and a["config"] in after_of[b["config"]])]
              for b in rows if b["config"] in after_of]
    if not groups:
        return []
    out = ["## Fixed costs before and after (same run)", "",
           "`before` is the engine of `" + str(groups[0][0]["code"]) + "` (its defaults: no skipping); the stages "
           "it does not time separately are blank (they are inside its *network* and *blend*). *fixed s*: the "
           "stages both time (start-up to exit, without layout, null response and warm-up).", "",
           "| map | config | wall s | fixed s | " + " | ".join(FIXED_STAGES) + " | peak RSS MB |",
           "|---|---|---|---|" + "---|" * len(FIXED_STAGES) + "---|"]
    both = [k for k in FIXED_STAGES if k not in ("layout", "null", "warm-up")]
    for group in groups:
        for r in group:
            st = r.get("stages", {})
            fixed = sum(st[k] for k in both if k in st and st[k] == st[k])
            out.append(f"| {r['map']} | {r['config']} | {r['wall_s']:.1f} | {fixed:.1f} | "
                       + " | ".join(_fmt(st.get(k), 2) for k in FIXED_STAGES) + f" | {_fmt(r.get('vmhwm_mb'), 0)} |")
    return out


def rewrite_report(out_md: Path) -> None:
    """Rewrite ``out_md`` from its JSONL (after a change to the report's layout), keeping its machine line."""
    rows = [json.loads(line) for line in out_md.with_suffix(".jsonl").read_text().splitlines() if line.strip()]
    text = out_md.read_text()
    meta = {"cpu": "?", "cores": "?", "mem": "?", "flags": "?", "python": "?", "load_start": "?", "load_end": "?",
            "weights": "?", "device": "?", "date": "?"}
    import re

    found = re.search(r"Machine: (.*), (\S+) usable cores, (.*) RAM; CPU features (.*); .*GPU.*\. Python (\S+), "
                      r"torch threads \S+, device `(\S+)`\. Run (.*); load average \(1/5/15 min\) at start (.*), "
                      r"at end (.*)\.\n\nWeights: (.*)\. Default", text)
    if found:
        keys = ("cpu", "cores", "mem", "flags", "python", "device", "date", "load_start", "load_end", "weights")
        meta.update(zip(keys, found.groups()))
    write_report(out_md, rows, meta)


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
    for cfg, style in (("default", "o-"), ("no-skip", "d-."), ("legacy", "s--"), ("default-fp32", "^:")):
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
    ax2.axhline(2048, color="grey", lw=0.8)
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
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                   help=f"configurations run on every map (default: {' '.join(CONFIGS)})")
    p.add_argument("--legacy-max", type=int, default=None, help="run the legacy setting only up to this edge")
    p.add_argument("--no-skip-max", type=int, default=None, help="run the no-skip setting only up to this edge")
    p.add_argument("--halves", type=int, nargs="*", default=[256],
                   help="1 A map edges also run on two half maps (half-map FSC and resolution limit)")
    p.add_argument("--confidence-sizes", type=int, nargs="*", default=[256, 384],
                   help="1 A map edges also run on two half maps with --confidence (after the plain half-map run)")
    p.add_argument("--before", metavar="PATH", help="also run the defaults with the engine of this checkout")
    p.add_argument("--before-max", type=int, default=256, help="run --before only up to this edge")
    p.add_argument("--fp32-sizes", type=int, nargs="*", default=[256], help="also run default with amp off")
    p.add_argument("--sweep", type=int, nargs="*", default=[24, 32, 40, 48],
                   help="strides to sweep with Gaussian blending (the default stride is the 'default' row)")
    p.add_argument("--sweep-size", type=int, default=256, help="map edge of the stride sweep")
    p.add_argument("--quick", action="store_true", help="128^3 and a small resampled map; small sweep")
    p.add_argument("--out", help="report path (default: WORKDIR/speed.md); JSONL and PNG beside it")
    p.add_argument("--workdir", help="where maps and outputs go (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep maps and outputs")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.quick:
        args.sizes, args.resampled_size, args.fp32_sizes, args.halves = [128], 120, [128], [128]
        args.confidence_sizes = [128]
        args.sweep, args.sweep_size = [40], 128
    return args


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--make-map", "--run", "--compare"):
        raise SystemExit(_child_main(sys.argv[1], sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "--rewrite-report":  # speed.md again from its speed.jsonl
        rewrite_report(Path(sys.argv[2]))
        raise SystemExit(0)
    run_all(parse_args())
