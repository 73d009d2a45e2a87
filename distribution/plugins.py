"""Parts served by the Distribution service process that the service itself does not know.

The fleet control plane (``fleet/``) builds on this service, and this service never
imports it: it is found through the ``distribution.plugins`` entry point group (setup.cfg)
and asked for its tables, its routes and background work, and its CLI commands. A
plugin is an object (usually a module) with:

- ``migrations``: a tuple of ``sqlite_utils.Migrations`` applied with the service's own;
- ``setup_app(app)``: adds routes and cleanup contexts to the service's app, after the
  service's own (so the plugin may use the service's app keys);
- optionally ``cli``, a click command added to ``distribution``, and ``commands``, a tuple
  of more click commands added beside it.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

GROUP = "distribution.plugins"


@cache
def plugins() -> tuple[Any, ...]:
    """The installed plugins, in name order, loaded once."""
    return tuple(ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name))
