"""The wire contract: what travels between the Distribution service, edges and devices.

Pure and self-contained (the standard library and python-gnupg only), so a device's
agent can read manifests and check signatures without any server code.
"""
