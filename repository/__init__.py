"""The artifact repository core both services share: catalog, paths, HTTP API, wire contract."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-distribution")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
