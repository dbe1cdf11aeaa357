"""scipion-em-deepemhancer: one distribution, two import packages.

Repository layout (binding, see README.rst "Repository layout"):
the top-level folders ``deepemhancer_plugin/``, ``protocols/``, ``viewers/`` and ``tests/`` are installed as
``deepemhancer``, ``deepemhancer.protocols``, ``deepemhancer.viewers`` and ``deepemhancer.tests`` through
``package_dir``. The code therefore runs only when installed (``pip install -e .``), and
``pyproject.toml`` with ``[build-system]`` is mandatory for the editable install to honour the mapping.
``deepemhancer_engine`` is the pure PyTorch engine + CLI and never imports Scipion.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    text = (HERE / "deepemhancer_engine" / "version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


setup(
    name="scipion-em-deepemhancer",
    version=read_version(),
    description="DeepEMhancer in PyTorch: cryo-EM map enhancement engine and Scipion 3 plugin",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=[
        "deepemhancer",
        "deepemhancer.protocols",
        "deepemhancer.viewers",
        "deepemhancer.tests",
        "deepemhancer.scripts",
        *find_packages(include=["deepemhancer_engine", "deepemhancer_engine.*"]),
    ],
    package_dir={
        "deepemhancer": "deepemhancer_plugin",
        "deepemhancer.protocols": "protocols",
        "deepemhancer.viewers": "viewers",
        "deepemhancer.tests": "tests",
    },
    package_data={
        "deepemhancer": ["protocols.conf", "*.png", "templates/*.json.template"],
        "deepemhancer_engine": ["weights/*.pt", "weights/*.json", "weights/*.npz", "data/*", "py.typed"],
    },
    include_package_data=True,
    install_requires=[],  # the Scipion side brings its own (scipion-em); the engine needs the extra
    extras_require={
        "engine": ["torch>=2.6", "numpy", "mrcfile", "scipy"],
        "train": ["gemmi", "matplotlib"],
        "plots": ["matplotlib"],
        "dev": ["pytest", "ruff"],
    },
    entry_points={
        "pyworkflow.plugin": ["deepemhancer = deepemhancer"],
        "console_scripts": ["deepemhancer = deepemhancer_engine.cli:run"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering",
    ],
)
