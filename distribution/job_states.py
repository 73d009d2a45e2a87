"""A job's state and kind, as the REST API shows them (JFrog's strings, never others).

Kept apart from the job store (``distribution/jobs.py``) so that what reads an answer (the CLI's
progress lines) needs neither the store nor its database layer.
"""

from __future__ import annotations

NOT_DISTRIBUTED = "Not distributed"
IN_QUEUE = "In queue"
IN_PROGRESS = "In progress"
COMPLETED = "Completed"
FAILED = "Failed"
RUNNING = (IN_QUEUE, IN_PROGRESS)
JOB_STATES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED)
DISTRIBUTE = "distribute"
DELETE = "delete_release_bundle_version"
ABORTED = "aborted"
