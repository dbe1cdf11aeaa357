"""Installed as deepemhancer.protocols (see package_dir in setup.py)."""
from .protocol_deepemhancer import ProtDeepEMhancer  # noqa: F401
