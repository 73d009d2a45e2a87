"""The fleet control plane: enrollment, devices and heartbeats, apps, deployments and
rollouts, served by the Distribution service process under ``/fleet/api/v1/``."""
