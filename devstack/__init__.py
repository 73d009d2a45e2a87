"""A whole topology on one machine: the Distribution service, two edges, trust, a signed demo bundle.

``python -m devstack.run`` (``make run``) starts it and waits for Ctrl-C;
``python -m devstack.demo`` (``make demo``) runs the story end to end and exits;
``python -m devstack.setup`` wires services that run elsewhere (the compose ``setup`` service).
Everything here talks to the services the way a user does: their REST APIs and CLIs.
"""
