"""What the driver says while it waits, and the record of where each subject's work ran.

Each task tells a small tracker actor where it started (:class:`~.tasks.ProgressTracker`);
the driver reads that record between results and says, when anything changed, one line:

    ray: 3/15 tasks done, 2 running, 10 queued (127.0.0.1/cf3764: 2 done, 1 running; ...)

and a line for every task started again (its worker or node died).  The same record gives
each report's ``subject["ran_on"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import Log
from .plan import Job


def node_name(ran_on: Mapping[str, Any]) -> str:
    """``"127.0.0.2/cf3764"``: the node's address and the start of its id."""
    return f"{ran_on.get('node_ip')}/{str(ran_on.get('node_id'))[:6]}"


class Progress:
    """The starts of every task so far, and the lines they make."""

    def __init__(self, say: Log) -> None:
        self.say = say
        self.starts: dict[str, list[dict[str, Any]]] = {}  # job id -> where each start ran
        self._attempts: dict[str, int] = {}
        self._last = ""

    def attempts(self, job: Job) -> int:
        """How often the job was started (more than once: its worker or node died)."""
        return max(1, len(self.starts.get(job.id, [])))

    def last_node(self, job: Job) -> str | None:
        starts = self.starts.get(job.id)
        return node_name(starts[-1]) if starts else None

    def update(self, starts: Mapping[str, list[dict[str, Any]]], alive: set[str],
               jobs: Iterable[Job]) -> None:
        """Take the tracker's record and the live nodes' ids; say what changed."""
        self.starts = dict(starts)
        jobs = list(jobs)
        per_node: dict[str, dict[str, int]] = {}
        done = running = queued = 0
        for job in jobs:
            attempts = self.starts.get(job.id, [])
            # said even when the task's result landed before this look: every restart the
            # record holds is said once, so the lines and ``ran_on``'s attempts agree
            if len(attempts) > self._attempts.get(job.id, 1):
                self.say(f"ray: {job.label} started again on {node_name(attempts[-1])} "
                         f"(attempt {len(attempts)})")
            self._attempts[job.id] = max(len(attempts), self._attempts.get(job.id, 1))
            if job.result is not None or job.failed:
                done += 1
                if job.result is not None:
                    node = node_name(job.result.ran_on)
                    per_node.setdefault(node, {"done": 0, "running": 0})["done"] += 1
            elif job.ref is not None and attempts and attempts[-1]["node_id"] in alive:
                running += 1
                node = node_name(attempts[-1])
                per_node.setdefault(node, {"done": 0, "running": 0})["running"] += 1
            else:
                queued += 1
        nodes = "; ".join(f"{node}: {c['done']} done, {c['running']} running"
                          for node, c in sorted(per_node.items()))
        line = (f"ray: {done}/{len(jobs)} tasks done, {running} running, {queued} queued"
                + (f" ({nodes})" if nodes else ""))
        if line != self._last:
            self._last = line
            self.say(line)

    def ran_on(self, computed: Mapping[str, Job]) -> dict[str, dict[str, Any]]:
        """``report.subject["ran_on"]``: per job done for the subject in this call (``run``,
        ``baseline``, ``evaluation``), its task, node and how often it was started."""
        return {kind: {
            "task": job.id,
            "node_ip": job.result.ran_on.get("node_ip"),
            "node_id": job.result.ran_on.get("node_id"),
            "hostname": job.result.ran_on.get("hostname"),
            "attempts": self.attempts(job),
        } for kind, job in computed.items() if job.result is not None}


__all__ = ["Progress", "node_name"]
