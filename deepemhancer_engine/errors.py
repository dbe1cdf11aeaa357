"""The one exception hierarchy of the engine.

The CLI maps :class:`InputError` to exit code 2 and :class:`WeightsError` to exit code 3, printing
the message as a single ``error: ...`` line (no traceback unless ``--debug``).
"""


class DeepEMhancerError(Exception):
    """Base class of every error the engine raises on purpose."""

    exit_code = 1


class InputError(DeepEMhancerError, ValueError):
    """A user-supplied file or option is unusable (message names the file and the problem)."""

    exit_code = 2


class WeightsError(DeepEMhancerError):
    """Model weights or their model card are missing, corrupt or inconsistent."""

    exit_code = 3


class DeviceError(DeepEMhancerError):
    """The requested compute device is unavailable or ran out of memory."""

    exit_code = 4
