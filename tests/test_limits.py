"""Limits: sizes are checked by type and range before any work, and an override raises them."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fa_checks.errors import ConfigError
from fa_checks.limits import (
    ARCH_DEFAULTS,
    LIMITS_VARIABLE,
    Limits,
    check_arch_options,
    check_count,
    check_method_options,
    check_training,
    default_limits,
    limit_names,
    parse_limits,
)
from fa_checks.models import MODELS, ModelError, build_model
from fa_checks.models.anatomy import Anatomy
from fa_checks.models.size import build_on_meta, check_model_size, hidden_elements, state_elements


def one_sentence(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message and message.strip() == message
    return message


# -- the module ---------------------------------------------------------------------------
def test_limits_import_no_torch_and_refuse_a_huge_model_without_building_one():
    code = (
        "import sys\n"
        "from fa_checks.limits import check_arch_options\n"
        "from fa_checks.errors import ConfigError\n"
        "try:\n"
        "    check_arch_options('resmlp', {'num_blocks': 10**6})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "assert 'torch' not in sys.modules, 'limits imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "num_blocks=1000000: above the limit max_blocks=1024" in done.stdout


def test_measuring_a_model_starts_none_of_torchs_python_meta_kernels():
    """They import sympy on first use: a second more for every command that builds a model."""
    code = (
        "import sys\n"
        "from fa_checks.models import build_model\n"
        "for arch, shape in [('resmlp', (40,)), ('mlp', (40,)), ('vit', (3, 32, 32)),\n"
        "                    ('resnet', (3, 32, 32))]:\n"
        "    build_model(arch, input_shape=shape, num_classes=10)\n"
        "print('sympy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_defaults_match_the_constructors():
    for arch, cls in MODELS.items():
        params = inspect.signature(cls.__init__).parameters
        defaults = {name: p.default for name, p in params.items()
                    if name not in ("self", "input_shape", "num_classes")}
        assert defaults == ARCH_DEFAULTS[arch], arch
    assert set(ARCH_DEFAULTS) == set(MODELS)


small = st.integers(1, 6)


@st.composite
def arch_configs(draw):
    arch = draw(st.sampled_from(sorted(MODELS)))
    classes = draw(st.integers(1, 5))
    if arch in ("resmlp", "mlp"):
        shape = draw(st.lists(small, min_size=1, max_size=3))
        options = {"d_hidden": draw(small)}
        options["num_blocks" if arch == "resmlp" else "depth"] = draw(
            st.integers(0, 3) if arch == "resmlp" else st.integers(2, 5))
    elif arch == "vit":
        patch, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        shape = [draw(st.integers(1, 3)), patch * draw(small), patch * draw(small)]
        options = {"patch_size": patch, "n_heads": heads, "d_model": heads * draw(small),
                   "num_blocks": draw(st.integers(0, 2)),
                   "mlp_ratio": draw(st.sampled_from([0.5, 1.0, 1.5, 2.0]))}
    else:
        shape = [draw(st.integers(1, 3)), draw(small), draw(small)]
        options = {"width": draw(small), "num_blocks": draw(st.integers(0, 2))}
    return arch, {"input_shape": shape, "num_classes": classes, **options}


@given(config=arch_configs())
def test_the_meta_build_measures_what_the_built_model_holds(config):
    """The limits' figures come from the model itself, built on the meta device: the same keys,
    shapes and dtypes as the real model, the same element count, and the hidden shape its
    constructor declares is the shape of every hidden state the model computes."""
    arch, options = config
    model = build_model(arch, **options)
    meta = build_on_meta(lambda: build_model(arch, **options))
    assert all(t.is_meta for t in meta.state_dict().values())
    real = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    assert {k: (tuple(v.shape), v.dtype) for k, v in meta.state_dict().items()} == real
    assert list(meta.state_dict()) == list(model.state_dict())
    assert state_elements(meta) == sum(t.numel() for t in model.state_dict().values())
    hidden = Anatomy(model).hidden_states(torch.zeros(2, *options["input_shape"]))
    assert {tuple(h.shape[1:]) for h in hidden} == {meta.hidden_shape}
    assert hidden_elements(meta) == hidden_elements(model) == math.prod(hidden[0].shape[1:])


# -- overrides ----------------------------------------------------------------------------
def test_the_variable_overrides_the_defaults(monkeypatch):
    monkeypatch.setenv(LIMITS_VARIABLE, "max_params=5e9, max_epochs=100000,")
    limits = default_limits()
    assert limits.max_params == 5_000_000_000 and limits.max_epochs == 100_000
    assert limits.max_blocks == Limits().max_blocks
    monkeypatch.delenv(LIMITS_VARIABLE)
    assert default_limits() == Limits()


@pytest.mark.parametrize("text", ["max_params", "max_params=abc", "max_params=0",
                                  "max_params=1.5", "max_nothing=3", "max_epochs=-1"])
def test_a_malformed_override_is_a_config_error_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(LIMITS_VARIABLE, text)
    with pytest.raises(ConfigError) as info:
        default_limits()
    assert one_sentence(info.value).startswith(f"{LIMITS_VARIABLE}:")


@given(name=st.sampled_from(limit_names()), factor=st.integers(2, 1000))
def test_the_override_a_refusal_suggests_is_accepted(name, factor):
    limits = Limits()
    value = getattr(limits, name) * factor
    with pytest.raises(ConfigError) as info:
        check_count("x", value, name, limits)
    message = one_sentence(info.value)
    suggestion = message.rsplit(f"{LIMITS_VARIABLE}=", 1)[1]
    assert suggestion == f"{name}={value}"
    assert check_count("x", value, name, parse_limits(suggestion)) == value


# -- architectures ------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "options", "fragments"), [
    ("resmlp", {"d_hidden": "abc"}, ["d_hidden='abc'", "whole number"]),
    ("resmlp", {"d_hidden": -1}, ["d_hidden=-1", "1 or more"]),
    ("resmlp", {"d_hidden": 2.5}, ["d_hidden=2.5", "whole number"]),
    ("resmlp", {"d_hidden": True}, ["d_hidden=True", "not true/false"]),
    ("resmlp", {"num_blocks": 10**6}, ["num_blocks=1000000", "max_blocks=1024",
                                       f"{LIMITS_VARIABLE}=max_blocks=1000000"]),
    ("resmlp", {"num_blocks": -2}, ["num_blocks=-2", "0 or more"]),
    ("resmlp", {"residual": "yes"}, ["residual='yes'", "true or false"]),
    ("resmlp", {"w2_std": float("nan")}, ["w2_std=nan", "finite"]),
    ("resmlp", {"d_hidden": 10**6}, ["d_hidden=1000000", "max_width=65536"]),
    ("mlp", {"depth": 1}, ["depth=1", "2 or more"]),
    ("mlp", {"depth": 5000}, ["depth=5000", "max_blocks", "max_blocks=4998"]),
    ("mlp", {"activation": "evil"}, ["activation='evil'", "linear, relu, tanh"]),
    ("vit", {"patch_size": 0}, ["patch_size=0", "1 or more"]),
    ("vit", {"d_model": 16, "n_heads": 3}, ["n_heads=3", "divide d_model=16"]),
    ("vit", {"mlp_ratio": 1e6}, ["mlp_ratio=1000000.0", "max_width=128000000"]),
    ("vit", {"input_shape": [3, 32, 32], "num_classes": 10, "patch_size": 5},
     ["patch_size=5", "divide the image size 32x32"]),
    ("vit", {"input_shape": [3, 512, 512], "num_classes": 10, "patch_size": 1},
     ["262,145 tokens per image", "max_tokens=4096"]),
    ("resnet", {"input_shape": [40], "num_classes": 10}, ["needs image inputs", "(40,)"]),
    ("resmlp", {"input_shape": "abc", "num_classes": 3}, ["input_shape='abc'", "list"]),
    ("resmlp", {"input_shape": [], "num_classes": 3}, ["at least one dimension"]),
    ("resmlp", {"input_shape": [2] * 9, "num_classes": 3}, ["max_input_rank"]),
    ("resmlp", {"input_shape": [0], "num_classes": 3}, ["input_shape[0]=0"]),
    ("resmlp", {"input_shape": [8], "num_classes": 10**9}, ["num_classes", "max_classes"]),
])
def test_bad_arch_options_are_refused_in_one_sentence(arch, options, fragments):
    with pytest.raises(ConfigError) as info:
        check_arch_options(arch, options, Limits())
    message = one_sentence(info.value)
    for fragment in fragments:
        assert fragment in message


WHOLE_MODELS_BEYOND_THE_LIMITS = [
    ("resnet", {"input_shape": [3, 1024, 1024], "num_classes": 10, "width": 64},
     ["hidden-state elements per sample", "max_hidden_elements"]),
    ("resmlp", {"input_shape": [3072], "num_classes": 10, "d_hidden": 65536,
                "num_blocks": 1000}, ["elements of model state", "max_params"]),
]


@pytest.mark.parametrize(("arch", "options", "fragments"), WHOLE_MODELS_BEYOND_THE_LIMITS)
def test_a_whole_model_beyond_the_limits_is_refused_from_its_meta_build(arch, options,
                                                                       fragments):
    # every keyword is within its own limit: only the model, measured on meta, is too large
    assert check_arch_options(arch, options, Limits())["input_shape"] == options["input_shape"]
    with pytest.raises(ModelError) as info:
        build_model(arch, **options)
    message = one_sentence(info.value)
    assert message.startswith(f"{arch} needs ")
    for fragment in fragments:
        assert fragment in message
    kwargs = {k: v for k, v in options.items() if k not in ("input_shape", "num_classes")}
    meta = build_on_meta(lambda: MODELS[arch](input_shape=tuple(options["input_shape"]),
                                              num_classes=10, **kwargs))
    with pytest.raises(ConfigError) as info:
        check_model_size(meta, Limits(), label=arch)
    for fragment in fragments:
        assert fragment in one_sentence(info.value)


def test_arch_options_are_parsed_and_the_caller_names_the_place():
    assert check_arch_options("resmlp", {"d_hidden": "16", "num_blocks": 0.0}) == \
        {"d_hidden": 16, "num_blocks": 0}
    with pytest.raises(ModelError, match=r"^run.pt: arch_kwargs.d_hidden='x': "):
        check_arch_options("resmlp", {"d_hidden": "x"}, where="run.pt: ",
                           prefix="arch_kwargs.", error=ModelError)
    # unknown architectures and keywords are build_model's to refuse
    assert check_arch_options("transformer-xl", {"x": 1}) == {"x": 1}


@pytest.mark.parametrize("options", [{"num_blocks": -2}, {"d_hidden": 0}])
def test_build_model_refuses_before_building_any_module(monkeypatch, options):
    # both would build without complaint: the refusal is the limits' check, and comes first
    built = []
    original = torch.nn.Module.__init__

    def recording(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", recording)
    with pytest.raises(ModelError, match=f"^resmlp {next(iter(options))}="):
        build_model("resmlp", input_shape=(8,), num_classes=3, **options)
    assert built == []


@pytest.mark.parametrize("options", [{"num_blocks": 10**6}, {"d_hidden": "abc"},
                                     {"d_hidden": 10**6}])
def test_a_keyword_beyond_its_limit_is_refused_before_even_a_meta_build(monkeypatch, options):
    built = []
    original = torch.nn.Module.__init__

    def recording(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", recording)
    with pytest.raises(ModelError, match=f"^resmlp {next(iter(options))}="):
        build_model("resmlp", input_shape=(8,), num_classes=3, **options)
    assert built == []


def test_a_raised_limit_lets_a_larger_model_through(monkeypatch):
    options = {"input_shape": [8], "num_classes": 3, "num_blocks": 2000, "d_hidden": 2}
    with pytest.raises(ConfigError):
        check_arch_options("resmlp", options)
    monkeypatch.setenv(LIMITS_VARIABLE, "max_blocks=2000")
    assert check_arch_options("resmlp", options)["num_blocks"] == 2000


# -- training and methods -----------------------------------------------------------------
@pytest.mark.parametrize(("settings", "fragments"), [
    ({"lr": "abc"}, ["--lr='abc'", "a number"]),
    ({"lr": float("nan")}, ["--lr=nan", "finite"]),
    ({"lr": 0}, ["--lr=0", "greater than 0"]),
    ({"weight_decay": -0.1}, ["weight_decay=-0.1", "0 or more"]),
    ({"schedule": "evil"}, ["schedule='evil'", "cosine, constant"]),
    ({"schedule": 3}, ["schedule=3", "cosine, constant"]),
    ({"batch_size": 0}, ["batch_size=0", "1 or more"]),
    ({"batch_size": 2**40}, ["batch_size=", "max_batch_size"]),
    ({"epochs": 10**9}, ["epochs=1000000000", "max_epochs=10000",
                         f"{LIMITS_VARIABLE}=max_epochs=1000000000"]),
    ({"epochs": True}, ["epochs=True"]),
    ({"seed": 2**64}, ["seed=18446744073709551616", "2^63-1"]),
    ({"seed": -1}, ["seed=-1"]),
    ({"eval_size": "many"}, ["eval_size='many'"]),
])
def test_bad_training_settings_are_refused_in_one_sentence(settings, fragments):
    with pytest.raises(ConfigError) as info:
        check_training(**settings, names={"lr": "--lr"})
    message = one_sentence(info.value)
    for fragment in fragments:
        assert fragment in message


def test_training_settings_are_parsed():
    assert check_training(epochs="3", seed="7", batch_size=32.0, lr="1e-3", weight_decay=0,
                          schedule=" Cosine ", eval_size=64) == {
        "epochs": 3, "seed": 7, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0,
        "schedule": "cosine", "eval_size": 64}
    assert check_training() == {}


@pytest.mark.parametrize(("options", "fragments"), [
    ({"vnet_width": 10**7}, ["vnet_width=10000000", "max_width"]),
    ({"vnet_width": 60000, "vnet_depth": 100}, ["about width^2 x (depth+1)", "max_params"]),
    ({"fd_directions": 10**6}, ["fd_directions=1000000", "max_directions"]),
    ({"switch_epoch": 10**8}, ["switch_epoch=100000000", "max_epochs"]),
    ({"penalty": float("inf")}, ["penalty=inf", "finite"]),
    ({"penalty": [1, 2]}, ["penalty=[1, 2]", "a number, true/false, text or none"]),
    ({"schedule": "x" * 300}, ["at most 200 characters"]),
])
def test_bad_method_options_are_refused(options, fragments):
    with pytest.raises(ConfigError) as info:
        check_method_options("vec", options)
    message = one_sentence(info.value)
    for fragment in fragments:
        assert fragment in message


def test_plain_method_options_pass_unchanged():
    options = {"schedule": "vec_then_dfa", "switch_epoch": 5, "vnet_width": 64,
               "vnet_depth": 2, "clip": None, "alpha": 0.5, "flag": True}
    assert check_method_options("vec", options) == options
