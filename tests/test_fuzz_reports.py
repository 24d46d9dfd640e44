"""Fuzzing report files and cache entries: every mutation of a valid one ends in a verdict
computed by us or a one-line refusal, never a traceback and never a PASS that the measured
figures, judged against the thresholds in force, do not give.

Hypothesis draws a consistent report (hidden norms, gradient norms, accuracies) and then
changes one field anywhere in it to a hostile value (a non-finite or huge number, a string, a
list, a nested object, a flag), or edits its bytes.  The independent check below recomputes
the verdict from the figures the way the protocol defines it, without fa-checks' code.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hostile import entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fa_checks.cache.store import ArtifactCache
from fa_checks.claims import ClaimRefused, InForce, check_cached_report, judge_entry
from fa_checks.cli.main import main
from fa_checks.report import DEFAULT_GRAD_FLOOR, DEFAULT_MAX_GROWTH, DEFAULT_MIN_MARGIN_PP

FAST = settings(max_examples=60, deadline=timedelta(seconds=10),
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

norm = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False)
fraction = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def reports(draw: Any) -> dict[str, Any]:
    layers = draw(st.integers(min_value=1, max_value=5))
    return entry(norms=draw(st.lists(norm, min_size=layers, max_size=layers)),
                 grads=draw(st.lists(norm, min_size=layers, max_size=layers)),
                 test_acc=draw(fraction), baseline=draw(fraction))


hostile_values = st.one_of(
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -1.0, 0.0, 1e-300,
                     "Infinity", "-Infinity", "NaN", "PASS", None, True, False, [], {},
                     10**400, "\x1b[2J\u202e"]),
    st.floats(), st.integers(), st.text(max_size=8),
    st.lists(st.floats(), max_size=4),
    st.recursive(st.none(), lambda inner: st.lists(inner, max_size=3), max_leaves=20),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _set(value: Any, path: tuple, new: Any) -> None:
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


@st.composite
def mutated(draw: Any) -> dict[str, Any]:
    report = draw(reports())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(report)))
        _set(report, path, draw(hostile_values))
    return report


def honestly_passes(data: dict[str, Any]) -> bool:
    """Whether the measured figures pass the default thresholds (the protocol's definition,
    written again here without fa-checks' code)."""
    norms = data["D1"]["hidden_norms"]
    grads = data["D2"]["grad_norms"]
    test_acc, baseline = data["test_acc"], data["D3"]["baseline_acc"]
    numbers = [*norms, *grads, test_acc, baseline]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in numbers):
        return False
    growth = [b / a if a else (1.0 if b == 0 else math.inf)
              for a, b in zip(norms, norms[1:], strict=False)]
    return (all(g <= DEFAULT_MAX_GROWTH for g in growth) and grads[-1] >= DEFAULT_GRAD_FLOOR
            and round(100 * (test_acc - baseline), 9) >= DEFAULT_MIN_MARGIN_PP)


@FAST
@given(data=mutated())
def test_a_mutated_report_is_judged_by_us_or_refused(data):
    try:
        judged = judge_entry(data, InForce(), where="fuzz.json: subjects[0]")
    except ClaimRefused as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.json: subjects[0]")
        return
    if judged.report.passed:
        assert honestly_passes(data), data


@settings(max_examples=25, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_a_mutated_report_file_gives_an_honest_exit_code(tmp_path, capsys, data):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"subjects": [data]}))
    code = main(["report", str(path), "-q"])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in out + err
    assert "\x1b" not in out + err
    if code == 2:
        assert len(err.strip().splitlines()) == 1
    if code == 0:
        assert honestly_passes(data), data


# -- cache entries ---------------------------------------------------------------------------------
def _redigest(cache: ArtifactCache, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    Path(f"{path}.sha256").write_text(json.dumps({
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "binding": cache.binding("report", path)}))


edits = st.one_of(
    st.tuples(st.just("value"), mutated()),
    st.tuples(st.just("bytes"), st.lists(st.tuples(st.integers(min_value=0),
                                                   st.integers(min_value=0, max_value=255)),
                                         min_size=1, max_size=4)),
    st.tuples(st.just("binding"), st.sampled_from(["kind", "name", "version", "schema", "spec"])),
)


@settings(max_examples=40, deadline=timedelta(seconds=10),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stored=reports(), edit=edits, redigest=st.booleans())
def test_a_tampered_cache_entry_is_served_only_when_it_is_honest(tmp_path_factory, stored,
                                                                 edit, redigest):
    root = tmp_path_factory.mktemp("cache")
    lines: list[str] = []
    cache = ArtifactCache(root, log=lines.append)
    in_force = InForce()
    spec = {"subject": "s", "content": "0" * 20}

    def validate(value):
        return check_cached_report(value, in_force)

    fallback = entry(norms=(1.0, 1e9), grads=(1e-30, 1e-30), test_acc=0.1, baseline=0.9,
                     ident="recomputed")
    cache.get_or_create_json("report", spec, lambda: stored, validate=validate)
    path = cache.path_for("report", spec, ".json")
    text = json.loads(path.read_text())
    kind, change = edit
    if kind == "value":
        text["value"] = change
        data = json.dumps(text).encode()
    elif kind == "binding":
        text["binding"][change] = "someone else's"
        data = json.dumps(text).encode()
    else:
        data = bytearray(path.read_bytes())
        for position, byte in change:
            data[position % len(data)] = byte
        data = bytes(data)
    if redigest:
        _redigest(cache, path, data)
    else:
        path.write_bytes(data)
    served = cache.get_or_create_json("report", spec, lambda: fallback, validate=validate)
    assert all("\n" not in line for line in lines)
    if served == fallback:
        return
    report = check_cached_report(served, in_force)  # what evaluate_subject does with it
    if report.passed:
        assert honestly_passes(served), served


@pytest.mark.parametrize("layers", [1, 3])
def test_an_honest_entry_round_trips(layers):
    honest = entry(norms=[1.0] * layers, grads=[0.1] * layers, test_acc=0.9, baseline=0.5)
    assert judge_entry(honest, InForce(), where="x").report.passed
    assert check_cached_report(honest, InForce()).passed
