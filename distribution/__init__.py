"""The Distribution service: source repos, signed Release Bundles, pushes to edges."""

from repository import __version__

__all__ = ["__version__"]
