"""What a run writes, in both faces: the JSON report and the visual report (HTML, plots).

Every output is checked writable before any work (:meth:`Outputs.check`) and written by one
writer (:meth:`Outputs.write`); a face only says which flags name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outputs:
    """What a run writes, and how its face spells each flag (for the one-line refusals)."""

    json: Path | None = None
    html: Path | None = None
    plots: Path | None = None
    #: output -> flag, e.g. {"json": "--fa-json"}
    flags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, json: str | Path | None = None, html: str | Path | None = None,
           plots: str | Path | None = None, *, flag_prefix: str = "--",
           base: Path | None = None) -> Outputs:
        """Outputs from the flags' values (relative to ``base`` when given)."""

        def path(value: str | Path | None) -> Path | None:
            if value is None:
                return None
            given = Path(value).expanduser()
            return given if base is None else base / given

        return cls(path(json), path(html), path(plots),
                   {name: f"{flag_prefix}{name}" for name in ("json", "html", "plots")})

    @property
    def visual(self) -> bool:
        return self.html is not None or self.plots is not None

    def flag(self, name: str) -> str:
        return self.flags.get(name, f"--{name}")

    def check(self) -> None:
        """Every output can be written: refused (a UserError naming the flag) before any work."""
        from ..files import check_writable, check_writable_folder

        for name in ("json", "html"):
            target = getattr(self, name)
            if target is not None:
                check_writable(target, what=self.flag(name))
        if self.plots is not None:
            check_writable_folder(self.plots, what=self.flag("plots"))

    def write(self, entries: Sequence[Mapping[str, Any]],
              across: Sequence[Mapping[str, Any]] = (), *,
              gated: Any = None, extra: Mapping[str, Any] | None = None) -> list[Path]:
        """The JSON report (``{"subjects": [...], "across_seeds": [...]}``, also when every
        subject failed, so no earlier run's file is left to be read) and the visual report,
        each when asked for; the paths written.  ``extra``: more top-level JSON keys.

        Another summary (a Markdown table, a comparison with an earlier run) is one more
        writer here, fed the same entries and gates, with its flag in
        :data:`fa_checks.flags.OUTPUTS`.
        """
        from ..files import write_json_atomic

        written: list[Path] = []
        if self.json is not None:
            data = {"subjects": list(entries), "across_seeds": list(across), **(extra or {})}
            written.append(write_json_atomic(self.json, data))
        if self.visual:
            from ..output.render import write_visual_report

            written += write_visual_report(
                entries, [gate for gate in across if "error" not in gate],
                html=self.html, plots=self.plots, gated=gated)
        return written


__all__ = ["Outputs"]
