"""What the settings ask of Ray, checked before any work, and the connection to the cluster.

Every check here runs without connecting (the plugin makes them while pytest configures, so a
bad value is a usage error): the address's form, the resources a task asks for, the device,
and whether Ray is installed at all.  :func:`connection` is the only place that knows where
the cluster is (``ray.init``); :func:`rules_environment` sends a user's ``module:Class`` rules
to the workers with Ray's runtime environment.  Ray is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import values
from ..errors import ConfigError, Log, one_line
from ..limits import LIMITS_VARIABLE

if TYPE_CHECKING:
    from ..settings import Settings
    from ..subjects import Subject

INSTALL_HINT = "pip install 'fa-checks[ray]'"
#: seconds to wait for a ``host:port`` to answer before ``ray.init`` (which retries for minutes)
REACHABLE_TIMEOUT = 5.0



class RayError(ConfigError):
    """Ray is not installed or no cluster answers, or a Ray setting is out of range."""


@dataclass(frozen=True)
class Resources:
    """What every task asks the cluster for, and how often Ray restarts it when its worker or
    node dies."""

    gpus: float
    cpus: int
    retries: int

    def task_options(self) -> dict[str, Any]:
        # SPREAD: Ray's default prefers the driver's node and, measured on a two-node
        # cluster, left the other node idle while tasks queued on the busy one
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": self.retries,
                "scheduling_strategy": "SPREAD"}


def check_settings(settings: Settings, *, max_retries: int = 3) -> Resources:
    """The resources of each task; raises :class:`RayError` for a malformed address, a bad
    resource or device, or a missing Ray.  Connects to nothing."""
    check_address(settings.ray_address, settings.flag("ray"))
    resources = check_resources(settings, max_retries)
    if not ray_installed():
        raise RayError(f"{settings.flag('ray')} needs Ray: {INSTALL_HINT}")
    return resources


def ray_installed() -> bool:
    """Whether Ray can be imported, found without importing it (that takes a second)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def check_address(address: str | None, flag: str) -> None:
    """``None`` (Ray's own choice), ``auto``, ``host:port`` or ``ray://host[:port]``."""
    if address is None or address == "auto":
        return
    text = str(address).strip()
    client = text.startswith("ray://")
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    if not sep and client:
        host, port = text.removeprefix("ray://"), "0"
    if host and port.isdigit() and "/" not in host and " " not in host:
        return
    raise RayError(f"{flag} {address!r} is not a Ray address: use auto (the cluster `ray "
                   "start` began on this machine), host:port (the address `ray start --head` "
                   "printed) or ray://host:port")


def check_resources(settings: Settings, max_retries: int) -> Resources:
    def checked(parse: Callable[[Any], Any], value: Any, flag: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise RayError(f"{settings.flag(flag)} {value}: {exc}") from None

    gpus = checked(values.non_negative_float, settings.gpus_per_run, "gpus-per-run")
    if gpus > 1 and not float(gpus).is_integer():
        raise RayError(f"{settings.flag('gpus-per-run')} {gpus:g}: above 1 it must be a whole "
                       "number of GPUs (Ray shares a GPU only as a fraction of one)")
    cpus = checked(values.positive_int, settings.cpus_per_run, "cpus-per-run")
    if int(max_retries) < 0:
        raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
    device = str(settings.device).strip().lower()
    if device.startswith("cuda:"):
        raise RayError(f"{settings.flag('device')} {settings.device}: on Ray each task gets "
                       f"its GPU from Ray; use {settings.flag('device')} cuda or auto")
    if device == "cuda" and gpus == 0:
        raise RayError(f"{settings.flag('device')} cuda on Ray needs GPUs for each task: "
                       f"give {settings.flag('gpus-per-run')} (e.g. 0.25)")
    return Resources(gpus=float(gpus), cpus=int(cpus), retries=int(max_retries))


def import_ray(flag: str) -> Any:
    try:
        import ray
    except ImportError:
        raise RayError(f"{flag} needs Ray: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str | None, flag: str,
                    timeout: float = REACHABLE_TIMEOUT) -> None:
    """Refuse at once a ``host:port`` where nothing listens, or where what listens is not
    Ray's GCS (``ray.init`` retries for minutes, and waits without end on a server that
    accepts and says nothing): a gRPC server answers HTTP/2's preface with a SETTINGS frame
    within ``timeout`` seconds."""
    from ..values import printable

    text = str(address or "")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or "://" in text:
        return  # auto, ray://..., $RAY_ADDRESS: Ray's own look-up
    shown = printable(address)
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)),
                                      timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(_HTTP2_PREFACE)
            answer = _read_some(connection, 9, timeout)
    except (OSError, ValueError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
            "no answer" if isinstance(exc, TimeoutError) else type(exc).__name__)
        raise RayError(f"{flag} {shown}: no Ray cluster answers there ({reason}); start one "
                       "with `ray start --head` or give the address it prints") from None
    if len(answer) < 9 or answer[3] != 0x04:  # an HTTP/2 frame header: type 4 is SETTINGS
        raise RayError(f"{flag} {shown}: something listens there, but it is not a Ray cluster "
                       f"(it did not answer as Ray's gRPC server does within {timeout:g} s); "
                       "give the address `ray start --head` prints")


#: HTTP/2's client preface and an empty SETTINGS frame: what a gRPC client sends first
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _read_some(connection: socket.socket, count: int, timeout: float) -> bytes:
    """Up to ``count`` bytes, within ``timeout`` seconds in all (a server that trickles
    bytes cannot hold the connection open)."""
    import time

    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        connection.settimeout(left)
        try:
            chunk = connection.recv(count - len(data))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def rules_environment(subjects: Sequence[Subject], given: Mapping[str, Any] | None
                      ) -> dict[str, Any]:
    """``given`` plus the top-level module or package of every ``module:Class`` rule and
    ``module:callable`` model factory, as
    ``py_modules``: Ray uploads them when the driver connects, and each worker imports its
    own copy.  Rules registered by entry point, and fa-checks itself, must be installed on
    every node.  The limits' override (``FA_CHECKS_LIMITS``) goes with them as an
    environment variable: a worker refuses and allows what the driver does."""
    env = dict(given or {})
    override = os.environ.get(LIMITS_VARIABLE)
    if override is not None:
        env["env_vars"] = {**dict(env.get("env_vars") or {}), LIMITS_VARIABLE: override}
    modules = list(env.get("py_modules") or [])
    named = {s.method for s in subjects if s.method and ":" in s.method}
    named |= {s.arch for s in subjects if ":" in s.arch}  # a user's model factory goes too
    for name in sorted(named):
        top = importlib.import_module(name.partition(":")[0].split(".")[0])
        if top not in modules:
            modules.append(top)
    if modules:
        env["py_modules"] = modules
    return env


@contextlib.contextmanager
def connection(ray: Any, address: str | None, env: Mapping[str, Any], flag: str,
               say: Log) -> Iterator[None]:
    """Connected to the cluster at ``address`` for the block, then disconnected.  A process
    already connected keeps its connection (and Ray its runtime environment)."""
    if ray.is_initialized():
        if env.get("py_modules") and not ray.get_runtime_context().runtime_env.get(
                "py_modules"):
            say("ray: this process was connected to Ray before; the rules' modules reach the "
                "workers only if installed there or given to ray.init(runtime_env="
                "{'py_modules': [...]})")
        yield
        return
    check_reachable(address, flag)
    try:
        # a runtime_env with local modules is uploaded only for a whole job (ray.init)
        ray.init(address=address, runtime_env=dict(env) or None, logging_level="ERROR",
                 log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayError(f"{flag} {address}: no Ray cluster to connect to ({one_line(exc)}); "
                       "start one with `ray start --head` or give its address") from None
    try:
        yield
    finally:
        ray.shutdown()


def describe_cluster(ray: Any) -> str:
    """``"2 nodes (2 CPUs, 0 GPUs)"``."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} "
            f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs)")


def fits_nowhere(ray: Any, resources: Resources) -> str | None:
    """A sentence when no live node has room for one task (the tasks then wait: an autoscaler
    may add one, as a GPU group that scales from zero does), else None."""
    wanted = {"CPU": resources.cpus, "GPU": resources.gpus}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0) >= v for k, v in wanted.items() if v) for node in nodes):
        return None
    return (f"ray: no node has {resources.cpus} CPUs and {resources.gpus:g} GPUs for a task; "
            "the tasks wait until one joins the cluster")


__all__ = ["INSTALL_HINT", "RayError", "Resources", "check_address", "check_reachable",
           "check_resources", "check_settings", "connection", "describe_cluster",
           "fits_nowhere", "import_ray", "ray_installed", "rules_environment"]
