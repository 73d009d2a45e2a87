"""A whole topology on one machine: the Distribution service, two edges, trust, a signed demo bundle.

``python -m devstack.run`` (``make run``) starts it and waits for Ctrl-C;
``python -m devstack.demo`` (``make demo``) runs the story end to end and exits;
``python -m devstack.setup`` wires services that run elsewhere (the compose ``setup`` service).
Everything here talks to the services the way a user does: their REST APIs and CLIs.

It is also the one process harness the tests and the benchmarks share: ``services`` (an
edge or the Distribution service as a process), ``nginx`` (nginx in front of edges),
``processes`` (start, wait until ready, stop), ``wiring`` (trust and tokens over REST) and
``mmdb`` (geo databases for the access rules).
"""
