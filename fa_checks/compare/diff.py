"""Two reports side by side: subjects matched by id, methods matched across their seeds.

A *regression* is a subject whose verdict gets worse (a diagnostic fails that passed before),
or a figure that moves the wrong way by more than its tolerance, and, with two or more seeds
on each side, by more than seed noise explains (a one-sided Welch test over the method's
seeds).  A figure of a subject that belongs to such a method is judged over the seeds, not per
subject: one seed's accuracy moves by more than a point from noise alone.  Subjects on one side
only are listed, never a regression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..report import Report
from ..values import printable
from .rules import FIGURES, FailRule, Figure, figure_values, worse_change
from .stats import mean, welch_worse_p

Item = Report | Mapping[str, Any]


@dataclass
class Change:
    """One figure of one row: the values on its comparison scale, before and after."""

    key: str
    before: list[float]
    after: list[float]
    #: how much worse the (mean) figure got; negative: better; None: not comparable
    worse_by: float | None = None
    p_value: float | None = None
    regression: bool = False

    @property
    def figure(self) -> Figure:
        return FIGURES[self.key]

    def cell(self) -> str:
        figure = self.figure
        before = figure.shown(mean(self.before)) if self.before else "n/a"
        after = figure.shown(mean(self.after)) if self.after else "n/a"
        return f"{before} -> {after}" + (" !" if self.regression else "")


@dataclass
class Row:
    """A subject (``level`` "subject") or a method over its seeds (``level`` "method")."""

    label: str
    level: str
    seeds: tuple[int, int]
    verdicts: tuple[str, str]
    changes: dict[str, Change] = field(default_factory=dict)
    #: the diagnostics that fail now and did not before (a verdict regression)
    newly_failing: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)


@dataclass
class Regression:
    """One regression, as a sentence: subject, figure, before -> after, and why it counts."""

    label: str
    figure: str
    before: str
    after: str
    why: str

    def sentence(self) -> str:
        return printable(f"{self.label}: {self.figure} {self.before} -> {self.after}: "
                         f"{self.why}")


@dataclass
class Comparison:
    base_name: str
    new_name: str
    rule: FailRule
    rows: list[Row]
    only_base: list[str]
    only_new: list[str]
    #: subjects that could not be evaluated on a side: "id (base)" / "id (new)"
    errors: list[str]
    regressions: list[Regression]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def keys(self) -> list[str]:
        """The figures shown: D4 only when some report carries it."""
        return [k for k in FIGURES
                if k != "D4" or any(r.changes[k].before or r.changes[k].after for r in self.rows)]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the comparison table (text cells, as every face draws it)."""
        keys = self.keys()
        header = ["subject", "seeds", *(FIGURES[k].title for k in keys), "verdict"]
        rows = []
        for row in self.rows:
            name = row.label if row.level == "subject" else f"{row.label} (over seeds)"
            seeds = f"{row.seeds[0]} -> {row.seeds[1]}"
            verdict = f"{row.verdicts[0]} -> {row.verdicts[1]}" + (" !" if row.newly_failing
                                                                    else "")
            rows.append([printable(name), seeds, *(row.changes[k].cell() for k in keys),
                         verdict])
        return header, rows

    def notes(self) -> list[str]:
        """Subjects on one side only, and those that could not be evaluated."""
        notes: list[str] = []
        if self.only_base:
            notes.append(f"only in {self.base_name}: {', '.join(self.only_base)}")
        if self.only_new:
            notes.append(f"only in {self.new_name}: {', '.join(self.only_new)}")
        if self.errors:
            notes.append(f"not comparable (could not be evaluated): {', '.join(self.errors)}")
        return [printable(n) for n in notes]

    def summary(self) -> str:
        count = len(self.regressions)
        if not count:
            return (f"no regression of {self.new_name} against {self.base_name} "
                    f"(counted: {self.rule.describe()})")
        return (f"{count} regression{'s' if count != 1 else ''} of {self.new_name} against "
                f"{self.base_name} (counted: {self.rule.describe()})")

    def to_dict(self) -> dict[str, Any]:
        header, rows = self.table()
        return {"base": self.base_name, "new": self.new_name, "rule": self.rule.describe(),
                "header": header, "rows": rows, "notes": self.notes(),
                "regressions": [r.sentence() for r in self.regressions],
                "summary": self.summary()}


def _by_id(items: Sequence[Item], side: str) -> dict[str, Item]:
    found: dict[str, Item] = {}
    for item in items:
        key = item.id if isinstance(item, Report) else str(item.get("id") or "?")
        if key in found:
            raise ConfigError(f"the {side} report holds subject {key!r} twice; compare reports "
                              "of one run each")
        found[key] = item
    return found


def _verdict(item: Item | None) -> str:
    if item is None:
        return "-"
    return item.verdict if isinstance(item, Report) else "ERROR"


def _counts(reports: Sequence[Report]) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.verdict] = counts.get(report.verdict, 0) + 1
    return ", ".join(f"{v} x{n}" for v, n in sorted(counts.items()))


def compare_reports(base: Sequence[Item], new: Sequence[Item], *, rule: FailRule,
                    base_name: str = "base", new_name: str = "new") -> Comparison:
    """The comparison of ``new`` against ``base`` (reports and error entries, as
    :func:`fa_checks.report.read_entries` gives them), judged by ``rule``."""
    from ..evaluation import seed_group

    before, after = _by_id(base, "base"), _by_id(new, "new")
    groups: dict[str, tuple[list[Report], list[Report]]] = {}
    for side, items in enumerate((before, after)):
        for item in items.values():
            label = seed_group(item.subject) if isinstance(item, Report) else None
            if label is not None:
                groups.setdefault(label, ([], []))[side].append(item)
    over_seeds = {label for label, (b, a) in groups.items() if len(b) >= 2 and len(a) >= 2}

    rows: list[Row] = []
    regressions: list[Regression] = []
    errors = []
    for key, new_item in after.items():
        if key not in before:
            continue
        old_item = before[key]
        for side, item in (("base", old_item), ("new", new_item)):
            if not isinstance(item, Report):
                errors.append(f"{key} ({side})")
        if not (isinstance(old_item, Report) and isinstance(new_item, Report)):
            continue
        row = Row(key, "subject", (1, 1), (old_item.verdict, new_item.verdict))
        judged = seed_group(new_item.subject) not in over_seeds
        for figure_key in FIGURES:
            row.changes[figure_key] = _change(figure_key, [old_item], [new_item], rule,
                                              judge=judged)
        if rule.verdict:
            row.newly_failing = [d for d in new_item.failures if d not in old_item.failures]
        rows.append(row)
        regressions += _row_regressions(row, rule, new_item)
    for label in sorted(over_seeds, key=lambda g: min(_order(after, r) for r in groups[g][1])):
        old_group, new_group = groups[label]
        row = Row(label, "method", (len(old_group), len(new_group)),
                  (_counts(old_group), _counts(new_group)))
        for figure_key in FIGURES:
            row.changes[figure_key] = _change(figure_key, old_group, new_group, rule, judge=True)
        rows.append(row)
        regressions += _row_regressions(row, rule, None)
    return Comparison(
        base_name=base_name, new_name=new_name, rule=rule, rows=rows,
        only_base=[k for k in before if k not in after],
        only_new=[k for k in after if k not in before],
        errors=errors, regressions=regressions,
    )


def _order(items: Mapping[str, Item], report: Report) -> int:
    return list(items).index(report.id) if report.id in items else len(items)


def _change(key: str, old: list[Report], new: list[Report], rule: FailRule, *,
            judge: bool) -> Change:
    change = Change(key, figure_values(old, key), figure_values(new, key))
    if not (change.before and change.after):
        return change
    change.worse_by = worse_change(key, mean(change.before), mean(change.after))
    if len(change.before) >= 2 and len(change.after) >= 2:
        change.p_value = welch_worse_p(change.before, change.after,
                                       higher_is_better=change.figure.higher_is_better)
    tolerance = rule.tolerances.get(key)
    if judge and tolerance is not None and change.worse_by > tolerance:
        change.regression = change.p_value is None or change.p_value < rule.alpha
    return change


def _row_regressions(row: Row, rule: FailRule, report: Report | None) -> list[Regression]:
    found = []
    if row.newly_failing and report is not None:
        sentences = dict(s.split(": ", 1) for s in report.failing_sentences() if ": " in s)
        why = "; ".join(f"{d} now fails" + (f" ({sentences[d]})" if d in sentences else "")
                        for d in row.newly_failing)
        found.append(Regression(row.label, "verdict", row.verdicts[0], row.verdicts[1], why))
    for key, change in row.changes.items():
        if not change.regression:
            continue
        figure = change.figure
        tolerance = figure.tolerance_text(rule.tolerances[key])
        moved = figure.change_text(mean(change.before), mean(change.after))
        why = f"{moved}, worse by more than the {tolerance} tolerance"
        if change.p_value is not None:
            why += (f" and beyond seed noise (one-sided Welch p={change.p_value:.2g} < "
                    f"{rule.alpha:g}, {row.seeds[0]} vs {row.seeds[1]} seeds)")
        else:
            why += " (one seed on a side: the tolerance alone decides)"
        label = row.label if row.level == "subject" else f"{row.label} (over seeds)"
        found.append(Regression(label, figure.title, figure.shown(mean(change.before)),
                                figure.shown(mean(change.after)), why))
    return found


__all__ = ["printable", "Change", "Comparison", "Regression", "Row", "compare_reports"]
