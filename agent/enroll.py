"""Enrollment: an enrollment token buys this device its own credential and the keys it trusts.

Nothing is written unless the control plane said yes: then the signing keys go into
the device's GnuPG home and, last, ``identity.json`` (0600, in a 0700 directory), so a
device with an identity always has its keys.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from wire.fleet import ENROLL, Enrollment, EnrollRequest

from . import __version__
from .http import Http
from .identity import Identity, save_identity
from .trust import DeviceTrust


class AlreadyEnrolled(Exception):
    pass


def enroll(http: Http, server: str, token: str, name: str, tags: dict[str, str], data_dir: Path) -> Identity:
    identity_path = data_dir / "identity.json"
    if identity_path.exists():
        raise AlreadyEnrolled(f"{data_dir} already holds an identity; use another data dir to enroll again")
    request = EnrollRequest(token=token, name=name, tags=tags, agent_version=__version__)
    EnrollRequest.from_json(request.to_json())  # the same checks the server makes, before any call
    answer = Enrollment.from_json(http.call("POST", server.rstrip("/") + ENROLL, request.to_json()))
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    trust = DeviceTrust(data_dir)
    try:
        trust.install(answer.signing_keys)
    except Exception:
        shutil.rmtree(trust.home, ignore_errors=True)
        trust.state_path.unlink(missing_ok=True)
        raise
    identity = Identity(
        server=server.rstrip("/"),
        device_id=answer.device_id,
        name=answer.name,
        group=answer.group,
        credential=answer.credential,
        poll_interval=answer.poll_interval,
    )
    save_identity(identity_path, identity)
    return identity
