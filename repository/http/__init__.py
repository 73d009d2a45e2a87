"""The Artifactory-compatible artifact HTTP API, mounted under ``/artifactory/`` by each service."""
