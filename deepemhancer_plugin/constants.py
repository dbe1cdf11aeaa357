"""Names of the plugin's configuration variables, the managed environment and the engine options.

Strings only: importing this module must stay free (no pwem, no torch, no engine).
"""

# ---- configuration variables (environment or scipion.conf; env vars win) -----------------------
#: Folder of the managed engine environment (default ``$EM_ROOT/deepemhancer-<version>``).
DEEPEMHANCER_HOME = "DEEPEMHANCER_HOME"
#: Command that activates an engine environment of your own (e.g. ``conda activate myenv``).
#: Empty (default): use the environment installed by ``scipion3 installb deepemhancer``.
DEEPEMHANCER_ENV_ACTIVATION = "DEEPEMHANCER_ENV_ACTIVATION"
#: Folder with model weights + model cards; empty: the weights shipped inside the engine package.
DEEPEMHANCER_WEIGHTS_DIR = "DEEPEMHANCER_WEIGHTS_DIR"
#: pip requirement for torch in the managed env (CPU wheel here; e.g. a CUDA build elsewhere).
DEEPEMHANCER_TORCH = "DEEPEMHANCER_TORCH"
#: Extra pip options for the torch install (e.g. ``--index-url https://download.pytorch.org/whl/cu126``).
DEEPEMHANCER_TORCH_PIP_OPTIONS = "DEEPEMHANCER_TORCH_PIP_OPTIONS"
#: pip requirement of the engine itself (a wheel, a folder, ``deepemhancer-engine==V``); default: this
#: checkout's packaging/engine in a devel install, else the released deepemhancer-engine of this version.
DEEPEMHANCER_ENGINE_SOURCE = "DEEPEMHANCER_ENGINE_SOURCE"
#: ``auto`` (conda when Scipion's conda is configured or on PATH, else venv), ``conda`` or ``venv``.
DEEPEMHANCER_ENV_BACKEND = "DEEPEMHANCER_ENV_BACKEND"
#: Coot executable (default: scipion-em-ccp4's ``$CCP4_HOME/bin/coot``, else ``coot`` on PATH).
DEEPEMHANCER_COOT = "DEEPEMHANCER_COOT"

# ---- managed environment ------------------------------------------------------------------------
ENV_NAME = "deepemhancer"  # installb target (dash-free on purpose) and env folder prefix
DEFAULT_TORCH = "torch==2.13.0"
DISTRIBUTION = "scipion-em-deepemhancer"  # this plugin
ENGINE_DISTRIBUTION = "deepemhancer-engine"  # what installb puts in the managed env
#: The engine distribution's project folder in a checkout (devel install), relative to the repository.
ENGINE_PROJECT_DIR = ("packaging", "engine")
PYTHON_VERSION_CONDA = "3.11"
BACKENDS = ("auto", "venv", "conda")
ENGINE_COMMAND = "deepemhancer"

# ---- protocol choices (order = enum index in the form) -----------------------------------------
MODEL_TYPES = ["tightTarget", "wideTarget", "highRes"]
MODEL_TIGHT, MODEL_WIDE, MODEL_HIGHRES = range(3)
NORMALIZATIONS = ["Automatic", "Noise statistics", "Mask"]
NORM_AUTO, NORM_STATS, NORM_MASK = range(3)
BLEND_MODES = ["gaussian", "constant"]
BLEND_GAUSSIAN, BLEND_CONSTANT = range(2)
#: The engine's --lattice; "automatic" passes nothing (fcc with gaussian blending and stride <= 32).
LATTICES = ["automatic", "fcc", "cubic"]
LATTICE_AUTO, LATTICE_FCC, LATTICE_CUBIC = range(3)

#: Name of the enhanced map inside the protocol's extra folder.
OUTPUT_MAP = "deepemhancer_enhanced.mrc"
#: Written by the engine beside OUTPUT_MAP (deepemhancer_engine.provenance): the JSON sidecar (options,
#: weights and SHA-256, half-map FSC-0.143, limit used) and the half-map FSC curve (evaluate's columns).
OUTPUT_SIDECAR = "deepemhancer_enhanced.json"
OUTPUT_FSC = "deepemhancer_enhanced_fsc.tsv"
#: The confidence map (engine's --confidence; two half-maps only), beside OUTPUT_MAP on the same grid.
OUTPUT_CONFIDENCE = "deepemhancer_confidence.mrc"
#: File the engine's stderr is copied to (inside the protocol's logs), parsed on failure.
ENGINE_ERROR_PREFIX = "error: "
