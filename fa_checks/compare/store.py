"""A store of accepted reports, as pytest-benchmark keeps its saved runs.

``--autosave`` (``--fa-autosave``) writes the run's JSON report into the store (default
``.fa-checks/reports`` under the folder the command runs in; ``--store`` / ``--fa-store`` or
``$FA_CHECKS_STORE`` name another) as ``NNNN_<UTC time>_<git commit>_<settings>.json``::

    .fa-checks/reports/0003_20261207T131500Z_2c69ffd0_bp_resmlp_mnist1d_e3_s2.json

``compare`` takes a file, a saved name (or the start of one, e.g. ``0003``) or ``last``.  A
saved report is an ordinary report file with a ``saved`` record beside its subjects.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

STORE_ENV = "FA_CHECKS_STORE"
DEFAULT_STORE = Path(".fa-checks") / "reports"
NAME = re.compile(r"^(\d{4,})_[A-Za-z0-9._=+-]+\.json$")
LAST = "last"


def store_root(given: str | None, here: str | Path = ".") -> Path:
    """The store folder: the flag, else ``$FA_CHECKS_STORE``, else ``.fa-checks/reports``
    under ``here``."""
    chosen = given or os.environ.get(STORE_ENV, "").strip() or None
    return Path(here) / (chosen if chosen else DEFAULT_STORE)


def git_commit(here: str | Path = ".") -> str | None:
    """The checked-out commit (8 hex digits) when ``here`` is in a git work tree."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], cwd=here, timeout=10,
                              capture_output=True, text=True, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{4,40}", text) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text).strip("-")[:24] or "x"


def settings_name(entries: Sequence[Mapping[str, Any]]) -> str:
    """A short name for what the run checked: methods, arch, data, epochs, seeds."""
    def values(key: str) -> list[str]:
        found = []
        for entry in entries:
            subject = entry.get("subject") if isinstance(entry.get("subject"), Mapping) else {}
            value = subject.get(key, entry.get(key))
            if value is not None and str(value) not in found:
                found.append(str(value))
        return found

    parts = ["+".join(values("method")[:3]) or "checkpoints", "+".join(values("arch")[:2]),
             "+".join(values("data")[:2])]
    epochs = values("epochs")
    if epochs:
        parts.append("e" + "+".join(epochs[:2]))
    seeds = values("seed")
    if seeds:
        parts.append(f"s{len(seeds)}")
    return "_".join(_slug(p) for p in parts if p)


class ReportStore:
    """The saved reports in one folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def saved(self) -> list[Path]:
        """The saved reports, oldest first (by their counter)."""
        try:
            names = [entry.name for entry in os.scandir(self.root)
                     if entry.is_file(follow_symlinks=False) and NAME.match(entry.name)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"{self.root}: cannot read the report store "
                              f"({exc.strerror or exc})") from None
        return [self.root / n for n in sorted(names, key=lambda n: (int(NAME.match(n)[1]), n))]

    def save(self, data: Mapping[str, Any], *, here: str | Path = ".",
             now: float | None = None) -> Path:
        """Write ``data`` (``{"subjects": [...], ...}``) as the next saved report."""
        from ..files import json_safe

        entries = [e for e in data.get("subjects", []) if isinstance(e, Mapping)]
        moment = time.gmtime(time.time() if now is None else now)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", moment)
        commit = git_commit(here)
        payload = dict(data)
        payload["saved"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", moment),
                            "commit": commit, "settings": settings_name(entries)}
        import json

        text = json.dumps(json_safe(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.saved()
        counter = int(NAME.match(existing[-1].name)[1]) + 1 if existing else 1
        tail = f"{stamp}_{commit or 'nogit'}_{settings_name(entries)}.json"
        for _ in range(100):  # another run may take the same counter: never overwrite it
            target = self.root / f"{counter:04d}_{tail}"
            try:
                with open(target, "x", encoding="utf-8") as handle:
                    handle.write(text)
                return target
            except FileExistsError:
                counter += 1
        raise ConfigError(f"{self.root}: could not find a free name for the saved report")

    def resolve(self, ref: str) -> Path:
        """The report ``ref`` names: an existing file, ``last``, a saved name or its start."""
        text = ref.strip()
        if not text:
            raise ConfigError("the base report is empty: give a file, a saved name or 'last'")
        if text != LAST and (os.sep in text or Path(text).exists()):
            return Path(text)
        saved = self.saved()
        if not saved:
            raise ConfigError(f"no saved report in {self.root} to compare with ({text!r}); "
                              "save one first with --autosave, or give a report file")
        if text == LAST:
            return saved[-1]
        found = [p for p in saved if text.isdigit() and int(NAME.match(p.name)[1]) == int(text)]
        if not found:
            found = [p for p in saved if p.name == text or p.name.startswith(text)]
        if len(found) == 1:
            return found[0]
        names = ", ".join(p.name for p in (found or saved)[-3:])
        what = "names several saved reports" if found else "names no saved report"
        raise ConfigError(f"{text!r} {what} in {self.root} (e.g. {names}); give a file, a "
                          "saved name, its number or 'last'")


__all__ = ["DEFAULT_STORE", "LAST", "STORE_ENV", "ReportStore", "git_commit", "settings_name",
           "store_root"]
