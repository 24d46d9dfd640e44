"""fa_checks.data: generated and on-disk datasets, tensor-resident batching, batched crop/flip."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import fa_checks.data.mnist1d as mnist1d_module
from fa_checks.data import (
    Augmentation,
    DataError,
    Dataset,
    available_datasets,
    crop_flip,
    data_shape,
    dataset_defaults,
    default_data_dir,
    load_data,
    needs_root,
    resolve_spec,
)
from fa_checks.data.vision import CIFAR

SMALL = {"num_samples": 100}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private mnist1d cache, so tests neither read nor write the user's."""
    directory = tmp_path / "data-cache"
    monkeypatch.setenv("FA_CHECKS_DATA_DIR", str(directory))
    return directory


def digest(dataset: Dataset) -> str:
    h = hashlib.sha256()
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_same_tensors(a: Dataset, b: Dataset) -> None:
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def count_generations(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    original = mnist1d_module._generate

    def spy(params: dict) -> dict:
        calls.append(dict(params))
        return original(params)

    monkeypatch.setattr(mnist1d_module, "_generate", spy)
    return calls


# ------------------------------------------------------------------------------------- mnist1d

def test_mnist1d_defaults_shapes_and_dtypes(data_dir: Path) -> None:
    data = load_data()  # the default dataset, default parameters
    assert data.name == "mnist1d"
    assert data.spec == {"name": "mnist1d", "num_samples": 10_000, "train_split": 0.8, "seed": 42}
    assert data.x_train.shape == (8000, 40) and data.x_test.shape == (2000, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (40,)
    assert data.augmentation is None
    assert sorted(torch.cat([data.y_train, data.y_test]).bincount().tolist()) == [1000] * 10
    assert list(data_dir.glob("*.pt")), "generated data is cached on disk"


def test_mnist1d_is_the_packages_own_recipe(data_dir: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 100, 0.8, 7
    reference = make_dataset(args)
    data = load_data("mnist1d", num_samples=100, seed=7)
    assert torch.equal(data.x_train, torch.from_numpy(reference["x"].astype(np.float32)))
    assert torch.equal(data.x_test, torch.from_numpy(reference["x_test"].astype(np.float32)))
    assert torch.equal(data.y_train, torch.from_numpy(reference["y"]).long())
    assert torch.equal(data.y_test, torch.from_numpy(reference["y_test"]).long())


def test_mnist1d_same_bits_on_every_machine(data_dir: Path) -> None:
    # Recorded once; a change means the generator (mnist1d, numpy or scipy) no longer gives the
    # samples that checkpoints and reference numbers were made with.
    data = load_data("mnist1d", **SMALL)
    assert digest(data) == "757f6fbd3b2aed353afce941f0ec5c091ca8c1ea8030e66649641cc1e372585e"


def test_mnist1d_two_generations_and_cached_copy_are_identical(tmp_path: Path) -> None:
    first = load_data("mnist1d", root=tmp_path / "a", **SMALL)
    second = load_data("mnist1d", root=tmp_path / "b", **SMALL)
    cached = load_data("mnist1d", root=tmp_path / "a", **SMALL)
    assert_same_tensors(first, second)
    assert_same_tensors(first, cached)
    other_seed = load_data("mnist1d", root=tmp_path / "a", num_samples=100, seed=43)
    assert not torch.equal(first.x_train, other_seed.x_train)


def test_mnist1d_second_load_reads_the_cache(data_dir: Path, monkeypatch) -> None:
    calls = count_generations(monkeypatch)
    load_data("mnist1d", **SMALL)
    (path,) = data_dir.glob("*.pt")
    written = path.stat().st_mtime_ns
    load_data("mnist1d", **SMALL)
    assert calls == [{"num_samples": 100, "train_split": 0.8, "seed": 42}]
    assert path.stat().st_mtime_ns == written
    load_data("mnist1d", num_samples=100, train_split=0.5)
    assert len(calls) == 2 and len(list(data_dir.glob("*.pt"))) == 2


def test_mnist1d_leaves_global_random_state_alone(data_dir: Path) -> None:
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    load_data("mnist1d", **SMALL)
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_mnist1d_writes_nothing_outside_its_cache(data_dir: Path, tmp_path, monkeypatch) -> None:
    # mnist1d's own get_dataset would download a pickle and write ./mnist1d_data.pkl.
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    load_data("mnist1d", download=True, **SMALL)
    assert list(work.iterdir()) == []
    assert {p.suffix for p in data_dir.iterdir()} <= {".pt", ".lock"}


def test_mnist1d_damaged_cache_is_regenerated(data_dir: Path, monkeypatch) -> None:
    good = load_data("mnist1d", **SMALL)
    (path,) = data_dir.glob("*.pt")
    path.write_bytes(b"not a torch file")
    calls = count_generations(monkeypatch)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = load_data("mnist1d", **SMALL)
    assert len(calls) == 1
    assert_same_tensors(good, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_tensors(good, load_data("mnist1d", **SMALL))  # the file was repaired


CONCURRENT_LOADER = textwrap.dedent(
    """
    import hashlib, sys, time
    from pathlib import Path
    import fa_checks.data.mnist1d as module
    from fa_checks.data import load_data

    log, ready = Path(sys.argv[1]), Path(sys.argv[2])
    original = module._generate

    def slow_generate(params):
        with open(log, "a") as handle:
            handle.write("generated\\n")
        time.sleep(1.0)  # hold the lock long enough for the other process to queue on it
        return original(params)

    module._generate = slow_generate
    (ready / str(time.monotonic_ns())).touch()
    deadline = time.monotonic() + 120
    while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cached_before = any(module.default_data_dir().glob("*.pt"))
    data = load_data("mnist1d", num_samples=100)
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(t.numpy().tobytes())
    print("hit" if cached_before else "miss", h.hexdigest())
    """
)


def test_mnist1d_concurrent_generation_is_safe(tmp_path: Path) -> None:
    script = tmp_path / "loader.py"
    script.write_text(CONCURRENT_LOADER)
    log, ready, cache = tmp_path / "generations.log", tmp_path / "ready", tmp_path / "cache"
    ready.mkdir()
    env = {**os.environ, "FA_CHECKS_DATA_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, str(script), str(log), str(ready)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    lines = [stdout.split() for stdout, _ in outputs]
    # Both started before the file existed, so the lock (not luck) kept it to one generation.
    assert [line[0] for line in lines] == ["miss", "miss"]
    hashes = {line[1] for line in lines}
    assert len(hashes) == 1
    assert log.read_text().splitlines() == ["generated"]
    assert len(list(cache.glob("*.pt"))) == 1
    assert not list(cache.glob("*.tmp"))
    local = load_data("mnist1d", root=cache, **SMALL)
    assert digest(local) == hashes.pop()


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FA_CHECKS_DATA_DIR", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("FA_CHECKS_DATA_DIR")
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "cache"))  # one cache root
    assert default_data_dir() == tmp_path / "cache" / "data"
    monkeypatch.delenv("FA_CHECKS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_data_dir() == Path.home() / ".cache" / "fa-checks" / "data"


def test_generated_data_is_in_the_one_cache_that_info_and_clear_see(monkeypatch, tmp_path,
                                                                     capsys) -> None:
    from fa_checks.cli.main import main
    from fa_checks.settings import Settings

    monkeypatch.delenv("FA_CHECKS_DATA_DIR", raising=False)
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "cache"))
    load_data("mnist1d", **SMALL)
    assert len(list((tmp_path / "cache" / "data").glob("*.pt"))) == 1
    assert main(["cache", "info"]) == 0
    assert "data  1" in capsys.readouterr().out
    assert main(["cache", "clear", "--kind", "data"]) == 0
    assert not list((tmp_path / "cache" / "data").glob("*.pt")) if (
        tmp_path / "cache" / "data").exists() else True
    # --cache-dir moves the generated data with the rest
    moved = Settings(cache_dir=str(tmp_path / "elsewhere"))
    assert moved.data_root_for("mnist1d") == str(tmp_path / "elsewhere" / "data")
    assert moved.data_root_for("cifar10") is None


# ------------------------------------------------------------------------ names and parameters

def test_available_datasets_and_defaults() -> None:
    assert available_datasets() == ["cifar10", "cifar100", "digits", "mnist", "mnist1d",
                                    "synthetic"]
    assert dataset_defaults("synthetic") == {"num_samples": 512, "dim": 20, "num_classes": 4,
                                             "seed": 0}
    assert dataset_defaults("cifar10") == {}


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as error:
        load_data("imagenet")
    for name in available_datasets():
        assert name in str(error.value)


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match="no parameter 'samples'") as error:
        load_data("synthetic", samples=10)
    assert "num_samples=512" in str(error.value) and "seed=0" in str(error.value)
    with pytest.raises(DataError, match="takes no parameters"):
        load_data("cifar10", root="/nonexistent", seed=1)


def test_string_parameters_are_converted_as_a_command_line_passes_them(data_dir: Path) -> None:
    data = load_data("mnist1d", num_samples="100", train_split="0.5", seed="3")
    assert data.spec == {"name": "mnist1d", "num_samples": 100, "train_split": 0.5, "seed": 3}
    assert data.x_train.shape[0] == 50
    assert load_data("synthetic", num_samples=100.0).spec["num_samples"] == 100


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_samples": "lots"}, "'num_samples' must be an integer.*'lots'"),
        ({"num_samples": 10.5}, "'num_samples' must be an integer"),
        ({"seed": True}, "'seed' must be an integer"),
        ({"train_split": "half"}, "'train_split' must be a number"),
        ({"num_samples": 105}, "multiple of 10"),
        ({"train_split": 1.0}, "train_split must lie strictly in"),
        ({"num_samples": 10, "train_split": 0.05}, "leaves 0 training"),
        ({"seed": -1}, "seed must lie in"),
    ],
)
def test_bad_mnist1d_parameters_are_refused(params: dict, message: str, data_dir: Path) -> None:
    with pytest.raises(DataError, match=message):
        load_data("mnist1d", **params)


def test_resolve_spec_checks_without_loading(data_dir: Path, monkeypatch) -> None:
    calls = count_generations(monkeypatch)
    assert resolve_spec() == {"name": "mnist1d", "num_samples": 10_000, "train_split": 0.8,
                              "seed": 42}
    assert resolve_spec("MNIST1D", num_samples="200")["num_samples"] == 200
    assert resolve_spec("cifar10") == {"name": "cifar10"}  # no root needed to check the request
    with pytest.raises(DataError, match="multiple of 10"):
        resolve_spec("mnist1d", num_samples=15)
    with pytest.raises(DataError, match="dim must be at least 1"):
        resolve_spec("synthetic", dim=0)
    assert calls == [] and not data_dir.exists()
    assert load_data("synthetic", num_samples=50).spec == resolve_spec("synthetic", num_samples=50)


def test_data_shape_is_known_for_every_dataset_without_loading(data_dir: Path, monkeypatch):
    import fa_checks.data as data_module

    for name, source in data_module._SOURCES.items():
        monkeypatch.setitem(data_module._SOURCES, name, dataclasses.replace(
            source, load=lambda *a, **k: pytest.fail("data_shape loaded the data")))
    assert data_shape() == ((40,), 10)  # the default dataset
    assert data_shape("synthetic", dim="7", num_classes=3) == ((7,), 3)
    assert data_shape("digits") == ((1, 8, 8), 10)
    assert data_shape("cifar10") == ((3, 32, 32), 10)  # no root needed
    assert data_shape("CIFAR100") == ((3, 32, 32), 100)
    assert data_shape("mnist") == ((1, 28, 28), 10)
    with pytest.raises(DataError, match="dim must be at least 1"):
        data_shape("synthetic", dim=0)
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        data_shape("imagenet")
    assert not data_dir.exists()


@pytest.mark.parametrize(("name", "params"), [
    ("mnist1d", {"num_samples": 100}), ("synthetic", {"dim": 5, "num_classes": 3}),
    ("cifar10", {}), ("cifar100", {}), ("mnist", {}),
])
def test_data_shape_agrees_with_the_loaded_data(name, params, data_dir: Path, tmp_path: Path):
    root = None
    if needs_root(name):
        root = tmp_path / "files"
        if name == "mnist":
            write_mnist(root)
        else:
            write_cifar(root, name)
    data = load_data(name, root=root, **params)
    assert data_shape(name, **params) == (data.input_shape, data.num_classes)
    assert type(data_shape(name, **params).input_shape[0]) is int


def test_spec_is_json_and_rebuilds_the_same_data(tmp_path: Path) -> None:
    data = load_data("mnist1d", root=tmp_path / "one", num_samples=100, seed=5)
    spec = json.loads(json.dumps(data.spec))
    assert_same_tensors(data, load_data(**spec, root=tmp_path / "two"))
    synthetic = load_data("synthetic", dim=7, seed=2)
    assert_same_tensors(synthetic, load_data(**json.loads(json.dumps(synthetic.spec))))


# ----------------------------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_balanced_and_shaped() -> None:
    data = load_data("synthetic")
    assert data.x_train.shape == (409, 20) and data.x_test.shape == (103, 20)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 4 and data.input_shape == (20,)
    labels = torch.cat([data.y_train, data.y_test])
    assert labels.bincount().tolist() == [128] * 4
    assert_same_tensors(data, load_data("synthetic"))
    assert not torch.equal(data.x_train, load_data("synthetic", seed=1).x_train)


def test_synthetic_parameters_shape_the_task() -> None:
    data = load_data("synthetic", num_samples=60, dim=3, num_classes=6)
    assert data.x_train.shape == (48, 3) and data.num_classes == 6
    assert set(torch.cat([data.y_train, data.y_test]).tolist()) == set(range(6))
    with pytest.raises(DataError, match="num_classes must be at least 2"):
        load_data("synthetic", num_classes=1)


def test_bp_learns_synthetic_well_above_chance_in_two_epochs() -> None:
    from fa_checks.models import build_model

    data = load_data("synthetic")
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        d_hidden=16, num_blocks=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        for x, y in data.batches(64, generator=generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.8  # chance is 0.25


# ------------------------------------------------------------------------------------ batching

def counting_dataset(n: int, *, image: bool = False) -> Dataset:
    """Sample i's input holds the value i everywhere, so batches reveal which samples they hold."""
    shape = (2, 6, 5) if image else (3,)
    values = torch.arange(n, dtype=torch.float32).view(n, *[1] * len(shape))
    x = values.expand(n, *shape).clone()
    if image:  # a distinct value per pixel too, so crops and flips are visible
        x = x * 1000 + torch.arange(60, dtype=torch.float32).view(1, *shape)
    return Dataset(
        name="counting", x_train=x, y_train=torch.arange(n) % 3, x_test=x[: n // 2],
        y_test=torch.arange(n // 2) % 3, num_classes=3, input_shape=shape,
        augmentation=Augmentation(crop_padding=2) if image else None,
    )


@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), shuffle=st.booleans(),
       seed=st.integers(0, 2**31))
def test_batches_cover_every_sample_once_per_epoch(n, batch_size, shuffle, seed) -> None:
    data = counting_dataset(n)
    batches = data.batches(batch_size, generator=torch.Generator().manual_seed(seed),
                           shuffle=shuffle)
    seen, sizes = [], []
    for x, y in batches:
        ids = x[:, 0].long()
        assert torch.equal(y, ids % 3), "labels travel with their inputs"
        seen.extend(ids.tolist())
        sizes.append(len(ids))
    assert sorted(seen) == list(range(n))
    assert len(batches) == len(sizes) == -(-n // batch_size)
    assert all(size == batch_size for size in sizes[:-1]) and 1 <= sizes[-1] <= batch_size
    if not shuffle:
        assert seen == list(range(n))


def test_shuffle_is_determined_by_the_generator() -> None:
    data = counting_dataset(50)

    def order(seed: int) -> list[int]:
        batches = data.batches(8, generator=torch.Generator().manual_seed(seed))
        return [int(i) for x, _ in batches for i in x[:, 0]]

    assert order(1) == order(1)
    assert order(1) != order(2)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(1)).tolist()
    assert order(1) == expected  # the permutation is the generator's first draw


def test_epoch_is_fixed_when_batches_is_called() -> None:
    data = counting_dataset(40, image=True)
    generator = torch.Generator().manual_seed(3)
    batches = data.batches(16, generator=generator)
    first = [x.clone() for x, _ in batches]
    torch.rand(100, generator=generator)  # someone else draws from the same generator mid-epoch
    again = [x for x, _ in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_batches_need_a_generator_only_for_randomness() -> None:
    data = counting_dataset(10)
    with pytest.raises(DataError, match="needs a torch.Generator"):
        data.batches(4, generator=None)
    assert len(list(data.batches(4, generator=None, shuffle=False))) == 3
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        data.batches(0, generator=torch.Generator())


def test_eval_batch_is_the_first_test_samples() -> None:
    data = counting_dataset(20)
    x, y = data.eval_batch(4)
    assert torch.equal(x, data.x_test[:4]) and torch.equal(y, data.y_test[:4])
    x, y = data.eval_batch(10_000)
    assert x.shape[0] == data.num_test == 10
    with pytest.raises(DataError, match="positive number"):
        data.eval_batch(0)


def test_to_returns_a_copy_with_the_same_content() -> None:
    data = load_data("synthetic", num_samples=40)
    moved = data.to("cpu")
    assert moved is not data and moved.device == torch.device("cpu")
    assert moved.spec == data.spec and moved.spec is not data.spec
    assert_same_tensors(data, moved)


def test_dataset_checks_its_tensors() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(DataError, match="train inputs have 4 samples but train labels have 3"):
        Dataset("bad", x, y[:3], x, y, 2, (3,))
    with pytest.raises(DataError, match=r"input_shape says \(5,\)"):
        Dataset("bad", x, y, x, y, 2, (5,))
    with pytest.raises(DataError, match="int64"):
        Dataset("bad", x, y.int(), x, y, 2, (3,))
    with pytest.raises(DataError, match="outside 0..1"):
        Dataset("bad", x, y + 2, x, y, 2, (3,))
    with pytest.raises(DataError, match=r"needs \(C, H, W\)"):
        Dataset("bad", x, y, x, y, 2, (3,), augmentation=Augmentation())
    assert Dataset("ok", x, y, x, y, 2, [3]).spec == {"name": "ok"}


# -------------------------------------------------------------------------------- augmentation

def reference_crop_flip(x, top, left, flip, padding):
    """The per-sample definition (torchvision's RandomCrop with zero padding, then a flip)."""
    height, width = x.shape[-2:]
    out = []
    for image, t, l, f in zip(x, top.tolist(), left.tolist(), flip.tolist(), strict=True):
        crop = F.pad(image, (padding,) * 4)[:, t:t + height, l:l + width]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


@given(n=st.integers(1, 6), channels=st.integers(1, 3), height=st.integers(1, 7),
       width=st.integers(1, 7), padding=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_crop_flip_matches_the_per_sample_definition(n, channels, height, width, padding, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, height, width, generator=generator)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    out = crop_flip(x, top, left, flip, padding=padding)
    assert torch.equal(out, reference_crop_flip(x, top, left, flip, padding))


def test_centred_crop_is_identity_or_mirror() -> None:
    x = torch.randn(8, 3, 5, 5)
    flip = torch.tensor([True, False] * 4)
    centre = torch.full((8,), 4)
    out = crop_flip(x, centre, centre, flip, padding=4)
    assert torch.equal(out[flip], x[flip].flip(-1))
    assert torch.equal(out[~flip], x[~flip])


def test_corner_crop_shows_the_zero_padding() -> None:
    x = torch.rand(2, 1, 6, 6) + 1.0
    zero = torch.zeros(2, dtype=torch.long)
    out = crop_flip(x, zero, zero, torch.zeros(2, dtype=torch.bool), padding=2)
    assert torch.all(out[..., :2, :] == 0) and torch.all(out[..., :, :2] == 0)
    assert torch.equal(out[..., 2:, 2:], x[..., :4, :4])


def test_image_batches_are_cropped_and_flipped_as_drawn() -> None:
    data = counting_dataset(64, image=True)
    batches = data.batches(20, generator=torch.Generator().manual_seed(11))
    plan = batches.plan
    # The documented draw order: permutation, then tops, lefts and flips.
    replay = torch.Generator().manual_seed(11)
    assert torch.equal(batches.order, torch.randperm(64, generator=replay))
    assert torch.equal(plan.top, torch.randint(0, 5, (64,), generator=replay))
    assert torch.equal(plan.left, torch.randint(0, 5, (64,), generator=replay))
    assert torch.equal(plan.flip, torch.randint(0, 2, (64,), generator=replay).bool())
    assert plan.top.min() >= 0 and plan.top.max() <= 4 and plan.flip.any() and not plan.flip.all()
    start = 0
    for x, y in batches:
        index = batches.order[start:start + len(x)]
        expected = reference_crop_flip(data.x_train[index], plan.top[start:start + len(x)],
                                       plan.left[start:start + len(x)],
                                       plan.flip[start:start + len(x)], padding=2)
        assert torch.equal(x, expected) and torch.equal(y, data.y_train[index])
        start += len(x)
    assert start == 64


def test_augment_false_and_non_image_data_are_left_alone() -> None:
    data = counting_dataset(30, image=True)
    batches = data.batches(30, generator=torch.Generator().manual_seed(0), augment=False)
    (x, _), = list(batches)
    assert batches.plan is None and torch.equal(x, data.x_train[batches.order])
    flat = counting_dataset(30)
    (x, _), = list(flat.batches(30, generator=torch.Generator().manual_seed(0), augment=True))
    assert sorted(x[:, 0].tolist()) == list(range(30)) and torch.equal(x[:, 0:1].expand(-1, 3), x)


# --------------------------------------------------------------------------- CIFAR and MNIST

def write_cifar(root: Path, name: str, *, per_file: int = 3, core_module: str | None = None,
                seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Batch files in the python-version layout; ``core_module`` renames numpy's module path
    in the pickle, as in files written by older numpy (``numpy.core.multiarray``)."""
    info = CIFAR[name]
    folder = root / info["folder"]
    folder.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    written = {}
    for file in info["train_files"] + info["test_files"]:
        data = rng.randint(0, 256, size=(per_file, 3072)).astype(np.uint8)
        labels = rng.randint(0, info["num_classes"], size=per_file).tolist()
        entry = {"data": data, info["label_key"]: labels, "batch_label": file}
        blob = pickle.dumps(entry, protocol=2)
        if core_module:
            blob = blob.replace(b"numpy._core.multiarray", core_module.encode())
        (folder / file).write_bytes(blob)
        written[file] = (data, labels)
    return written


def torchvision_pipeline(data: np.ndarray, mean, std) -> torch.Tensor:
    """The seeds' per-sample path: PIL image -> ToTensor -> Normalize."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return torch.stack([transform(Image.fromarray(image)) for image in images])


@pytest.mark.parametrize("core_module", [None, "numpy.core.multiarray"])
def test_cifar10_from_local_files(tmp_path: Path, core_module: str | None) -> None:
    written = write_cifar(tmp_path, "cifar10", core_module=core_module)
    data = load_data("cifar10", root=tmp_path)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert data.spec == {"name": "cifar10"}
    assert data.augmentation == Augmentation(crop_padding=4, horizontal_flip=True)
    train_pixels = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected = torchvision_pipeline(train_pixels, CIFAR["cifar10"]["mean"],
                                    CIFAR["cifar10"]["std"])
    torch.testing.assert_close(data.x_train, expected, rtol=0, atol=1e-6)
    labels = [label for i in range(1, 6) for label in written[f"data_batch_{i}"][1]]
    assert data.y_train.tolist() == labels
    assert data.y_test.tolist() == written["test_batch"][1]
    # The root may also name the batch folder itself; the spec rebuilds it from any root.
    assert_same_tensors(data, load_data("cifar10", root=tmp_path / "cifar-10-batches-py"))
    assert_same_tensors(data, load_data(**data.spec, root=tmp_path))


def test_cifar100_uses_fine_labels_and_its_own_statistics(tmp_path: Path) -> None:
    written = write_cifar(tmp_path, "cifar100", per_file=40)
    data = load_data("cifar100", root=tmp_path)
    assert data.num_classes == 100 and data.x_train.shape == (40, 3, 32, 32)
    assert data.y_train.tolist() == written["train"][1]
    expected = torchvision_pipeline(written["test"][0], CIFAR["cifar100"]["mean"],
                                    CIFAR["cifar100"]["std"])
    torch.testing.assert_close(data.x_test, expected, rtol=0, atol=1e-6)


def test_cifar_missing_root_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no root was given") as error:
        load_data("cifar10")
    assert "--fa-data-root" in str(error.value) and "download=True" in str(error.value)
    empty = tmp_path / "empty"
    with pytest.raises(DataError) as error:
        load_data("cifar100", root=empty)
    message = str(error.value)
    assert str(empty) in message and "CIFAR-100" in message and "download=True" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message


def test_cifar_reader_refuses_code_in_a_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(pickle.dumps({"data": Payload(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load") as error:
        load_data("cifar10", root=tmp_path)
    assert "data_batch_3" in str(error.value)


def test_cifar_damaged_file_names_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(DataError, match="test_batch"):
        load_data("cifar10", root=tmp_path)


def write_mnist(root: Path, *, train: int = 6, test: int = 4, seed: int = 0) -> dict:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    arrays = {}
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([2049, n], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
        arrays[prefix] = (images, labels)
    return arrays


def test_mnist_from_local_files(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    data = load_data("mnist", root=tmp_path)
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.augmentation is None  # the seeds neither crop nor flip digits
    images, labels = arrays["train"]
    expected = (torch.from_numpy(images).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(data.x_train, expected, rtol=0, atol=1e-6)
    assert data.y_train.tolist() == labels.tolist()
    assert data.y_test.tolist() == arrays["t10k"][1].tolist()
    assert_same_tensors(data, load_data("mnist", root=tmp_path / "MNIST" / "raw"))


def test_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as error:
        load_data("mnist", root=tmp_path)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "download=True" in message and "https://" in message
    with pytest.raises(DataError, match="no root was given"):
        load_data("mnist")
