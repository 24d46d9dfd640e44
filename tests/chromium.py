"""Headless Chromium driven over the DevTools protocol on a pipe: no driver package, no port.

``--remote-debugging-pipe`` makes Chromium read protocol messages (JSON, each ending in a NUL
byte) from file descriptor 3 and write its answers and events to descriptor 4, so the standard
library is the whole client.  Used by the HTML report's browser tests; install the browser with
``apt-get install -y chromium`` (Debian).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: the flags the workplace's notes ask for, plus a network that cannot reach anything
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    # any host name resolves to nothing and any proxy use fails: nothing leaves the machine
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The Chromium executable (``$FA_CHECKS_CHROMIUM``, else ``chromium`` on the PATH)."""
    explicit = os.environ.get("FA_CHECKS_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ProtocolError(RuntimeError):
    """Chromium answered a command with an error, or closed the pipe."""


class Chromium:
    """One headless browser; ``send`` runs a command and collects the events that arrive."""

    def __init__(self, executable: str, *, width: int = 1000, height: int = 1400,
                 timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="fa-checks-chromium-")
        to_browser, self._to_browser = _high(os.pipe())
        self._from_browser, from_browser = _high(os.pipe())
        # The browser takes its ends at descriptors 3 and 4; bash puts them there (which
        # needs no code in the child between fork and exec), from numbers above 9 so that
        # neither is 3 or 4 already.
        wiring = (f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser} '
                  f"{to_browser}<&- {from_browser}>&-")
        self.process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", wiring, executable, *FLAGS,
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(to_browser, from_browser),
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    # -- the protocol --------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise ProtocolError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                err = self.process.stderr.read().decode(errors="replace")[-2000:] \
                    if self.process.stderr else ""
                raise ProtocolError(f"Chromium closed the pipe: {err}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             browser: bool = False) -> dict[str, Any]:
        """Run ``method`` (in the page's session unless ``browser``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if self.session and not browser:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise ProtocolError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def wait_for(self, event: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The first event named ``event`` (already received or still to come)."""
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._read_message(deadline)
            if "method" in answer:
                self.events.append(answer)
                if answer["method"] == event:
                    return answer

    def open_page(self) -> None:
        """A fresh page target, attached in flat mode (its commands carry the session id)."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = self.send("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, browser=True)
        self.session = attached["sessionId"]

    # -- life ----------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(ProtocolError, OSError):
            self.send("Browser.close", browser=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """Both descriptors moved to numbers above 9."""
    moved = []
    for fd in fds:
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return moved[0], moved[1]
