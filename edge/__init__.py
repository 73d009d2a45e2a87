"""The edge node: read-only repos, verified storage, fast downloads."""

from repository import __version__

__all__ = ["__version__"]
