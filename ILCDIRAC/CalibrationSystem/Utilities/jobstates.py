"""What a backend reports about a worker's job, in the backend's own four words.

The backends (local processes, DIRAC jobs) map their native states onto these; the agent's
review of the workers (``logic.health``) decides on them. Pure, so that the user's commands and
the backends do not load the service's logic to name a job state.
"""
from __future__ import annotations

RUNNING_JOB, DONE_JOB, FAILED_JOB, UNKNOWN_JOB = "running", "done", "failed", "unknown"
