"""A real Ray cluster on this machine for the tests: a head and worker nodes on the loopback.

Each node is one ``ray start --block`` in a process group of its own, with one CPU, a small
object store and its own temporary folder, so the cluster can be stopped, or one node killed,
without touching any other Ray on the machine (``ray stop`` would end every Ray process of the
user, other people's included).  Ray's worker processes put themselves in process groups of
their own, so a node is stopped by its group *and* every process descended from it.

``ray_cluster`` is a session fixture: a test module that uses it imports it
(``from ray_cluster import ray_cluster``).  Without Ray installed the fixture skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: seconds to wait for a node to come up (the machine may be busy) and for one to go away
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
#: bytes of each node's object store: the least Ray accepts is about 75 MB
OBJECT_STORE_BYTES = 80 * 1024**2

#: the environment of every node: no usage reports; no memory monitor, which judges the whole
#: machine's memory, so on a shared machine it would kill our tasks for other people's work;
#: dead nodes noticed within a few seconds (the default takes about half a minute)
NODE_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_memory_monitor_refresh_ms": "0",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "OMP_NUM_THREADS": "1",
}


def ray_executable() -> str:
    """The ``ray`` command installed beside this Python (the test's own environment)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (Linux ``/proc``), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


@dataclass
class Node:
    """One ``ray start --block`` process and the folder it keeps its sockets and logs in."""

    name: str
    ip: str
    process: subprocess.Popen
    temp_dir: Path
    pids: set[int] = field(default_factory=set)  # every process seen below it so far

    def remember_processes(self) -> None:
        self.pids.update(descendants(self.process.pid))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's process group and to every process it started."""
        self.remember_processes()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
        for pid in sorted(self.pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def living(self) -> list[int]:
        return [pid for pid in [self.process.pid, *self.pids] if _alive(pid)]

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """SIGTERM, then SIGKILL whatever is left after ``timeout``; the pids still alive."""
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.living() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.living():
            self.kill(signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while self.living() and time.monotonic() < deadline:
                time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        return self.living()


class LocalRayCluster:
    """A head node and worker nodes, each with ``cpus`` CPUs and ``gpus`` GPUs, started by
    ``ray start``.

    The head listens on a free port; each worker node gets an address of its own on the
    loopback (``127.0.0.2``, ``127.0.0.3``, ...), so that a driver in this process attaches to
    the head, never to a node a test may kill, and so that logs tell the nodes apart.
    """

    def __init__(self, *, cpus: int = 1, gpus: int = 0, root: Path | None = None) -> None:
        self.cpus = int(cpus)
        self.gpus = int(gpus)
        # short: Ray's socket paths must fit in 107 characters
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fa-ray-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head: Node | None = None
        self.workers: list[Node] = []
        self._added = 0

    # -- starting -----------------------------------------------------------------------------
    def _start(self, name: str, arguments: list[str], ip: str) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            ray_executable(), "start", "--block", "--num-cpus", str(self.cpus),
            "--num-gpus", str(self.gpus),
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--temp-dir", str(temp_dir),
            "--disable-usage-stats", *arguments,
        ]
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the node holds it
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **NODE_ENVIRONMENT}, start_new_session=True,
        )
        log.close()
        return Node(name, ip, process, temp_dir)

    def start(self, workers: int = 1) -> LocalRayCluster:
        self.head = self._start("head", [
            "--head", "--port", str(self.port), "--include-dashboard=false",
        ], ip="")
        for _ in range(workers):
            self.add_worker(wait=False)
        self.wait_for_nodes(1 + workers)
        return self

    def add_worker(self, *, wait: bool = True) -> Node:
        self._added += 1
        ip = f"127.0.0.{self._added + 1}"
        node = self._start(f"worker{self._added}",
                           ["--address", self.address, "--node-ip-address", ip], ip=ip)
        self.workers.append(node)
        if wait:
            self.wait_for_nodes(1 + len(self.live_workers()))
        return node

    def live_workers(self) -> list[Node]:
        return [node for node in self.workers if node.process.poll() is None]

    # -- watching -----------------------------------------------------------------------------
    def alive_nodes(self) -> list[dict]:
        """The cluster's own view of its nodes that are alive (``ray.nodes()``-like dicts)."""
        script = (f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR', "
                  "log_to_driver=False); print(json.dumps([{'ip': n['NodeManagerAddress'], "
                  "'id': n['NodeID']} for n in ray.nodes() if n['Alive']]))")
        try:
            done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                  text=True, timeout=60, env={**os.environ, **NODE_ENVIRONMENT})
        except subprocess.TimeoutExpired:
            return []
        if done.returncode != 0:
            return []
        import json

        return json.loads(done.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            for node in [self.head, *self.workers]:
                if node is not None and node.process.poll() not in (None, 0) and \
                        node in [self.head, *self.live_workers()]:
                    raise RuntimeError(f"ray node {node.name} exited: "
                                       f"{(self.root / f'{node.name}.log').read_text()[-2000:]}")
            nodes = self.alive_nodes()
            if len(nodes) == count:
                for node in [self.head, *self.workers]:
                    if node is not None:
                        node.remember_processes()
                return nodes
            if time.monotonic() > deadline:
                raise TimeoutError(f"the local Ray cluster has {len(nodes)} live nodes after "
                                   f"{timeout:.0f} s, not {count}; logs in {self.root}")
            time.sleep(0.5)

    # -- stopping -----------------------------------------------------------------------------
    def kill_worker(self, node: Node) -> None:
        """Kill a worker node at once, as a machine that dies would (SIGKILL, no clean-up)."""
        node.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> list[int]:
        """Stop every node (workers first); the pids that would not die (none, normally)."""
        left: list[int] = []
        for node in [*reversed(self.workers), self.head]:
            if node is not None:
                left.extend(node.stop())
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRayCluster]:
    """A head and one worker node, one CPU each, for the whole session; stopped at its end."""
    if not ray_installed():
        pytest.skip("Ray is not installed: pip install 'fa-checks[ray]' (the dev extra has it)")
    cluster = LocalRayCluster(cpus=1)
    try:
        cluster.start(workers=1)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        left = cluster.stop()
        assert not left, f"Ray processes {left} outlived the cluster"
