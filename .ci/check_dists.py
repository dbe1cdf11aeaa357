#!/usr/bin/env python3
"""Check the two distributions built from this repository (CI; needs readme-renderer, the engine's dev extra).

    python3 .ci/check_dists.py DIST_DIR

DIST_DIR holds the sdist and wheel of both ``scipion-em-deepemhancer`` (the plugin) and
``deepemhancer-engine`` (``python -m build`` of ``.`` and of ``packaging/engine``). Checks that the engine
wheel holds every shipped weight file byte for byte, its console script and none of its tests; that the
plugin wheel holds only ``deepemhancer/...`` with one top_level entry, Python >= 3.8 and scipion-em; and the
metadata a plugin manager and PyPI show (the descriptions must render as PyPI renders them).
Prints one line per failure and exits 1 if there is any.
"""

import email
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

from readme_renderer.rst import render

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "deepemhancer_engine" / "version.py").read_text()).group(1)
PLUGIN, ENGINE = "scipion_em_deepemhancer", "deepemhancer_engine"  # normalised distribution names


def one(dist_dir, pattern):
    found = sorted(Path(dist_dir).glob(pattern))
    if len(found) != 1:
        raise SystemExit("error: expected one %s in %s, found %s" % (pattern, dist_dir, [f.name for f in found]))
    return found[0]


def wheel_parts(path, dist):
    """(names, METADATA message, top_level lines, entry_points text) of a wheel."""
    with zipfile.ZipFile(path) as z:
        info = "%s-%s.dist-info/" % (dist, VERSION)
        names = z.namelist()
        meta = email.message_from_bytes(z.read(info + "METADATA"))
        top = z.read(info + "top_level.txt").decode().split() if info + "top_level.txt" in names else []
        entry = z.read(info + "entry_points.txt").decode() if info + "entry_points.txt" in names else ""
        digests = {n: hashlib.sha256(z.read(n)).hexdigest() for n in names if n.startswith(ENGINE + "/weights/")}
    return names, meta, top, entry, digests


def common_metadata(meta, name):
    errors = []
    if meta["Name"] != name or meta["Version"] != VERSION:
        errors.append("%s: name/version %s %s, expected %s" % (name, meta["Name"], meta["Version"], VERSION))
    if not any(c.startswith("Development Status ::") for c in meta.get_all("Classifier") or []):
        errors.append("%s: no Development Status classifier" % name)
    if not meta.get("Keywords"):
        errors.append("%s: no keywords" % name)
    body = meta.get_payload()
    warnings = io.StringIO()
    if render(body, stream=warnings) is None:
        errors.append("%s: the description is not valid reStructuredText, PyPI would show it as plain text (%s)"
                      % (name, " ".join(warnings.getvalue().split())[:200]))
    if re.search(r"^\.\. (image|figure):: (?!https?://)", body, flags=re.M):
        errors.append("%s: the PyPI description has figures with relative paths (PyPI cannot show them)" % name)
    return errors


def check_engine(dist_dir):
    wheel = one(dist_dir, "%s-%s-py3-none-any.whl" % (ENGINE, VERSION))
    names, meta, top, entry, digests = wheel_parts(wheel, ENGINE)
    errors = common_metadata(meta, "deepemhancer-engine")
    shipped = sorted(p for p in (ROOT / ENGINE / "weights").iterdir() if p.is_file())
    for p in shipped:
        inside = "%s/weights/%s" % (ENGINE, p.name)
        if digests.get(inside) != hashlib.sha256(p.read_bytes()).hexdigest():
            errors.append("engine wheel: %s missing or different from the repository's" % inside)
    for suffix in (".pt", ".json", ".null.npz"):
        if not any(n.endswith(suffix) for n in digests):
            errors.append("engine wheel: no weights/*%s" % suffix)
    if top != [ENGINE]:
        errors.append("engine wheel: top_level.txt %s, expected [%s]" % (top, ENGINE))
    if not re.search(r"^deepemhancer = deepemhancer_engine\.cli:run$", entry, flags=re.M):
        errors.append("engine wheel: no console script 'deepemhancer = deepemhancer_engine.cli:run'")
    bad = [n for n in names if not n.startswith((ENGINE + "/", "%s-%s.dist-info/" % (ENGINE, VERSION)))
           or n.startswith(ENGINE + "/tests/")]
    if bad:
        errors.append("engine wheel: unexpected files %s" % bad[:5])
    extras = set(meta.get_all("Provides-Extra") or [])
    if not {"train", "plots"} <= extras:
        errors.append("engine wheel: extras %s lack train/plots" % sorted(extras))
    if not any(r.startswith("torch") for r in meta.get_all("Requires-Dist") or []):
        errors.append("engine wheel: torch is not a dependency")
    print("engine wheel %s: %d files, %d weight files, %.1f MB" % (wheel.name, len(names), len(digests),
                                                                  wheel.stat().st_size / 1e6))
    return errors


def check_plugin(dist_dir):
    wheel = one(dist_dir, "%s-%s-py3-none-any.whl" % (PLUGIN, VERSION))
    names, meta, top, entry, _ = wheel_parts(wheel, PLUGIN)
    errors = common_metadata(meta, "scipion-em-deepemhancer")
    bad = [n for n in names if not n.startswith(("deepemhancer/", "%s-%s.dist-info/" % (PLUGIN, VERSION)))]
    if bad:
        errors.append("plugin wheel: files outside deepemhancer/: %s" % bad[:5])
    if top != ["deepemhancer"]:
        errors.append("plugin wheel: top_level.txt %s, expected exactly [deepemhancer]" % top)
    for needed in ("deepemhancer/__init__.py", "deepemhancer/protocols/__init__.py", "deepemhancer/viewers/__init__.py",
                   "deepemhancer/tests/__init__.py", "deepemhancer/scripts/__init__.py", "deepemhancer/protocols.conf",
                   "deepemhancer/deepemhancer_logo.png"):
        if needed not in names:
            errors.append("plugin wheel: %s missing" % needed)
    if not any(n.startswith("deepemhancer/templates/") for n in names):
        errors.append("plugin wheel: no workflow template")
    if meta["Requires-Python"] != ">=3.8":
        errors.append("plugin wheel: Requires-Python %s, expected >=3.8" % meta["Requires-Python"])
    if (meta.get_all("Requires-Dist") or []) != ["scipion-em"]:
        errors.append("plugin wheel: Requires-Dist %s, expected [scipion-em]" % meta.get_all("Requires-Dist"))
    if not re.search(r"^\[pyworkflow\.plugin\]\ndeepemhancer = deepemhancer$", entry, flags=re.M):
        errors.append("plugin wheel: no pyworkflow.plugin entry point 'deepemhancer = deepemhancer'")
    sdist = one(dist_dir, "%s-%s.tar.gz" % (PLUGIN, VERSION))
    with tarfile.open(sdist) as t:
        if "%s-%s/CHANGES.txt" % (PLUGIN, VERSION) not in t.getnames():
            errors.append("plugin sdist: no CHANGES.txt")
    print("plugin wheel %s: %d files, top_level %s" % (wheel.name, len(names), top))
    return errors


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    errors = check_engine(argv[1]) + check_plugin(argv[1])
    for line in errors:
        print("error: " + line, file=sys.stderr)
    print("distributions: %s" % ("OK" if not errors else "%d problem(s)" % len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
