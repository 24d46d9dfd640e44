"""Fuzzing checkpoints: every mutation of a valid file is evaluated or refused in one sentence.

Hypothesis mutates a small valid checkpoint two ways: its bytes (overwritten, cut, inserted)
and its structure (a field, a tensor, a key replaced by a hostile value; saved in the zip or the
legacy format).  Each mutated file goes to a worker process that does what a user's run does:
``load_checkpoint`` -> ``build_model`` -> ``build_method`` -> ``diagnostics.protocol.evaluate`` on a
small batch.  Every case must end in a :class:`~fa_checks.diagnostics.protocol.Report` or a one-line
:class:`~fa_checks.errors.UserError` that names the file, and

* **in bounded memory**: the worker runs under ``RLIMIT_DATA`` (its heap and anonymous maps, torch's
  tensors included) of 1 GiB above what it holds after importing torch, and a refusal that is
  really an allocation failure ("out of memory") counts as a failure of the bound, not a refusal;
* **in bounded time**: hypothesis' deadline per case, and a hang (no answer in 60 s) fails;
* **importing nothing the file names**: modules planted on the worker's path leave a marker when
  imported, and the standard library's ``this`` and ``test.autotest`` must stay unimported;
* **and a byte change is never silent** in the zip format: a file whose bytes were changed either
  is refused or loads exactly the original tensors and fields (the change hit no content).  The
  legacy format has no checksum, so there a changed weight may be read (its documented limit).

The default run is a few seconds; ``-m slow`` runs the larger profile.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fa_checks.checkpoint import save_checkpoint
from fa_checks.methods import get_method
from fa_checks.models import build_model

FAST = settings(max_examples=12, deadline=timedelta(seconds=20),
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=400, deadline=timedelta(seconds=20),
                suppress_health_check=[HealthCheck.too_slow])
ANSWER_TIMEOUT_S = 60
MEMORY_HEADROOM = 2**30
CANARY = "fuzzcanary_rule"
NEVER_IMPORTED = ("this", "test.autotest", CANARY)


# -- the worker: what a user's run does with a file -------------------------------------------
def _data_in_use() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def _fingerprint(checkpoint: Any) -> str:
    """The loaded content: every tensor's bytes and every field, as one digest."""
    digest = hashlib.sha256()
    for state in (checkpoint.model_state, checkpoint.method_state):
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].contiguous().flatten().view(torch.uint8).numpy().tobytes())
    fields = (checkpoint.arch, checkpoint.arch_kwargs, checkpoint.method,
              checkpoint.method_options, checkpoint.data, checkpoint.seed, checkpoint.epochs,
              checkpoint.optimizer, checkpoint.test_acc, checkpoint.history)
    digest.update(repr(fields).encode())
    return digest.hexdigest()


def _evaluate_file(path: str) -> tuple[str, str]:
    from fa_checks.checkpoint import load_checkpoint
    from fa_checks.diagnostics.protocol import Report, evaluate
    from fa_checks.errors import UserError

    try:
        checkpoint = load_checkpoint(path)
        fingerprint = _fingerprint(checkpoint)
        model = checkpoint.build_model()
        method = checkpoint.build_method(model)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(8, *checkpoint.input_shape, generator=generator)
        y = torch.arange(8) % checkpoint.num_classes
        report = evaluate(model, x, y, baseline_acc=0.3, method=method, directions=4,
                          null_draws=2)
        assert isinstance(report, Report)
        report.to_dict()
        return "evaluated", fingerprint
    except UserError as exc:
        return "refused", str(exc)
    except BaseException:  # everything else is what the fuzz is looking for
        return "crashed", traceback.format_exc()


def _worker(connection: Any, canary_folder: str) -> None:
    import resource

    torch.set_num_threads(1)
    import fa_checks.checkpoint  # noqa: F401 - loaded before the bound is set
    import fa_checks.diagnostics.protocol  # noqa: F401

    limit = _data_in_use() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sys.path.insert(0, canary_folder)  # a module beside the files, as PYTHONPATH=. puts it
    while True:
        request = connection.recv()
        if request is None:
            return
        what, argument = request
        if what == "allocate":  # the harness checks its own bound
            try:
                torch.empty(argument, dtype=torch.uint8).fill_(1)
                outcome, detail = "allocated", ""
            except (MemoryError, RuntimeError) as exc:
                outcome, detail = "refused", str(exc).splitlines()[0]
            connection.send((outcome, detail, []))
            continue
        outcome, detail = _evaluate_file(argument)
        imported = [name for name in NEVER_IMPORTED if name in sys.modules]
        connection.send((outcome, detail, imported))


class Worker:
    """One worker process; restarted after it dies, so one failure does not hide the next."""

    def __init__(self, canary_folder: Path) -> None:
        self.canary_folder = canary_folder
        self.process: Any = None
        self.connection: Any = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, str(self.canary_folder)),
                                       daemon=True)
        self.process.start()

    def ask(self, path: Path, what: str = "file") -> tuple[str, str, list[str]]:
        if self.process is None or not self.process.is_alive():
            self.start()
        self.connection.send((what, path if what == "allocate" else str(path)))
        if not self.connection.poll(ANSWER_TIMEOUT_S):
            self.process.kill()
            self.process = None
            return "hung", f"no answer in {ANSWER_TIMEOUT_S} s", []
        try:
            return self.connection.recv()
        except EOFError:
            self.process = None
            return "died", "the worker process died (killed for memory?)", []

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.connection.send(None)
            self.process.join(timeout=30)


# -- the valid file and its mutations ------------------------------------------------------------
def _valid_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(8,), num_classes=3, d_hidden=8, num_blocks=2)
    method = get_method("dfa")
    method.setup(model, 3, torch.Generator().manual_seed(1))
    return save_checkpoint(
        path, model=model, method=method,
        data={"name": "synthetic", "num_samples": 64, "dim": 8, "num_classes": 3, "seed": 0},
        seed=0, epochs=1, optimizer={"lr": 1e-3, "weight_decay": 0.01, "batch_size": 16,
                                     "schedule": "cosine"},
        test_acc=0.5, history=[{"epoch": 1, "train_loss": 1.1, "diverged": False}],
    )


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    canaries = folder / "beside"
    canaries.mkdir()
    marker = folder / "canary-imported"
    (canaries / f"{CANARY}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).mkdir()\nRule = object\n")
    valid = _valid_checkpoint(folder / "valid.pt")
    legacy = folder / "valid-legacy.pt"
    torch.save(torch.load(valid, weights_only=True), legacy,
               _use_new_zipfile_serialization=False)
    worker = Worker(canaries)
    outcome, fingerprint, _ = worker.ask(valid)
    assert outcome == "evaluated", fingerprint
    assert worker.ask(legacy)[:2] == ("evaluated", fingerprint)
    yield {"folder": folder, "valid": valid, "legacy": legacy, "marker": marker,
           "worker": worker,
           "fingerprint": fingerprint, "count": [0]}
    worker.stop()


def _mutated_path(fuzz: dict) -> Path:
    fuzz["count"][0] += 1
    return fuzz["folder"] / f"case-{fuzz['count'][0]}.pt"


def _check(fuzz: dict, path: Path, *, bytes_changed: bool = False) -> str:
    outcome, detail, imported = fuzz["worker"].ask(path)
    assert outcome in ("evaluated", "refused"), f"{outcome}: {detail}"
    assert imported == [], f"imported {imported} while reading {path}"
    assert not fuzz["marker"].exists(), f"a module planted beside {path} was imported"
    if outcome == "refused":
        assert "\n" not in detail, detail
        assert detail.startswith(str(path)), f"the refusal does not name the file: {detail}"
        assert "out of memory" not in detail, f"the memory bound was hit: {detail}"
    elif bytes_changed:
        assert detail == fuzz["fingerprint"], "changed bytes were read as different content"
    path.unlink()
    if os.environ.get("FA_CHECKS_FUZZ_LOG"):
        with open(os.environ["FA_CHECKS_FUZZ_LOG"], "a") as log:
            log.write(f"{outcome}\t{detail.replace(str(path), '<file>')[:300]}\n")
    return outcome


# bytes: overwritten, cut short, inserted
patches = st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=64)),
                   min_size=1, max_size=3)


def _apply_bytes(data: bytes, kind: str, patch_list: list[tuple[float, bytes]]) -> bytes:
    out = bytearray(data)
    for where, chunk in patch_list:
        at = int(where * (len(out) - 1))
        if kind == "overwrite":
            out[at:at + len(chunk)] = chunk[: max(len(out) - at, 0)]
        elif kind == "insert":
            out[at:at] = chunk
        else:
            del out[at:]
            break
    return bytes(out)


def _byte_case(fuzz: dict, kind: str, patch_list: list[tuple[float, bytes]],
               legacy: bool) -> None:
    data = fuzz["legacy" if legacy else "valid"].read_bytes()
    mutated = _apply_bytes(data, kind, patch_list)
    path = _mutated_path(fuzz)
    path.write_bytes(mutated)
    # the legacy format has no checksum: a changed weight is read as a weight (documented)
    _check(fuzz, path, bytes_changed=mutated != data and not legacy)


# structure: a hostile value in a field, a key or a tensor
canary_names = st.sampled_from([f"{CANARY}:Rule", CANARY, "this:X", "test.autotest:X",
                                "os:system", ":", "../x:y", "dfa", "fa", "vec", "bp", "frozen",
                                "resnet", "vit", "mlp", "synthetic", "mnist1d", "cifar10",
                                "evil", "abc", "", "blocks.99999999999999999999.ln.weight"])
huge_ints = st.sampled_from([0, -1, 1, 2, 3, 7, 255, 10**6, 2**31, 2**63, 2**64, 10**20,
                             -(2**63)])
odd_floats = st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.5, 1e-300,
                              1e300, 0.5, 7.0])


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64,
                                  torch.bool, torch.uint8]))
    shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
    tensor = torch.zeros(shape, dtype=dtype)
    if dtype.is_floating_point and tensor.numel():
        tensor = torch.randn(shape, generator=torch.Generator().manual_seed(
            draw(st.integers(0, 99)))).to(dtype) * draw(st.sampled_from([1.0, 1e30, 0.0]))
    if draw(st.booleans()) and len(shape) >= 1 and shape[0]:
        tensor = tensor[:1].expand(shape)  # stride 0: what the 7 KB file used
    return tensor


hostile = st.recursive(
    st.none() | st.booleans() | huge_ints | odd_floats | canary_names | st.text(max_size=8)
    | tensors(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        canary_names | st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["format", "arch", "arch_kwargs", "model_state", "method", "method_options",
          "method_state", "data", "seed", "epochs", "optimizer", "test_acc", "history",
          "version"]
INNER_KEYS = {
    "arch_kwargs": ["input_shape", "num_classes", "d_hidden", "num_blocks", "residual",
                    "w2_std", "depth", "patch_size"],
    "optimizer": ["lr", "weight_decay", "batch_size", "schedule", "name"],
    "data": ["name", "num_samples", "dim", "num_classes", "seed"],
    "method_options": ["penalty", "clip", "vnet_width", "vnet_depth", "scale"],
}


@st.composite
def structure_mutations(draw):
    kind = draw(st.sampled_from(["field", "inner", "tensor", "key", "drop", "values",
                                 "values", "plausible"]))
    if kind == "values":  # the same shapes holding what a diverged run leaves
        return kind, draw(st.sampled_from(["model_state", "method_state"])), \
            draw(st.integers(0, 50)), (draw(odd_floats), draw(st.sampled_from(
                [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                 torch.int8, torch.bool])))
    if kind == "plausible":
        field, value = draw(st.sampled_from([
            ("seed", 2**63 - 1), ("seed", 0), ("epochs", 10_000), ("test_acc", 0.0),
            ("history", []), ("history", None), ("optimizer", None), ("data", None),
            ("method", None), ("method", "dfa"), ("method_options", {"penalty": 1e30}),
            ("method_options", {"clip": 0.0}), ("version", "9.9.9"), ("extra", [1, {}])]))
        return "field", field, None, value
    if kind == "field":
        return kind, draw(st.sampled_from(FIELDS)), None, draw(hostile)
    if kind == "inner":
        field = draw(st.sampled_from(sorted(INNER_KEYS)))
        key = draw(st.sampled_from(INNER_KEYS[field]) | st.text(max_size=6))
        return kind, field, key, draw(hostile)
    if kind == "tensor":
        return kind, draw(st.sampled_from(["model_state", "method_state"])), \
            draw(st.integers(0, 50)), draw(tensors())
    if kind == "key":
        return kind, "model_state", draw(st.integers(0, 50)), draw(canary_names | st.sampled_from(
            ["blocks.2.ln.weight", "blocks.0.w1.weight", "embed.weight", "blocks.01.ln.bias"]))
    return kind, draw(st.sampled_from(FIELDS)), None, None


def _apply_structure(raw: dict, mutation: tuple) -> None:
    kind, field, key, value = mutation
    if kind == "field":
        raw[field] = value
    elif kind == "inner":
        if isinstance(raw.get(field), dict):
            raw[field][key] = value
        else:
            raw[field] = {key: value}
    elif not isinstance(raw.get(field), dict) or not raw[field]:
        if kind != "values":  # an earlier mutation replaced the dict: give it one entry
            raw[field] = {"blocks.0.ln.weight": value}
    elif kind == "tensor":
        names = sorted(raw[field])
        raw[field][names[key % len(names)]] = value
    elif kind == "values":
        names = sorted(raw[field])
        name = names[key % len(names)]
        fill, dtype = value
        shape = getattr(raw[field][name], "shape", (2,))
        raw[field][name] = torch.full(shape, fill, dtype=torch.float64).to(dtype) \
            if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    elif kind == "key":
        names = sorted(raw[field])
        raw[field][value] = raw[field].pop(names[key % len(names)])
    else:
        raw.pop(field, None)


def _structure_case(fuzz: dict, mutations: list, legacy: bool) -> None:
    raw = torch.load(fuzz["valid"], weights_only=True)
    for mutation in mutations:
        _apply_structure(raw, mutation)
    path = _mutated_path(fuzz)
    torch.save(raw, path, _use_new_zipfile_serialization=not legacy)
    _check(fuzz, path)


# -- the properties ----------------------------------------------------------------------------
@FAST
@given(kind=st.sampled_from(["overwrite", "insert", "truncate"]), patch_list=patches,
       legacy=st.booleans())
def test_changed_bytes_are_refused_or_change_nothing(fuzz, kind, patch_list, legacy):
    _byte_case(fuzz, kind, patch_list, legacy)


@FAST
@given(mutations=st.lists(structure_mutations(), min_size=1, max_size=3), legacy=st.booleans())
def test_hostile_fields_are_evaluated_or_refused_in_one_line(fuzz, mutations, legacy):
    _structure_case(fuzz, mutations, legacy)


@pytest.mark.slow
@SLOW
@given(kind=st.sampled_from(["overwrite", "insert", "truncate"]), patch_list=patches,
       legacy=st.booleans())
def test_changed_bytes_are_refused_or_change_nothing_at_length(fuzz, kind, patch_list, legacy):
    _byte_case(fuzz, kind, patch_list, legacy)


@pytest.mark.slow
@SLOW
@given(mutations=st.lists(structure_mutations(), min_size=1, max_size=4), legacy=st.booleans())
def test_hostile_fields_are_evaluated_or_refused_at_length(fuzz, mutations, legacy):
    _structure_case(fuzz, mutations, legacy)


# -- the harness itself can fail ----------------------------------------------------------------
def test_the_harness_sees_a_crash_an_import_and_a_silent_change(fuzz, monkeypatch, tmp_path):
    """Each guard above fails when its condition is broken (checked here without a worker)."""
    class Fake:
        def __init__(self, answer):
            self.answer = answer

        def ask(self, path):
            return self.answer

    for answer, message in [(("crashed", "Traceback", []), "crashed"),
                            (("hung", "no answer", []), "hung"),
                            (("refused", "x.pt: two\nlines", []), "two"),
                            (("refused", "other.pt: names another file", []), "name the file"),
                            (("refused", "{path}: out of memory (x)", []), "memory bound"),
                            (("evaluated", "fingerprint", ["this"]), "imported"),
                            (("evaluated", "different", []), "different content")]:
        path = tmp_path / "x.pt"
        path.write_bytes(b"")
        detail = answer[1].replace("{path}", str(path)).replace("x.pt: two", f"{path}: two")
        fake = {**fuzz, "worker": Fake((answer[0], detail, answer[2]))}
        with pytest.raises(AssertionError, match=message):
            _check(fake, path, bytes_changed=True)


def test_the_worker_is_bounded_in_memory(fuzz):
    """The bound the fuzz relies on is in force: 2 GiB cannot be had, 64 MiB can."""
    assert fuzz["worker"].ask(2 * 2**30, what="allocate")[0] == "refused"
    assert fuzz["worker"].ask(64 * 2**20, what="allocate")[0] == "allocated"
