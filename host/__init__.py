"""ugate: gated-compression always-on models, split between a microcontroller and an NPU.

The data path, one module a stage: data -> model/train -> export -> (device) -> npu -> report.
"""
__version__ = "0.1.0"


class UgateError(Exception):
    """A user's mistake or a device's bad reply: the CLI prints it as one line and exits 2.
    Anything else is a bug and keeps its traceback."""
