"""fa_checks.models.check_input_shape: an architecture that cannot take a dataset's inputs is
refused in one sentence, before anything is built, by every path that builds a model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fa_checks.cli.main import main
from fa_checks.data import available_datasets, data_shape, needs_root
from fa_checks.errors import UserError
from fa_checks.models import MODELS, ModelError, ResNet, ViT, build_model, check_input_shape

IMAGE_ARCHS = ["resnet", "vit"]
FLAT_ARCHS = ["mlp", "resmlp"]


def one_sentence(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.count(". ") == 0, text
    return text


def test_the_image_architectures_are_the_ones_that_say_so():
    assert sorted(name for name, cls in MODELS.items() if cls.needs_image) == IMAGE_ARCHS


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_an_image_architecture_on_flat_data_names_the_dataset_and_what_fits(arch):
    with pytest.raises(ModelError) as error:
        check_input_shape(arch, (40,), "mnist1d")
    text = one_sentence(error.value)
    assert text.startswith(f"architecture {arch!r} needs image inputs (channels, height, width)")
    assert "dataset 'mnist1d' gives inputs shaped (40,)" in text
    assert "'digits'" in text and "cifar10 / cifar100 / mnist" in text
    assert isinstance(error.value, UserError)


@pytest.mark.parametrize(("prefix", "data", "root"), [("--", "--data", "--data-root"),
                                                      ("--fa-", "--fa-data", "--fa-data-root")])
def test_the_advice_spells_the_options_of_the_face_that_asks(prefix, data, root):
    with pytest.raises(ModelError) as error:
        check_input_shape("vit", (20,), "synthetic", flag_prefix=prefix)
    text = one_sentence(error.value)
    assert f"use {data} digits (offline), or {data} cifar10 / cifar100 / mnist with {root} DIR" \
        in text


def test_every_dataset_the_advice_names_has_images_and_the_offline_one_needs_no_folder():
    with pytest.raises(ModelError) as error:
        check_input_shape("resnet", (40,))
    text = str(error.value)
    assert "the data gives inputs shaped (40,)" in text
    named = [name for name in available_datasets() if f"{name}" in text.replace("mnist1d", "")]
    assert set(named) == {"digits", "cifar10", "cifar100", "mnist"}
    for name in named:
        assert len(data_shape(name).input_shape) == 3
    assert not needs_root("digits")


@pytest.mark.parametrize("arch", IMAGE_ARCHS + FLAT_ARCHS)
def test_every_architecture_takes_every_image_dataset(arch):
    for name in available_datasets():
        shape = data_shape(name).input_shape
        if len(shape) == 3 or arch in FLAT_ARCHS:
            assert check_input_shape(arch, shape, name) == shape


def test_flat_architectures_take_any_shape_and_the_result_is_a_tuple_of_ints():
    assert check_input_shape("resmlp", [40]) == (40,)
    assert check_input_shape("mlp", torch.Size([1, 8, 8])) == (1, 8, 8)


@pytest.mark.parametrize("shape", [(), (0,), (3, -1, 4), (True, 2), ("40",), 40, (2.5,)])
def test_a_shape_that_is_no_shape_is_refused(shape):
    with pytest.raises(ModelError, match="non-empty shape of positive integers"):
        check_input_shape("resmlp", shape, "x")


def test_an_unknown_architecture_is_refused_with_the_choices():
    with pytest.raises(ModelError, match="unknown architecture 'vgg'.*resmlp"):
        check_input_shape("vgg", (1, 8, 8))


@given(side=st.integers(1, 40), patch=st.integers(1, 40))
def test_vit_patches_must_tile_the_image(side, patch):
    shape = (1, side, side + patch) if side % 2 else (3, side, side)
    fits = shape[1] % patch == 0 and shape[2] % patch == 0
    if fits:
        assert check_input_shape("vit", shape, sizes={"patch_size": patch}) == shape
        return
    with pytest.raises(ModelError) as error:
        check_input_shape("vit", shape, "digits", sizes={"patch_size": patch})
    text = one_sentence(error.value)
    assert f"patch_size {patch} does not tile the {shape[1]}x{shape[2]} images of dataset " \
           "'digits'" in text
    divisors = [int(d) for d in text.rsplit("(", 1)[1].rstrip(")").split(", ")]
    assert divisors and all(shape[1] % d == 0 and shape[2] % d == 0 for d in divisors)


def test_vit_default_patch_size_is_checked_when_none_is_given():
    default = 4
    assert check_input_shape("vit", (1, 8, 8), "digits") == (1, 8, 8)
    with pytest.raises(ModelError, match=f"patch_size {default} does not tile the 6x6"):
        check_input_shape("vit", (1, 6, 6))


@pytest.mark.parametrize("bad", [0, -4, 2.0, "4", True])
def test_vit_patch_size_must_be_a_positive_integer(bad):
    with pytest.raises(ModelError, match="patch_size must be a positive integer"):
        check_input_shape("vit", (1, 8, 8), sizes={"patch_size": bad})


# -- every path that builds a model goes through the check ----------------------------------
@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_build_model_refuses_flat_inputs_naming_the_dataset(arch):
    with pytest.raises(ModelError, match="dataset 'mnist1d' gives inputs shaped \\(40,\\)"):
        build_model(arch, input_shape=(40,), num_classes=10, dataset="mnist1d")
    model = build_model(arch, input_shape=(1, 8, 8), num_classes=10, dataset="digits")
    assert "dataset" not in model.spec["kwargs"]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_the_model_classes_refuse_too_when_built_directly():
    with pytest.raises(ModelError, match="needs image inputs"):
        ResNet(input_shape=(40,), num_classes=10)
    with pytest.raises(ModelError, match="patch_size 3 does not tile the 8x8"):
        ViT(input_shape=(1, 8, 8), num_classes=10, patch_size=3)


def test_the_command_line_refuses_vit_on_the_default_data_in_one_line(tmp_path, capsys):
    """It ended in a ValueError traceback (issue 11)."""
    code = main(["train", "--method", "bp", "--arch", "vit", "--epochs", "1",
                 "-o", str(tmp_path / "x.pt")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "architecture 'vit' needs image inputs" in err and "digits" in err
    assert not (tmp_path / "x.pt").exists()
