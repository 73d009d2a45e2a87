"""``distribution fleet ...``: the fleet commands, calling the service's /fleet/api/v1 as any client would."""

from __future__ import annotations

import click

from .cli_devices import COMMANDS as DEVICE_COMMANDS
from .cli_rollouts import COMMANDS as ROLLOUT_COMMANDS


@click.group()
def fleet() -> None:
    """Devices, enrollment tokens, apps and deployments."""


for _command in (*DEVICE_COMMANDS, *ROLLOUT_COMMANDS):
    fleet.add_command(_command)
