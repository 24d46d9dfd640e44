"""The training driver: seeding, schedule, history, progress, checkpoint, divergence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fa_checks.checkpoint import load_checkpoint
from fa_checks.data import load_data
from fa_checks.diagnostics.protocol import evaluate
from fa_checks.methods import Method, MethodError
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of, per_sample_norm
from fa_checks.training.loop import train

DATA = {"num_samples": 200}  # 160 training samples
ARCH = {"d_hidden": 16, "num_blocks": 2}


def tiny(method, **overrides):
    kwargs = {"epochs": 2, "seed": 0, "batch_size": 64, "lr": 1e-2, "device": "cpu",
              "arch_options": ARCH, "progress": False, "eval_size": 8}
    data = overrides.pop("data", "synthetic")
    if isinstance(data, str):
        kwargs["data_options"] = DATA
    kwargs.update(overrides)
    return train(method, "resmlp", data, **kwargs)


class Recorder(Method):
    """Backpropagation that records the learning rate at each epoch and the batch sizes."""

    name = "test-recorder"

    def init_state(self, generator):
        self.lrs = []

    def epoch_start(self, epoch, epochs):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])

    def step(self, x, y):
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.anatomy.logits(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "batch": float(x.shape[0])}


class Diverging(Recorder):
    """Turns every parameter into NaN at its third step."""

    name = "test-diverging"

    def init_state(self, generator):
        super().init_state(generator)
        self.steps = 0

    def step(self, x, y):
        self.steps += 1
        if self.steps >= 3:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return super().step(x, y)


def test_same_arguments_give_identical_tensors():
    first, second, other = tiny("bp"), tiny("bp"), tiny("bp", seed=1)
    a, b, c = (r.model.state_dict() for r in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.history == second.history
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


def test_model_initialisation_comes_from_the_seed():
    run = tiny("frozen", seed=5)  # frozen blocks keep their initial weights
    data = load_data("synthetic", **DATA)
    torch.manual_seed(5)
    fresh = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        **ARCH)
    for trained, initial in zip(run.model.blocks.parameters(), fresh.blocks.parameters(),
                                strict=True):
        assert torch.equal(trained, initial)
    assert not torch.equal(run.model.out_head.weight, fresh.out_head.weight)


def test_history_figures_are_what_they_say():
    method = Recorder()
    run = tiny(method, epochs=2)
    assert [e["epoch"] for e in run.history] == [1, 2]
    for entry in run.history:
        assert set(entry) == {"epoch", "train_loss", "test_acc", "h_L", "g_L", "hidden_norms",
                              "growth", "diverged", "batch"}
        assert entry["diverged"] is False and math.isfinite(entry["train_loss"])
        # the method's own figure is averaged over samples: batches of 64, 64 and 32
        assert entry["batch"] == pytest.approx((64 * 64 + 64 * 64 + 32 * 32) / 160)

    model, data = run.model.eval(), run.data
    with torch.no_grad():
        correct = (model(data.x_test).argmax(-1) == data.y_test).float().mean()
    assert run.test_acc == run.history[-1]["test_acc"] == pytest.approx(float(correct))

    x, y = data.eval_batch(8)
    anatomy = anatomy_of(model)
    with torch.no_grad():
        h_last = anatomy.hidden_states(x)[-1]
    assert run.history[-1]["h_L"] == pytest.approx(float(per_sample_norm(h_last).median()))
    own_grads = []  # each sample alone: its own loss gradient at h_L
    for i in range(8):
        h = anatomy.hidden_states(x[i:i + 1])[-1].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(anatomy.readout(h), y[i:i + 1]), h)
        own_grads.append(grad.norm())
    assert run.history[-1]["g_L"] == pytest.approx(float(torch.stack(own_grads).median()),
                                                   rel=1e-5)


def test_cosine_schedule_is_stepped_once_per_epoch():
    method = Recorder()
    tiny(method, epochs=3, lr=0.01)
    expected = [0.01 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert method.lrs == pytest.approx(expected)


def test_constant_schedule_keeps_the_rate_and_is_recorded(tmp_path):
    method = Recorder()
    run = tiny(method, epochs=3, lr=0.01, schedule="constant", checkpoint=tmp_path / "c.pt")
    assert method.lrs == pytest.approx([0.01, 0.01, 0.01])
    assert load_checkpoint(tmp_path / "c.pt").optimizer["schedule"] == "constant"
    assert run.config["schedule"] == "constant"
    with pytest.raises(ValueError, match="schedule must be one of cosine, constant"):
        tiny(Recorder(), schedule="step")


def test_checkpoint_is_written_and_loads_back(tmp_path):
    run = tiny("dfa", method_options={"penalty": 0.01}, checkpoint=tmp_path / "run.pt")
    assert run.checkpoint_path == tmp_path / "run.pt"
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt.method == "dfa" and ckpt.method_options["penalty"] == 0.01
    assert (ckpt.seed, ckpt.epochs, ckpt.test_acc) == (0, 2, run.test_acc)
    assert ckpt.data == run.data.spec and ckpt.history == run.history
    assert ckpt.optimizer["lr"] == 1e-2 and ckpt.optimizer["batch_size"] == 64
    rebuilt = ckpt.build_model().state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in run.model.state_dict().items())
    method = ckpt.build_method(ckpt.build_model())
    for key, value in run.method.state_dict().items():
        assert torch.equal(method.state_dict()[key], value)


def test_a_diverging_run_stops_is_flagged_and_still_checkpointed(tmp_path):
    run = tiny(Diverging(), epochs=4, checkpoint=tmp_path / "nan.pt")
    # three batches per epoch: the third step, at the end of epoch 1, turns the loss NaN
    assert len(run.history) == 1 and run.history[-1]["diverged"] and run.diverged
    assert math.isnan(run.history[-1]["train_loss"])
    ckpt = load_checkpoint(tmp_path / "nan.pt")
    assert ckpt.history[-1]["diverged"] is True
    model = ckpt.build_model()
    x, y = run.data.eval_batch(32)
    assert not evaluate(model, x, y, baseline_acc=0.25).passed


def test_method_overrides_win_over_the_arch_options():
    run = tiny("shallow")
    assert anatomy_of(run.model).num_blocks == 0
    assert run.config["arch_options"]["num_blocks"] == 0


@pytest.mark.parametrize("progress", [None, True])
def test_progress_is_a_line_per_epoch_on_stderr_unless_turned_off(capsys, progress):
    tiny("bp", progress=False)
    assert capsys.readouterr().err == ""
    tiny("bp", progress=progress)  # stderr is not a terminal here: one line per epoch
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["[bp] epoch 1/2", "[bp] epoch 2/2"]
    assert all("loss" in line and "test acc" in line for line in lines)
    assert "eta" in lines[0] and lines[1].endswith("done")


def test_progress_can_go_to_a_callable_with_the_run_named_by_its_label():
    events = []
    tiny("bp", progress=events.append, label="bp-seed7")
    finished = [e for e in events if e.batch is None]
    assert [(e.label, e.epoch, e.epochs) for e in finished] == [("bp-seed7", 1, 2),
                                                                ("bp-seed7", 2, 2)]
    assert all(e.loss is not None and 0 <= e.test_acc <= 1 for e in finished)
    assert finished[-1].finished and finished[-1].fraction == 1.0


def test_a_given_dataset_is_used_as_is():
    data = load_data("synthetic", num_samples=100, num_classes=3)
    run = tiny("bp", data=data)
    assert run.model.out_head.out_features == 3 and run.config["data"] == data.spec


def test_options_for_an_already_built_method_are_refused():
    with pytest.raises(MethodError, match="already built"):
        tiny(Recorder(), method_options={"penalty": 1.0})
    with pytest.raises(ValueError, match="data_options"):
        tiny("bp", data=load_data("synthetic"), data_options={"dim": 3})


def test_a_method_step_without_loss_is_a_clear_error():
    class Silent(Recorder):
        def step(self, x, y):
            return {}

    with pytest.raises(MethodError, match="'loss'"):
        tiny(Silent())


def test_progress_redraws_one_line_on_a_terminal():
    import io

    from fa_checks.training.progress import ProgressClock, StreamProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    clock = ProgressClock("dfa", 2, StreamProgress(stream))
    clock.epoch(1, 1.5, 0.25)
    clock.epoch(2, 1.25, 0.5)
    clock.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, redrawn in place
    assert text.count("\r") == 2 and "epoch 2/2  loss 1.25  test acc 0.500" in text


def test_the_package_name_train_trains_even_after_the_submodule_is_imported():
    import fa_checks
    import fa_checks.training.loop  # the runs module imports the submodule; the function stays

    run = fa_checks.train("bp", "resmlp", "synthetic", epochs=1, seed=0, device="cpu",
                          data_options=DATA, arch_options=ARCH, progress=False)
    assert isinstance(run, fa_checks.Run) and len(run.history) == 1


@pytest.mark.parametrize(("method", "arch", "arch_options"), [
    ("fa", "mlp", {"d_hidden": 64, "depth": 4}),  # classic FA: B shaped like each W
    ("kp", "resmlp", {"d_hidden": 64, "num_blocks": 2}),
])
def test_random_feedback_is_independent_of_the_initial_weights(method, arch, arch_options):
    # lr=0 keeps the weights at their initialisation.  Feedback drawn from a stream seeded like
    # the model's came out as a weight times a constant at these sizes (|cos| = 1.0 for the
    # mlp's W_1, 0.35 for the resmlp's embedding)
    run = train(method, arch, "synthetic", epochs=1, seed=7, lr=0.0, device="cpu",
                arch_options=arch_options, data_options={"num_samples": 40, "dim": 64},
                progress=False, eval_size=8)
    feedback = run.method.feedback
    assert feedback
    for i, b in enumerate(feedback):
        for name, w in run.model.named_parameters():
            if w.numel() == b.numel():
                cos = F.cosine_similarity(b.flatten(), w.detach().flatten(), dim=0)
                assert abs(float(cos)) < 0.2, f"feedback {i} is aligned with {name}: {cos:.3f}"
