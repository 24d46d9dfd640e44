"""Checkpoints: round trips, atomic writes, safe loading, clear errors, the seeds' formats."""

from __future__ import annotations

import math
import os
import pickle
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from fa_checks import __version__
from fa_checks.checkpoint import (
    FORMAT,
    SEED_DICT_FORMAT,
    SEED_STATE_DICT_FORMAT,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from fa_checks.methods import Method, MethodError, get_method, register
from fa_checks.models import build_model

TINY = {
    "resmlp": {"input_shape": (8,), "num_classes": 3, "d_hidden": 16, "num_blocks": 2},
    "mlp": {"input_shape": (8,), "num_classes": 3, "d_hidden": 16, "depth": 3},
    "vit": {"input_shape": (3, 8, 8), "num_classes": 3, "d_model": 16, "n_heads": 2,
            "num_blocks": 1, "patch_size": 4},
    "resnet": {"input_shape": (3, 8, 8), "num_classes": 3, "width": 8, "num_blocks": 1},
}


def tiny_model(arch: str = "resmlp", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, **TINY[arch])


def inputs_for(arch: str, n: int = 5) -> torch.Tensor:
    return torch.randn(n, *TINY[arch]["input_shape"], generator=torch.Generator().manual_seed(1))


@register
class RandomFeedback(Method):
    """A stand-in rule with feedback state: one (d, C) matrix per block, scaled by an option."""

    name = "test-checkpoint-feedback"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale=scale)

    def init_state(self, generator: torch.Generator) -> None:
        assert self.anatomy is not None and self.model is not None
        d = self.model.spec["kwargs"]["d_hidden"]
        self.feedback = [
            torch.randn(d, self.num_classes, generator=generator) * self.options["scale"]
            for _ in range(self.anatomy.num_blocks)
        ]

    def step(self, x, y):
        return {"loss": 0.0}

    def state_dict(self):
        return {f"feedback.{i}": b for i, b in enumerate(self.feedback)}

    def load_state_dict(self, state):
        if set(state) != set(self.state_dict()):
            raise MethodError(f"expected keys {sorted(self.state_dict())}, got {sorted(state)}")
        for i, b in enumerate(self.feedback):
            b.copy_(state[f"feedback.{i}"])


class UnregisteredRule(RandomFeedback):
    """A user's rule that is not in the registry: it must travel as module:Class."""

    name = "not-in-the-registry"


def attached(method: Method, model: nn.Module, seed: int = 5) -> Method:
    method.setup(model, model.spec["kwargs"]["num_classes"], torch.Generator().manual_seed(seed))
    return method


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(TINY))
def test_round_trip_rebuilds_the_same_function(tmp_path, arch):
    model = tiny_model(arch)
    if arch == "resnet":  # make the batch-norm buffers differ from a fresh model's
        model.train()
        with torch.no_grad():
            model(inputs_for(arch, 16))
    model.eval()
    path = save_checkpoint(tmp_path / f"{arch}.pt", model=model)
    loaded = load_checkpoint(path)
    rebuilt = loaded.build_model()
    assert loaded.arch == arch
    assert loaded.arch_kwargs == {**TINY[arch], "input_shape": list(TINY[arch]["input_shape"])}
    assert not rebuilt.training
    original_state, rebuilt_state = model.state_dict(), rebuilt.state_dict()
    assert original_state.keys() == rebuilt_state.keys()
    for key, tensor in original_state.items():
        assert torch.equal(tensor, rebuilt_state[key]), key
    x = inputs_for(arch)
    assert torch.equal(model(x), rebuilt(x))


def test_every_field_round_trips(tmp_path):
    model = tiny_model()
    method = attached(RandomFeedback(scale=2.0), model)
    history = [{"epoch": 1, "loss": 1.5, "acc": (0.5, 0.6)}, {"epoch": 2, "loss": float("nan")}]
    path = save_checkpoint(
        tmp_path / "sub" / "run.pt", model=model, method=method,
        data={"name": "synthetic", "num_samples": 64, "seed": 0},
        seed=3, epochs=2, optimizer={"name": "adamw", "lr": 1e-3, "betas": (0.9, 0.999)},
        test_acc=np.float64(0.625), history=history,
    )
    assert path == tmp_path / "sub" / "run.pt"
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.path == path and ckpt.source_format == FORMAT and ckpt.version == __version__
    assert ckpt.method == "test-checkpoint-feedback" and ckpt.method_options == {"scale": 2.0}
    assert ckpt.data == {"name": "synthetic", "num_samples": 64, "seed": 0}
    assert (ckpt.seed, ckpt.epochs, ckpt.test_acc) == (3, 2, 0.625)
    assert type(ckpt.test_acc) is float
    assert ckpt.optimizer == {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999]}
    assert ckpt.history[0] == {"epoch": 1, "loss": 1.5, "acc": [0.5, 0.6]}
    assert math.isnan(ckpt.history[1]["loss"])
    assert ckpt.num_classes == 3 and ckpt.input_shape == (8,)
    assert ckpt.data_hint is None and ckpt.source_config is None
    for i, b in enumerate(method.feedback):
        assert torch.equal(ckpt.method_state[f"feedback.{i}"], b)


def test_the_file_holds_only_plain_data(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "run.pt", model=model, method=attached(RandomFeedback(),
                           model), history=[{"k": (1, 2)}], optimizer={"lr": 1e-3})
    raw = torch.load(path, weights_only=True)  # would raise on anything but plain data
    assert raw["format"] == FORMAT and raw["version"] == __version__
    assert set(raw) == {"format", "arch", "arch_kwargs", "model_state", "method",
                        "method_options", "method_state", "data", "seed", "epochs", "optimizer",
                        "test_acc", "history", "version"}

    def assert_plain(value):
        if isinstance(value, dict):
            for k, v in value.items():
                assert isinstance(k, (str, int))
                assert_plain(v)
        elif isinstance(value, list):
            for v in value:
                assert_plain(v)
        else:
            assert value is None or isinstance(value, (bool, int, float, str, torch.Tensor)), \
                type(value)

    assert_plain(raw)
    assert raw["history"] == [{"k": [1, 2]}]


plain_leaves = st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.text(max_size=5) \
    | st.floats(allow_nan=False)
nested = st.recursive(
    plain_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


def as_lists(value):
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=nested)
def test_nested_plain_values_are_written_with_tuples_as_lists(tmp_path, value):
    path = save_checkpoint(tmp_path / "h.pt", model=tiny_model(),
                           optimizer={"lr": 1e-3, "extra": value})
    raw = torch.load(path, weights_only=True)
    assert raw["optimizer"]["extra"] == as_lists(value)


figures = st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats() \
    | st.text(max_size=5) | st.lists(st.floats() | st.integers(-9, 9), max_size=4)


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.dictionaries(st.text(max_size=6), figures, max_size=4))
def test_history_entries_of_figures_round_trip(tmp_path, entry):
    path = save_checkpoint(tmp_path / "h.pt", model=tiny_model(), history=[entry])
    (loaded,) = load_checkpoint(path).history
    assert loaded.keys() == entry.keys()
    for key, value in entry.items():  # NaN != NaN: compare the text
        assert repr(loaded[key]) == repr(value)


@pytest.mark.parametrize("value", [{"nested": 1}, [[1, 2]], torch.zeros(3), "x" * 101])
def test_history_holds_figures_only_and_what_would_not_load_is_not_saved(tmp_path, value):
    with pytest.raises(CheckpointError, match=r"history\[0\]\['k'\] must be a number"):
        save_checkpoint(tmp_path / "h.pt", model=tiny_model(), history=[{"k": value}])
    raw = saved_raw(tmp_path)
    raw["history"] = [{"k": value}]
    expect_error(write_raw(tmp_path / "bad.pt", raw), "history[0]['k'] must be a number")


def test_a_view_does_not_drag_its_whole_storage_into_the_file(tmp_path):
    model = tiny_model()
    method = attached(RandomFeedback(), model)
    big = torch.zeros(1_000_000)
    method.feedback = [big[i * 48:(i + 1) * 48].view(16, 3) for i in range(2)]
    path = save_checkpoint(tmp_path / "run.pt", model=model, method=method)
    assert path.stat().st_size < 100_000
    assert torch.equal(load_checkpoint(path).method_state["feedback.1"], torch.zeros(16, 3))


def test_build_model_on_a_device(tmp_path):
    path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())
    model = load_checkpoint(path).build_model(device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


# -- saving errors and atomicity ----------------------------------------------------------
def test_a_model_without_spec_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no .spec.*build_model"):
        save_checkpoint(tmp_path / "run.pt", model=nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


def test_an_unsavable_value_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"history\[0\]\['fn'\] holds a function"):
        save_checkpoint(tmp_path / "run.pt", model=tiny_model(), history=[{"fn": lambda: 0}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_no_file_and_no_temporary(tmp_path, monkeypatch, failure):
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")
        raise failure

    previous = save_checkpoint(tmp_path / "kept.pt", model=tiny_model(seed=1))
    previous_bytes = previous.read_bytes()
    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(type(failure)):
        save_checkpoint(tmp_path / "new.pt", model=tiny_model())
    with pytest.raises(type(failure)):
        save_checkpoint(tmp_path / "kept.pt", model=tiny_model())
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt"]
    assert previous.read_bytes() == previous_bytes
    assert load_checkpoint(previous).arch == "resmlp"


# -- loading errors -----------------------------------------------------------------------
def saved_raw(tmp_path) -> dict:
    path = save_checkpoint(tmp_path / "good.pt", model=tiny_model())
    return torch.load(path, weights_only=True)


def write_raw(path, raw) -> os.PathLike:
    torch.save(raw, path)
    return path


def expect_error(path, *fragments, trust: bool = False) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, trust=trust)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.pt", "no such checkpoint file")
    expect_error(tmp_path, "is a directory")


def test_empty_truncated_and_garbage_files(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", model=tiny_model())
    data = good.read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(512))
    (tmp_path / "text.pt").write_text("these are not the weights you are looking for")
    expect_error(tmp_path / "empty.pt", "empty or truncated")
    expect_error(tmp_path / "half.pt", "truncated or corrupt")
    for name in ("noise.pt", "text.pt"):
        message = expect_error(tmp_path / name, "corrupt")
        assert "trust" not in message  # corruption is not a trust problem


def test_a_pickled_legacy_file_that_is_truncated(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"x": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])
    expect_error(path, "empty or truncated")


def test_not_a_dict(tmp_path):
    expect_error(write_raw(tmp_path / "list.pt", [torch.ones(2)]), "holds a list, not a dict")


def test_a_dict_that_is_no_checkpoint(tmp_path):
    expect_error(write_raw(tmp_path / "x.pt", {"weights": 1}), "missing key 'format'",
                 "'weights'")


@pytest.mark.parametrize("key", ["arch", "arch_kwargs", "model_state"])
def test_missing_key_is_named(tmp_path, key):
    raw = saved_raw(tmp_path)
    del raw[key]
    expect_error(write_raw(tmp_path / "bad.pt", raw), f"missing key {key!r}")


def test_missing_arch_keyword_is_named(tmp_path):
    raw = saved_raw(tmp_path)
    del raw["arch_kwargs"]["num_classes"]
    expect_error(write_raw(tmp_path / "bad.pt", raw), "missing key 'arch_kwargs.num_classes'")


@pytest.mark.parametrize(("fmt", "fragment"), [
    ("fa-checks/2", "another fa-checks version"),
    ("keras/1", "unknown checkpoint format 'keras/1'"),
])
def test_unknown_format(tmp_path, fmt, fragment):
    raw = saved_raw(tmp_path)
    raw["format"] = fmt
    expect_error(write_raw(tmp_path / "bad.pt", raw), fragment)


def test_unknown_architecture_lists_the_known_ones(tmp_path):
    raw = saved_raw(tmp_path)
    raw["arch"] = "transformer-xl"
    expect_error(write_raw(tmp_path / "bad.pt", raw), "unknown architecture 'transformer-xl'",
                 "mlp, resmlp, resnet, vit")


def test_arch_keywords_that_do_not_build(tmp_path):
    raw = saved_raw(tmp_path)
    raw["arch_kwargs"]["depth_of_field"] = 3
    expect_error(write_raw(tmp_path / "bad.pt", raw), "depth_of_field")


def test_tensor_shapes_that_do_not_fit_are_named_at_load_time(tmp_path):
    raw = saved_raw(tmp_path)
    raw["model_state"]["blocks.0.w1.weight"] = torch.zeros(8, 16)
    expect_error(write_raw(tmp_path / "bad.pt", raw), "blocks.0.w1.weight",
                 "file (8, 16)", "architecture (16, 16)")


def test_missing_and_unexpected_state_keys_are_named(tmp_path):
    raw = saved_raw(tmp_path)
    del raw["model_state"]["out_ln.weight"]
    raw["model_state"]["blocks.7.w1.weight"] = torch.zeros(2)
    expect_error(write_raw(tmp_path / "bad.pt", raw), "missing 'out_ln.weight'",
                 "unexpected 'blocks.7.w1.weight'")


def test_build_model_also_checks_the_state(tmp_path):
    path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())
    ckpt = load_checkpoint(path)
    ckpt.model_state["out_head.weight"] = torch.zeros(4, 16)
    with pytest.raises(CheckpointError, match=r"out_head.weight: file \(4, 16\)"):
        ckpt.build_model()


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("model_state", {"w": 3}, "'model_state' must map names to tensors"),
    ("seed", "zero", "seed='zero': it must be a whole number"),
    ("test_acc", "high", "test_acc='high': it must be a number"),
    ("history", {"epoch": 1}, "'history' must be a list"),
    ("method", 7, "'method' must be a method name"),
])
def test_wrong_types_are_named(tmp_path, key, value, fragment):
    raw = saved_raw(tmp_path)
    raw[key] = value
    expect_error(write_raw(tmp_path / "bad.pt", raw), fragment)


# -- files that would run code ------------------------------------------------------------
class RunsCodeWhenUnpickled:
    """Unpickling this calls os.mkdir(marker): stands in for any code a pickle may run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "code-ran"
    raw = saved_raw(tmp_path)
    raw["notes"] = [RunsCodeWhenUnpickled(str(marker))]
    path = tmp_path / "evil.pt"
    torch.save(raw, path, _use_new_zipfile_serialization=zip_format)
    expect_error(path, "execute code", "mkdir", "trust=True", "--fa-trust ",
                 "--trust")
    assert not marker.exists()
    # the file really runs code when trusted, so the refusal above is what kept it from running
    load_checkpoint(path, trust=True)
    assert marker.is_dir()


def test_trust_loads_a_file_with_arbitrary_objects(tmp_path):
    raw = saved_raw(tmp_path)
    raw["notes"] = [pickle.PickleError("ok")]
    path = write_raw(tmp_path / "objects.pt", raw)
    expect_error(path, "execute code", "PickleError")
    assert load_checkpoint(path, trust=True).trusted


# -- methods ------------------------------------------------------------------------------
def test_build_method_restores_the_saved_feedback_not_a_fresh_draw(tmp_path):
    model = tiny_model()
    method = attached(RandomFeedback(scale=3.0), model, seed=11)
    path = save_checkpoint(tmp_path / "run.pt", model=model, method=method, seed=0)
    ckpt = load_checkpoint(path)
    rebuilt_model = ckpt.build_model()
    rebuilt = ckpt.build_method(rebuilt_model)
    assert type(rebuilt) is RandomFeedback
    assert rebuilt.model is rebuilt_model and rebuilt.options == {"scale": 3.0}
    fresh = attached(RandomFeedback(scale=3.0), tiny_model(), seed=0)
    for saved, restored, drawn in zip(method.feedback, rebuilt.feedback, fresh.feedback,
                                      strict=True):
        assert torch.equal(saved, restored)
        assert not torch.equal(drawn, restored)


def test_no_method_builds_none(tmp_path):
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "run.pt", model=tiny_model()))
    assert ckpt.method is None and ckpt.method_state == {}
    assert ckpt.build_method(ckpt.build_model()) is None


def test_an_unregistered_user_rule_travels_as_module_and_class(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "run.pt", model=model,
                           method=attached(UnregisteredRule(scale=0.5), model))
    ckpt = load_checkpoint(path, trust=True)
    assert ckpt.method == f"{UnregisteredRule.__module__}:UnregisteredRule"
    assert type(ckpt.build_method(ckpt.build_model())) is UnregisteredRule
    # untrusted, the same name is refused: it would import a module named by the file
    untrusted = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="would import module") as info:
        untrusted.build_method(untrusted.build_model())
    assert UnregisteredRule.__module__ in str(info.value) and "trust=True" in str(info.value)


def test_a_method_that_cannot_be_found_is_a_checkpoint_error(tmp_path):
    raw = saved_raw(tmp_path)
    raw["method"] = "no_such_package.rules:Gone"
    ckpt = load_checkpoint(write_raw(tmp_path / "gone.pt", raw), trust=True)
    with pytest.raises(CheckpointError, match=r"gone.pt: cannot rebuild its method"):
        ckpt.build_method(ckpt.build_model())


def test_method_state_that_does_not_load_is_a_checkpoint_error(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "run.pt", model=model,
                           method=attached(RandomFeedback(), model))
    ckpt = load_checkpoint(path)
    del ckpt.method_state["feedback.1"]
    with pytest.raises(CheckpointError, match="saved state of method"):
        ckpt.build_method(ckpt.build_model())


# -- the research code's formats ----------------------------------------------------------
class SeedBlock(nn.Module):
    """The research code's block, written out here independently: returns the branch only."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln, self.w1, self.w2 = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, h):
        return self.w2(F.gelu(self.w1(self.ln(h))))


class SeedResidualMLP(nn.Module):
    def __init__(self, input_dim: int, d: int, classes: int, blocks: int) -> None:
        super().__init__()
        self.embed = nn.Linear(input_dim, d)
        self.blocks = nn.ModuleList(SeedBlock(d) for _ in range(blocks))
        self.out_ln = nn.LayerNorm(d)
        self.out_head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out_head(self.out_ln(h))


def seed_model(input_dim=3072, d=16, classes=10, blocks=3) -> SeedResidualMLP:
    torch.manual_seed(0)
    model = SeedResidualMLP(input_dim, d, classes, blocks)
    with torch.no_grad():  # a trained-looking branch, not the near-identity start
        for block in model.blocks:
            block.w2.weight.normal_(std=0.3)
    return model


def test_seed_dict_with_dfa_feedback(tmp_path):
    model = seed_model()
    feedback = [torch.randn(16, 10) / math.sqrt(10) for _ in range(3)]
    config = {"seed": 42, "epochs": 100, "lam": 0.01, "lr": 1e-3, "wd": 0.01,
              "output_dir": "results/x"}
    path = write_raw(tmp_path / "penalized_dfa.pt", {
        "state_dict": model.state_dict(), "Bs": feedback, "config": config,
        "test_acc": np.float64(0.398)})
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == SEED_DICT_FORMAT
    assert ckpt.arch == "resmlp"
    assert ckpt.arch_kwargs == {"input_shape": [3072], "num_classes": 10, "d_hidden": 16,
                                "num_blocks": 3}
    assert ckpt.method == "dfa" and ckpt.method_options == {"penalty": 0.01}
    assert sorted(ckpt.method_state) == ["feedback.0", "feedback.1", "feedback.2"]
    for i, b in enumerate(feedback):
        assert torch.equal(ckpt.method_state[f"feedback.{i}"], b)
    assert (ckpt.seed, ckpt.epochs, ckpt.test_acc) == (42, 100, 0.398)
    assert ckpt.optimizer == {"lr": 1e-3, "weight_decay": 0.01}
    assert ckpt.data is None and ckpt.data_hint == "cifar10"
    assert ckpt.source_config == config and ckpt.version is None
    x = torch.randn(4, 3072)
    assert torch.allclose(ckpt.build_model()(x), model.eval()(x), atol=1e-6, rtol=0)


def test_seed_dict_with_fa_feedback_and_no_config(tmp_path):
    model = seed_model(input_dim=40)
    feedback = [torch.randn(16, 16) for _ in range(3)]
    path = write_raw(tmp_path / "fa.pt", {"state_dict": model.state_dict(), "Bs": feedback})
    ckpt = load_checkpoint(path)
    assert ckpt.method == "fa" and ckpt.method_options == {}
    assert ckpt.seed is None and ckpt.test_acc is None and ckpt.optimizer is None
    assert ckpt.data_hint == "mnist1d"


def test_seed_bare_state_dict(tmp_path):
    model = seed_model(input_dim=784, classes=100, blocks=2)
    path = write_raw(tmp_path / "bare.pt", model.state_dict())
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == SEED_STATE_DICT_FORMAT
    assert ckpt.arch_kwargs == {"input_shape": [784], "num_classes": 100, "d_hidden": 16,
                                "num_blocks": 2}
    assert ckpt.method is None and ckpt.data is None and ckpt.data_hint == "mnist"
    x = torch.randn(3, 784)
    assert torch.allclose(ckpt.build_model()(x), model.eval()(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"state_dict": {"conv.weight": torch.zeros(2, 2)}}, "missing key 'embed.weight'"),
    ({"state_dict": "weights"}, "'state_dict' must be a dict of tensors"),
])
def test_seed_layouts_that_are_not_a_resmlp(tmp_path, raw, fragment):
    expect_error(write_raw(tmp_path / "bad.pt", raw), fragment)


@pytest.mark.parametrize(("feedback", "fragment"), [
    ([torch.zeros(16, 10)] * 2, "holds 2 feedback matrices for 3 blocks"),
    ([torch.zeros(16, 7)] * 3, "neither DFA's"),
    ("B", "list of feedback matrices"),
])
def test_seed_feedback_that_does_not_fit(tmp_path, feedback, fragment):
    raw = {"state_dict": seed_model().state_dict(), "Bs": feedback}
    expect_error(write_raw(tmp_path / "bad.pt", raw), fragment)


def test_seed_dfa_checkpoint_rebuilds_the_real_dfa_rule(tmp_path):
    try:
        get_method("dfa")
    except MethodError:
        pytest.skip("the built-in dfa method is not available yet")
    model = seed_model(input_dim=40)
    feedback = [torch.randn(16, 10) / math.sqrt(10) for _ in range(3)]
    path = write_raw(tmp_path / "dfa.pt", {"state_dict": model.state_dict(), "Bs": feedback})
    ckpt = load_checkpoint(path)
    rebuilt = ckpt.build_method(ckpt.build_model())
    assert rebuilt.state_dict().keys() == ckpt.method_state.keys()
    for key, b in rebuilt.state_dict().items():
        assert torch.equal(b, ckpt.method_state[key])


def test_a_bare_state_dict_of_our_own_resmlp_loads_too(tmp_path):
    model = tiny_model().eval()
    ckpt = load_checkpoint(write_raw(tmp_path / "ours.pt", model.state_dict()))
    assert ckpt.source_format == SEED_STATE_DICT_FORMAT
    assert ckpt.arch_kwargs == {"input_shape": [8], "num_classes": 3, "d_hidden": 16,
                                "num_blocks": 2}
    x = inputs_for("resmlp")
    assert torch.equal(ckpt.build_model()(x), model(x))


def test_a_saved_checkpoint_has_ordinary_permissions(tmp_path):
    # a private (0600) temporary file renamed into place would keep its mode
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


# -- untrusted files: names never import ----------------------------------------------------
def planted_module(folder, marker) -> str:
    """A module beside the checkpoint whose import leaves ``marker``: what a file could name."""
    name = f"planted_{os.urandom(4).hex()}"
    (folder / f"{name}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).mkdir()\n"
        "from fa_checks.methods.dfa import DFA\n\n\n"
        "class Rule(DFA):\n"
        "    pass\n"
    )
    return name


def dfa_checkpoint(path):
    model = tiny_model()
    return save_checkpoint(path, model=model, method=attached(get_method("dfa"), model), seed=0,
                           epochs=1)


def with_method(tmp_path, name: str, filename: str = "named.pt"):
    raw = torch.load(dfa_checkpoint(tmp_path / "dfa.pt"), weights_only=True)
    raw["method"] = name
    return write_raw(tmp_path / filename, raw)


@pytest.mark.parametrize("name", ["this:X", "test.autotest:X", "antigravity:X", "os:system"])
def test_a_method_name_from_an_untrusted_file_imports_nothing(tmp_path, name):
    module = name.partition(":")[0]
    before = module in sys.modules
    ckpt = load_checkpoint(with_method(tmp_path, name))
    model = ckpt.build_model()
    with pytest.raises(CheckpointError) as info:
        ckpt.build_method(model)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(ckpt.path))
    assert f"would import module {module!r}" in message and "nothing was imported" in message
    assert "trust=True" in message and "--fa-trust " in message
    assert (module in sys.modules) == before


def test_a_module_planted_beside_the_file_runs_only_when_trusted(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    name = planted_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH=. or a conftest's rootdir does
    path = with_method(tmp_path, f"{name}:Rule")
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"would import module '{name}'"):
        ckpt.build_method(ckpt.build_model())
    assert name not in sys.modules and not marker.exists()
    # given trust, it imports as the user asked
    trusted = load_checkpoint(path, trust=True)
    method = trusted.build_method(trusted.build_model())
    assert type(method).__module__ == name and marker.is_dir()
    sys.modules.pop(name, None)


def test_a_name_the_user_gave_may_import_even_from_an_untrusted_file(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    name = planted_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = load_checkpoint(with_method(tmp_path, f"{name}:Rule"),
                           import_methods={f"{name}:Rule"})
    assert type(ckpt.build_method(ckpt.build_model())).__name__ == "Rule" and marker.is_dir()
    sys.modules.pop(name, None)


def test_an_entry_point_resolves_from_an_untrusted_file(tmp_path, monkeypatch):
    from importlib import metadata

    from fa_checks.methods import ENTRY_POINT_GROUP

    marker = tmp_path / "imported"
    name = planted_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = metadata.EntryPoint(name="installed-rule", value=f"{name}:Rule",
                                    group=ENTRY_POINT_GROUP)
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [installed]
                        if kw.get("group") == ENTRY_POINT_GROUP else real(**kw))
    ckpt = load_checkpoint(with_method(tmp_path, "installed-rule"))
    assert type(ckpt.build_method(ckpt.build_model())).__name__ == "Rule"
    sys.modules.pop(name, None)


@pytest.mark.parametrize("name", [":", "../x:y", "a:", ":b", "a b:C", "x:y.<locals>.Z"])
def test_a_malformed_method_name_is_a_method_error_even_when_importing(name):
    from fa_checks.methods import method_class

    with pytest.raises(MethodError, match="not module:Class"):
        method_class(name, allow_import=True)


# -- untrusted files: the bytes -------------------------------------------------------------
def test_64_random_bytes_in_the_middle_fail_the_crc(tmp_path):
    path = dfa_checkpoint(tmp_path / "run.pt")
    data = bytearray(path.read_bytes())
    import zipfile

    with zipfile.ZipFile(path) as archive:  # the middle of the largest tensor's bytes
        info = max(archive.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.file_size // 2 - 32
    data[middle:middle + 64] = np.random.default_rng(0).bytes(64)
    path.write_bytes(bytes(data))
    expect_error(path, "is corrupt", f"member {info.filename!r} fails its CRC")


def test_a_compressed_member_or_trailing_bytes_are_refused(tmp_path):
    import zipfile

    good = dfa_checkpoint(tmp_path / "run.pt")
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    expect_error(deflated, "is compressed")
    trailing = tmp_path / "trailing.pt"
    trailing.write_bytes(good.read_bytes() + b"\0" * 10)
    expect_error(trailing, "after its archive directory")


def test_an_expanded_tensor_is_refused_before_it_is_used(tmp_path):
    raw = saved_raw(tmp_path)
    raw["model_state"]["blocks.0.w1.weight"] = torch.zeros(1).expand(16, 16)
    path = write_raw(tmp_path / "expanded.pt", raw)
    assert path.stat().st_size < 20_000
    expect_error(path, "shape [16, 16] needs 256 elements", "stride 0")
    expect_error(path, "stride 0", trust=True)  # torch.load itself builds it: checked after


def test_a_view_larger_than_its_storage_is_refused(tmp_path):
    raw = saved_raw(tmp_path)
    raw["model_state"]["blocks.0.w1.weight"] = torch.zeros(32).as_strided((16, 16), (1, 1))
    expect_error(write_raw(tmp_path / "overlap.pt", raw), "needs 256 elements",
                 "holds 32")


def test_a_storage_that_declares_more_bytes_than_its_member_holds_is_refused(tmp_path):
    import zipfile

    path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())
    patched = tmp_path / "patched.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data/0"):
                data = data[: len(data) // 2]  # a consistent archive with a short storage
            target.writestr(info, data)
    expect_error(patched, "storage '0' declares")


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_only_regular_files_are_read_and_a_fifo_cannot_hang(tmp_path, kind):
    import socket
    import threading

    path = tmp_path / "special.pt"
    if kind == "fifo":
        os.mkfifo(path)
        fragment = "FIFO"
    elif kind == "device":
        path = "/dev/zero"
        fragment = "a device"
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        fragment = "a socket"
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(expect_error(path, fragment)),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert outcome, "loading did not return"


def test_a_file_above_the_size_limit_is_refused(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_file_bytes=1000")
    expect_error(path, "above the limit max_file_bytes=1,000", "FA_CHECKS_LIMITS=max_file_bytes=")


def test_too_many_tensors_are_refused(tmp_path, monkeypatch):
    raw = saved_raw(tmp_path)
    path = write_raw(tmp_path / "run.pt", raw)
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_tensors=3")
    expect_error(path, "max_tensors=3")


# -- the legacy format: what it can and cannot promise ----------------------------------------
def test_a_legacy_file_loads_and_is_checked_like_a_zip(tmp_path):
    model = tiny_model()
    path = tmp_path / "legacy.pt"
    torch.save(saved_raw(tmp_path), path, _use_new_zipfile_serialization=False)
    x = inputs_for("resmlp")
    assert torch.equal(load_checkpoint(path).build_model()(x), model.eval()(x))
    raw = saved_raw(tmp_path)
    raw["model_state"]["blocks.0.w1.weight"] = torch.zeros(1).expand(16, 16)
    torch.save(raw, tmp_path / "expanded.pt", _use_new_zipfile_serialization=False)
    expect_error(tmp_path / "expanded.pt", "stride 0")


def test_a_legacy_storage_whose_stored_length_differs_is_refused_before_allocation(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"format": "x", "t": torch.ones(6)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    count = len(data) - 6 * 4 - 8  # the int64 element count before the only storage
    assert int.from_bytes(data[count:count + 8], "little") == 6
    data[count:count + 8] = (2**40).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    expect_error(path, "declared with 6 elements but stored with 1,099,511,627,776")


def test_a_flipped_byte_in_legacy_tensor_data_is_not_detected(tmp_path):
    """The documented limit: the legacy format has no checksum (the zip format has CRCs)."""
    path = tmp_path / "legacy.pt"
    torch.save(saved_raw(tmp_path), path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    loaded, original = load_checkpoint(path).model_state, tiny_model().state_dict()
    assert any(not torch.equal(loaded[key], original[key]) for key in original)


# -- untrusted files: sizes and fields -----------------------------------------------------
def test_declared_sizes_must_match_the_tensors_before_any_model_is_built(tmp_path, monkeypatch):
    raw = saved_raw(tmp_path)
    raw["arch_kwargs"]["num_blocks"] = 1000  # within the limits, but the file holds 2 blocks
    path = write_raw(tmp_path / "big.pt", raw)
    import fa_checks.models

    monkeypatch.setattr(fa_checks.models, "build_model",
                        lambda *a, **k: pytest.fail("a model was built"))
    expect_error(path, "missing 'blocks.2.ln.weight'", "and 5980 more")


@pytest.mark.parametrize(("arch_kwargs", "fragments"), [
    ({"num_blocks": 10**6}, ["arch_kwargs.num_blocks=1000000", "max_blocks=1024",
                             "FA_CHECKS_LIMITS=max_blocks=1000000"]),
    ({"d_hidden": "abc"}, ["arch_kwargs.d_hidden='abc'", "whole number"]),
    ({"d_hidden": -1}, ["arch_kwargs.d_hidden=-1"]),
    ({"input_shape": [8, -1]}, ["arch_kwargs.input_shape[1]=-1"]),
    ({"num_classes": 2**70}, ["arch_kwargs.num_classes=", "max_classes"]),
])
def test_arch_kwargs_are_checked_at_once(tmp_path, arch_kwargs, fragments):
    raw = saved_raw(tmp_path)
    raw["arch_kwargs"].update(arch_kwargs)
    expect_error(write_raw(tmp_path / "bad.pt", raw), *fragments)


def test_a_vit_with_patch_size_zero_is_refused(tmp_path):
    raw = torch.load(save_checkpoint(tmp_path / "vit.pt", model=tiny_model("vit")),
                     weights_only=True)
    raw["arch_kwargs"]["patch_size"] = 0
    expect_error(write_raw(tmp_path / "bad.pt", raw), "arch_kwargs.patch_size=0")


@pytest.mark.parametrize(("key", "fragment"), [
    ("blocks.99999999999999999999.ln.weight", "names block 99999999999999999999"),
    ("blocks.5000.ln.weight", "beyond the limit max_blocks=1024"),
])
def test_a_seed_key_with_a_huge_block_index_is_an_error_at_once(tmp_path, key, fragment):
    state = seed_model().state_dict()
    state[key] = torch.zeros(16)
    expect_error(write_raw(tmp_path / "bad.pt", {"state_dict": state}), fragment)


def test_seed_blocks_that_are_not_contiguous_are_an_error(tmp_path):
    state = {k: v for k, v in seed_model().state_dict().items() if not k.startswith("blocks.1.")}
    expect_error(write_raw(tmp_path / "gap.pt", {"state_dict": state}),
                 "not numbered 0..2", "block(s) 1")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("optimizer", {"lr": "abc"}, "optimizer.lr='abc': it must be a number"),
    ("optimizer", {"lr": float("nan")}, "optimizer.lr=nan: it must be a finite number"),
    ("optimizer", {"schedule": "evil"}, "optimizer.schedule='evil': use one of"),
    ("optimizer", {"batch_size": 0}, "optimizer.batch_size=0: it must be 1 or more"),
    ("optimizer", {"weight_decay": -1.0}, "optimizer.weight_decay=-1.0: it must be 0 or more"),
    ("optimizer", {"lr": {"nested": 1}}, "optimizer['lr'] must be a plain setting"),
    ("seed", 2**64, "seed=18446744073709551616"),
    ("seed", -3, "seed=-3"),
    ("epochs", 10**9, "epochs=1000000000: above the limit max_epochs"),
    ("epochs", 0, "epochs=0: it must be 1 or more"),
    ("test_acc", 7.0, "test_acc=7.0"),
    ("test_acc", float("nan"), "test_acc=nan"),
    ("data", {"name": 3}, "data.name"),
    ("data", {"name": "x" * 101}, "data.name"),
    ("data", {"num_samples": 10}, "data.name"),
    ("data", {"name": "synthetic", "num_samples": 10**12}, "max_samples"),
    ("data", {"name": "synthetic", "seed": "abc"}, "parameter 'seed' must be an integer"),
    ("data", {"name": "synthetic", "dim": [1, 2]}, "data.dim must be a plain value"),
    ("history", [[1]], "history[0] must be a dict"),
    ("method", "", "'method' must be a method name"),
    ("method_options", {"vnet_width": 10**9}, "method_options.vnet_width=1000000000"),
    ("method_options", {"penalty": float("nan")}, "method_options.penalty=nan"),
    ("version", [1], "'version' must be text"),
])
def test_every_field_that_sizes_or_steers_work_is_validated(tmp_path, field, value, fragment):
    raw = saved_raw(tmp_path)
    raw[field] = value
    message = expect_error(write_raw(tmp_path / "bad.pt", raw), fragment)
    assert "\n" not in message


def test_a_history_longer_than_the_limit_is_refused(tmp_path, monkeypatch):
    raw = saved_raw(tmp_path)
    raw["history"] = [{"epoch": i} for i in range(5)]
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_history=4")
    expect_error(write_raw(tmp_path / "long.pt", raw), "5 entries", "max_history=4")


def test_a_seed_config_is_validated(tmp_path):
    state = seed_model(input_dim=40).state_dict()
    for config, fragment in [({"lr": "abc"}, "config.lr='abc'"),
                             ({"epochs": 10**9}, "config.epochs=1000000000"),
                             ({"seed": 2**64}, "config.seed="),
                             ({"nested": {"a": 1}}, "config['nested'] must be a plain")]:
        expect_error(write_raw(tmp_path / "bad.pt", {"state_dict": state, "config": config}),
                     fragment)


# -- faults of the machine while loading ---------------------------------------------------
@pytest.mark.parametrize(("fault", "fragment"), [
    (OSError(5, "Input/output error"), "Input/output error"),
    (MemoryError(), "out of memory"),
    (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 9000000000 bytes"), "out of memory"),
])
def test_a_read_or_allocation_failure_is_a_checkpoint_error(tmp_path, monkeypatch, fault,
                                                            fragment):
    path = save_checkpoint(tmp_path / "run.pt", model=tiny_model())

    def failing(*args, **kwargs):
        raise fault

    monkeypatch.setattr(torch, "load", failing)
    message = expect_error(path, fragment)
    assert "\n" not in message


def test_an_allocation_failure_while_building_is_a_checkpoint_error(tmp_path, monkeypatch):
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "run.pt", model=tiny_model()))

    def failing(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr("fa_checks.models.build_model", failing)
    with pytest.raises(CheckpointError, match=r"run.pt: building its resmlp failed: out of"):
        ckpt.build_model()


def test_a_method_network_the_saved_state_cannot_hold_is_refused_before_setup(tmp_path):
    raw = torch.load(dfa_checkpoint(tmp_path / "dfa.pt"), weights_only=True)
    raw["method"], raw["method_options"] = "vec", {"vnet_width": 4000, "vnet_depth": 60}
    ckpt = load_checkpoint(write_raw(tmp_path / "vec.pt", raw))
    with pytest.raises(CheckpointError, match="size a network of about 976,000,000 elements"):
        ckpt.build_method(ckpt.build_model())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickle_above_the_metadata_limit_is_refused_before_it_is_read(tmp_path, monkeypatch,
                                                                        zip_format):
    raw = saved_raw(tmp_path)
    raw["history"] = [{"epoch": i, "note": "x" * 90} for i in range(200)]
    path = tmp_path / "long.pt"
    torch.save(raw, path, _use_new_zipfile_serialization=zip_format)
    load_checkpoint(path)
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_metadata_bytes=4096")
    expect_error(path, "larger than the limit max_metadata_bytes=4,096",
                 "FA_CHECKS_LIMITS=max_metadata_bytes=")


def test_a_dataset_outside_the_registry_is_kept_for_the_registry_to_refuse(tmp_path):
    from fa_checks.data import DataError, load_data

    raw = saved_raw(tmp_path)
    raw["data"] = {"name": "my-own-images", "size": 3}
    ckpt = load_checkpoint(write_raw(tmp_path / "own.pt", raw))
    assert ckpt.data == {"name": "my-own-images", "size": 3}
    with pytest.raises(DataError, match="unknown dataset 'my-own-images'"):
        load_data(ckpt.data["name"])


def test_a_declared_model_beyond_the_limits_is_refused_from_its_meta_build(tmp_path,
                                                                           monkeypatch):
    raw = saved_raw(tmp_path)
    # each keyword within its own limit; the model they declare is not
    raw["arch_kwargs"].update(d_hidden=65536, num_blocks=1000)
    path = write_raw(tmp_path / "huge.pt", raw)
    import fa_checks.models

    monkeypatch.setattr(fa_checks.models, "build_model",
                        lambda *a, **k: pytest.fail("a model was built"))
    expect_error(path, "arch_kwargs.resmlp needs", "elements of model state", "max_params")


@pytest.mark.parametrize("case", ["num_blocks", "d_hidden", "seed key"])
def test_the_named_hostile_sizes_are_refused_before_even_a_meta_build(tmp_path, monkeypatch,
                                                                      case):
    if case == "seed key":
        state = seed_model().state_dict()
        state["blocks.99999999999999999999.ln.weight"] = torch.zeros(16)
        path, fragment = write_raw(tmp_path / "bad.pt", {"state_dict": state}), "names block"
    else:
        raw = saved_raw(tmp_path)
        raw["arch_kwargs"][case] = 10**6 if case == "num_blocks" else "abc"
        path, fragment = write_raw(tmp_path / "bad.pt", raw), f"arch_kwargs.{case}="
    built = []
    original = nn.Module.__init__

    def recording(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "__init__", recording)
    expect_error(path, fragment)
    assert built == []
