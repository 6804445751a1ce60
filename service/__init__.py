"""Vigil service: HTTP layer, inference core, I/O logging and metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vigil")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
