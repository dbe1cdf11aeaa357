"""scipion-em-deepemhancer: the Scipion 3 plugin only (import package ``deepemhancer``).

Repository layout (binding, see README.rst "Repository layout"):
the top-level folders ``deepemhancer_plugin/``, ``protocols/``, ``viewers/`` and ``tests/`` are installed as
``deepemhancer``, ``deepemhancer.protocols``, ``deepemhancer.viewers`` and ``deepemhancer.tests`` through
``package_dir``. The code therefore runs only when installed (``pip install -e .``), and
``pyproject.toml`` with ``[build-system]`` is mandatory for the editable install to honour the mapping.

The engine (``deepemhancer_engine``: torch, weights, the ``deepemhancer`` command) is the other
distribution, ``deepemhancer-engine``, built from ``packaging/engine``; the plugin never imports it and
``scipion3 installb deepemhancer`` installs it into its own environment (docs/design.md, "Two
distributions from one repository"). Python >= 3.8: Scipion's installer still defaults to 3.8.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def read_version():
    """The plugin is released with the engine it installs: one version (the sdist carries version.py)."""
    text = (HERE / "deepemhancer_engine" / "version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def long_description():
    """README.rst with each figure replaced by its path: the figures are repository files, which PyPI
    cannot show (this project has no public address to link them from)."""
    text = (HERE / "README.rst").read_text(encoding="utf-8")
    return re.sub(r"^\.\. (?:image|figure):: (\S+)\n(?:[ \t]+:.*\n)*", r"(Figure: ``\1`` in the source.)\n",
                  text, flags=re.M)


setup(
    name="scipion-em-deepemhancer",
    version=read_version(),
    description="Scipion 3 plugin of DeepEMhancer in PyTorch: cryo-EM half-map enhancement (ProtDeepEMhancer)",
    long_description=long_description(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=[
        "deepemhancer",
        "deepemhancer.protocols",
        "deepemhancer.viewers",
        "deepemhancer.tests",
        "deepemhancer.scripts",
    ],
    package_dir={
        "deepemhancer": "deepemhancer_plugin",
        "deepemhancer.protocols": "protocols",
        "deepemhancer.viewers": "viewers",
        "deepemhancer.tests": "tests",
    },
    package_data={"deepemhancer": ["protocols.conf", "*.png", "templates/*.json.template"]},
    include_package_data=False,  # package_data only: MANIFEST.in adds sdist files that are not installed
    install_requires=["scipion-em"],  # torch and the engine live in the managed env (installb), never here
    entry_points={"pyworkflow.plugin": ["deepemhancer = deepemhancer"]},
    keywords=["scipion", "cryo-EM", "cryo-electron microscopy", "DeepEMhancer", "map post-processing",
              "denoising", "deep learning", "scipion-3.0"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Plugins",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
