"""The ``fa-checks`` command line: exit codes, tables, JSON, the cached baseline, sweeps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fa_checks.checkpoint import load_checkpoint, save_checkpoint
from fa_checks.cli.main import main
from fa_checks.errors import ConfigError
from fa_checks.models import build_model
from fa_checks.report import Report
from fa_checks.sweep.grid import sweep_cells
from fa_checks.training.loop import train

TINY = ["--arch", "resmlp", "--arch-arg", "d_hidden=16", "num_blocks=2", "--data", "synthetic",
        "--data-arg", "num_samples=200", "--batch-size", "32", "--lr", "1e-2", "--device", "cpu",
        "--no-progress"]
SCRIPT = Path(sys.executable).parent / "fa-checks"


@pytest.fixture(scope="module")
def bp_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "bp.pt"
    assert main(["train", "--method", "bp", "--epochs", "2", "--seed", "0", *TINY,
                 "-o", str(path)]) == 0
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Nothing a test does may land in the user's own cache."""
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def cache_args(tmp_path) -> list[str]:
    return ["--cache-dir", str(tmp_path / "cache")]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    assert "Traceback" not in text
    return lines[0]


def test_train_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "dfa.pt"
    code = main(["train", "--method", "dfa", "--method-arg", "penalty=0.01", "--epochs", "1",
                 "--seed", "3", *TINY, "-o", str(out)])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: dfa on resmlp/synthetic, seed 3")
    ckpt = load_checkpoint(out)
    assert ckpt.method == "dfa" and ckpt.method_options["penalty"] == 0.01
    assert ckpt.arch_kwargs["d_hidden"] == 16 and ckpt.seed == 3 and ckpt.epochs == 1
    assert ckpt.data["num_samples"] == 200


def test_check_passes_with_exit_0(bp_run, cache_args, capsys):
    assert main(["check", str(bp_run), "--baseline-acc", "0", *cache_args]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split()[:2] == ["subject", "accuracy"]
    assert row.split()[0] == str(bp_run) and row.split()[-1] == "PASS"
    assert "h_2" in out  # the per-layer figures, down to the deepest hidden state


def test_check_fails_with_exit_1_and_says_why(bp_run, cache_args, capsys):
    assert main(["check", str(bp_run), "--baseline-acc", "1.0", *cache_args]) == 1
    out = capsys.readouterr().out
    assert "FAIL(D3)" in out and "D3: test accuracy" in out


def test_check_writes_json_reports(bp_run, cache_args, tmp_path):
    out = tmp_path / "reports" / "r.json"
    code = main(["check", str(bp_run), "--baseline-acc", "1.0", "--json", str(out), *cache_args])
    payload = json.loads(out.read_text())
    [entry] = payload["subjects"]
    assert code == 1 and entry["verdict"] == "FAIL(D3)"
    assert entry["path"] == str(bp_run.resolve()) and entry["method"] == "bp"
    assert entry["seed"] == 0
    assert set(entry["D1"]) >= {"max_growth", "per_block_growth", "hidden_norms", "threshold",
                                "fires"}
    assert entry["D3"]["baseline_acc"] == 1.0 and entry["D3"]["fires"] is True
    assert Report.from_dict(entry).verdict == entry["verdict"]
    assert not list(out.parent.glob(".*tmp"))  # the temporary file was renamed away


def test_report_prints_the_table_from_json(bp_run, cache_args, tmp_path, capsys):
    out = tmp_path / "r.json"
    main(["check", str(bp_run), "--baseline-acc", "0", "--json", str(out), *cache_args])
    checked = capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == checked.splitlines()[:2]


@pytest.mark.parametrize(("edit", "said"), [
    (lambda text: '{"subjects": []}', "holds no subjects, so there is nothing to gate"),
    (lambda text: "[" * 100_000 + "]" * 100_000,
     "not a JSON report (it nests deeper than 32 levels)"),
    (lambda text: text.replace('"test_acc": ', '"test_acc": 1' + "0" * 5000 + ", \"x\": ", 1),
     "not a JSON report (it holds a number of thousands of digits)"),
    (lambda text: text.replace('"margin_pp": ', '"margin_pp": "x", "y": ', 1),
     "bad D3 section in report: margin_pp='x' is not a number or null"),
    (lambda text: text.replace('"per_block_growth": [', '"per_block_growth": [true, ', 1),
     "bad D1 section in report: per_block_growth=[True, "),
])
def test_a_report_file_edited_to_break_the_reader_is_one_line_naming_it(
        bp_run, cache_args, tmp_path, capsys, edit, said):
    saved = tmp_path / "r.json"
    main(["check", str(bp_run), "--baseline-acc", "0", "--json", str(saved), *cache_args])
    capsys.readouterr()
    edited = tmp_path / "edited.json"
    edited.write_text(edit(saved.read_text()))
    assert main(["report", str(edited)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"fa-checks: error: {edited}: ") and said in line


def test_a_checkpoint_asking_for_a_baseline_beyond_the_work_limit_is_refused_before_training(
        bp_run, cache_args, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_sample_passes=1000")
    # bp_run: 2 epochs of 160 training samples = 320 passes; ask for 20 epochs = 3,200
    checkpoint = load_checkpoint(bp_run)
    greedy = tmp_path / "greedy.pt"
    raw = torch.load(bp_run, weights_only=True)
    raw["epochs"] = 20
    torch.save(raw, greedy)
    assert checkpoint.epochs == 2
    assert main(["check", str(greedy), *cache_args]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"fa-checks: error: {greedy}: its frozen-blocks baseline would train "
                           "20 epochs x 160 samples = 3,200 sample passes, above the limit "
                           "max_sample_passes=1000")
    assert line.endswith("or give the baseline accuracy (--baseline-acc)")
    assert not list((tmp_path / "cache").glob("baseline/*.json"))
    assert main(["check", str(greedy), "--baseline-acc", "0", *cache_args]) == 0
    # within the limit, the same file trains its baseline as before
    monkeypatch.delenv("FA_CHECKS_LIMITS")
    assert main(["check", str(greedy), *cache_args]) in (0, 1)
    assert list((tmp_path / "cache").glob("baseline/*.json"))


def test_tighter_limits_are_not_passed_by_a_report_cached_under_looser_ones(
        bp_run, cache_args, capsys, monkeypatch):
    assert main(["check", str(bp_run), "--baseline-acc", "0", *cache_args]) == 0
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_params=10")
    assert main(["check", str(bp_run), "--baseline-acc", "0", *cache_args]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(bp_run) in line and "max_params=10" in line


def test_check_of_a_corrupt_file_exits_2_with_one_line(tmp_path, cache_args, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["check", str(bad), "--baseline-acc", "0.3", *cache_args]) == 2
    captured = capsys.readouterr()
    assert str(bad) in one_line(captured.err) and captured.out == ""


def test_one_corrupt_file_among_good_ones_still_reports_the_good(bp_run, tmp_path, cache_args,
                                                                capsys):
    bad = tmp_path / "broken.pt"
    bad.write_text("nope")
    assert main(["check", str(bp_run), str(bad), "--baseline-acc", "0", *cache_args]) == 2
    captured = capsys.readouterr()
    assert "PASS" in captured.out and str(bad) in one_line(captured.err)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--method", "dfa", "--method-arg", "penalty", "-o", "x.pt"],
         "--method-arg 'penalty' is not key=value"),
        (["train", "--method", "nope", "-o", "x.pt"], "unknown method 'nope'"),
        (["train", "--method", "bp", "--arch", "resmlp", "--arch-arg", "width=3", "-o", "x.pt"],
         "--arch-arg width: architecture 'resmlp' takes no such option; it takes d_hidden"),
        (["train", "--method", "dfa", "--method-arg", "penalti=0.1", "-o", "x.pt"],
         "--method-arg penalti: method 'dfa' takes no such option; it takes penalty, clip"),
        (["train", "--method", "bp", "--data", "synthetic", "--data-arg", "num_samples=-3",
          "-o", "x.pt"], "--data-arg: "),
        (["train", "--method", "bp", "--data", "imagenet", "-o", "x.pt"],
         "--data: unknown dataset 'imagenet'"),
        (["train", "--method", "bp", "--device", "gpu", "-o", "x.pt"],
         "argument --device: 'gpu' is not valid: use one of auto, cpu, cuda, cuda:N"),
        (["train", "--method", "bp", "-o", "."], "-o .: is a folder"),
        (["train", "--method", "bp", "-o", "/proc/x.pt"], "-o /proc/x.pt: cannot write there"),
        (["check", "missing.pt"], "missing.pt: no such checkpoint file"),
        (["check", "runs/*.pt"], "checkpoint 'runs/*.pt' matches no file"),
        (["check", "x.pt", "--max-growth", "-1"],
         "argument --max-growth: '-1' is not valid: it must be greater than 0"),
        (["check", "x.pt", "--baseline-acc", "49"], "it is an accuracy, a fraction between 0"),
        (["check", "x.pt", "--baseline-acc", "0.5", "--baseline", "auto"], "not allowed with"),
        (["report", "missing.json"], "missing.json: no such report file"),
        (["sweep", "--methods", "bp", "--seeds", "1", "--method-arg", "penalty=1", "-o", "d"],
         "none of the methods bp takes it"),
        (["frobnicate"], "invalid choice"),
        (["train", "--method", "bp", "--batch-size", "100000000000", "-o", "x.pt"],
         "--batch-size=100000000000: above the limit max_batch_size=1048576; if you mean it"),
        (["check", "x.pt", "--eval-size", "10000000000000"],
         "--eval-size=10000000000000: above the limit max_eval_size=1048576"),
    ],
)
def test_usage_and_input_errors_exit_2_with_one_line(argv, fragment, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.pt").exists()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(Path(path.parent / "whole.pt").read_bytes()[:3000])


def _another_tools(path: Path) -> None:
    torch.save({"a": 1}, path)


def _seed_format_without_data(path: Path) -> None:
    """The research code's bare state dict of a model of the synthetic task (20 features)."""
    state = load_checkpoint(path.parent / "whole.pt").model_state
    torch.save({k.replace("embed_layer.", "embed."): v for k, v in state.items()}, path)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_empty, "empty or truncated"),
        (_truncated, "truncated or corrupt"),
        (_another_tools, "not a checkpoint"),
        (_seed_format_without_data, "name the dataset it was trained on (--data)"),
    ],
)
def test_a_bad_checkpoint_is_one_line_naming_the_file(make, fragment, bp_run, tmp_path,
                                                      cache_args, capsys):
    shutil.copyfile(bp_run, tmp_path / "whole.pt")
    bad = tmp_path / "bad.pt"
    make(bad)
    assert main(["check", str(bad), "--baseline-acc", "0.3", *cache_args]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith(f"fa-checks: error: {bad}: ") and fragment in line
    assert captured.out == ""


def test_a_seed_format_checkpoint_is_checked_on_the_dataset_named(bp_run, tmp_path, cache_args,
                                                                  capsys):
    shutil.copyfile(bp_run, tmp_path / "whole.pt")
    _seed_format_without_data(tmp_path / "seed.pt")
    assert main(["check", str(tmp_path / "seed.pt"), "--data", "synthetic", "--data-arg",
                 "num_samples=200", "--baseline-acc", "0", "-q", "--json",
                 str(tmp_path / "r.json"), *cache_args]) == 0
    main(["check", str(bp_run), "--baseline-acc", "0", "-q", "--json",
          str(tmp_path / "whole.json"), *cache_args])
    [seed], [whole] = (json.loads((tmp_path / n).read_text())["subjects"]
                       for n in ("r.json", "whole.json"))
    assert seed["D1"] == whole["D1"] and seed["test_acc"] == whole["test_acc"]  # same weights


def test_a_checkpoint_whose_data_needs_a_root_names_the_file_and_the_option(tmp_path, cache_args,
                                                                         capsys):
    model = build_model("resmlp", input_shape=(3, 32, 32), num_classes=10, d_hidden=8,
                        num_blocks=1)
    path = save_checkpoint(tmp_path / "cifar.pt", model=model, data={"name": "cifar10"}, seed=0,
                           epochs=1)
    assert main(["check", str(path), "--baseline-acc", "0.1", *cache_args]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"fa-checks: error: {path}: cifar10") and "--data-root" in line


def test_an_unwritable_json_path_is_refused_before_any_work(bp_run, tmp_path, cache_args,
                                                            capsys):
    assert main(["check", str(bp_run), "--baseline-acc", "0", "--json", str(tmp_path),
                 *cache_args]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) == (f"fa-checks: error: --json {tmp_path}: is a folder; give "
                                      "a file name inside it")
    assert captured.out == "" and not (tmp_path / "cache").exists()  # nothing was evaluated


def test_json_is_written_even_when_every_file_fails(tmp_path, cache_args, capsys):
    out = tmp_path / "r.json"
    out.write_text('{"subjects": ["from an earlier run"]}')
    (tmp_path / "bad.pt").write_bytes(b"")
    assert main(["check", str(tmp_path / "bad.pt"), "--json", str(out), *cache_args]) == 2
    [entry] = json.loads(out.read_text())["subjects"]
    assert entry["verdict"] == "ERROR" and "bad.pt" in entry["error"]
    assert entry["id"] == str(tmp_path / "bad.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_even_for_a_cached_report(bp_run, cache_args, capsys):
    assert main(["check", str(bp_run), "--baseline-acc", "0", "-q", *cache_args]) == 0
    capsys.readouterr()
    assert main(["check", str(bp_run), "--baseline-acc", "0", "--device", "cuda",
                 *cache_args]) == 2
    assert one_line(capsys.readouterr().err) == ("fa-checks: error: --device cuda: CUDA is not "
                                                 "available here; use --device cpu or auto")


def test_sweep_exits_1_when_a_run_fails(tmp_path, capsys):
    code = main(["sweep", "--methods", "bp", "--seeds", "1", "--epochs", "1", *TINY, "-o",
                 str(tmp_path / "runs"), "--baseline-acc", "1.0", "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"])
    assert code == 1 and "FAIL(D3) x1" in capsys.readouterr().out


def test_help_exits_0(capsys):
    assert main(["check", "--help"]) == 0
    assert "--baseline-acc" in capsys.readouterr().out


def test_baseline_auto_trains_the_matched_baseline_once(bp_run, tmp_path, capsys):
    cache = tmp_path / "cache"
    reports = tmp_path / "auto.json"
    for _ in range(2):
        main(["check", str(bp_run), "--baseline", "auto", "--cache-dir", str(cache),
              "--json", str(reports), "--eval-size", "64"])
    created = [json.loads(line)["kind"] for line in (cache / "created.jsonl").read_text()
               .splitlines()]
    assert created == ["baseline", "report"]  # the second check computed nothing
    frozen = train("frozen", "resmlp", "synthetic", epochs=2, seed=0, batch_size=32, lr=1e-2,
                   device="cpu", arch_options={"d_hidden": 16, "num_blocks": 2},
                   data_options={"num_samples": 200}, progress=False)
    [entry] = json.loads(reports.read_text())["subjects"]
    assert entry["D3"]["baseline_acc"] == frozen.test_acc
    assert "frozen-blocks baseline" in capsys.readouterr().err  # said once, on stderr


def test_sweep_trains_the_grid_and_summarises_over_seeds(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["sweep", "--methods", "bp", "dfa", "--seeds", "1", "2", "--method-arg",
                 "penalty=0,0.01", "--epochs", "1", *TINY, "-o", str(out), "--baseline-acc",
                 "0.25", "--cache-dir", str(tmp_path / "cache"), "--json",
                 str(tmp_path / "sweep.json"), "--quiet"])
    assert code == 0
    names = sorted(p.name for p in out.glob("*.pt"))
    assert names == sorted(f"{cell}-seed{s}.pt" for cell in ("bp", "dfa-penalty=0",
                                                             "dfa-penalty=0.01") for s in (1, 2))
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["cell", "n"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"bp", "dfa-penalty=0", "dfa-penalty=0.01"}
    subjects = json.loads((tmp_path / "sweep.json").read_text())["subjects"]
    assert len(subjects) == 6
    accs = [s["test_acc"] for s in subjects if s["id"].startswith("bp-")]
    mean = sum(accs) / 2
    std = abs(accs[0] - accs[1]) / 2 ** 0.5
    assert rows["bp"].split()[1] == "2"
    assert f"{mean:.4g} ± {std:.2g}" in rows["bp"]
    ckpt = load_checkpoint(out / "dfa-penalty=0.01-seed2.pt")
    assert ckpt.method_options["penalty"] == 0.01 and ckpt.seed == 2


def test_sweep_cells_apply_each_option_to_the_methods_that_take_it():
    cells = sweep_cells(["bp", "dfa"], ["penalty=0,1e-4"])
    assert cells == [("bp", {}), ("dfa", {"penalty": 0}), ("dfa", {"penalty": 1e-4})]
    with pytest.raises(ConfigError, match="twice"):
        sweep_cells(["dfa"], ["penalty=0", "penalty=1"])


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FA_CHECKS_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed")
def test_console_script_exit_codes(bp_run, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x80\x02garbage")
    failed = _script("check", "corrupt.pt", "--baseline-acc", "0.3", cwd=tmp_path)
    assert failed.returncode == 2 and "corrupt.pt" in one_line(failed.stderr)
    passed = _script("check", str(bp_run), "--baseline-acc", "0", "--quiet", cwd=tmp_path)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.splitlines()[1].split()[-1] == "PASS"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_dataset_read_from_disk_without_a_root_is_refused_before_training(
    command, tmp_path, capsys
):
    args = (["--method", "bp", "--seed", "0"] if command == "train"
            else ["--methods", "bp", "--seeds", "0"])
    code = main([command, *args, "--data", "cifar10", "--epochs", "1",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "--data cifar10 is read from a local folder: give it with --data-root DIR" in line
    assert not (tmp_path / "out").exists()


def test_cache_info_and_clear_show_and_empty_the_one_cache(bp_run, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["check", str(bp_run), "--baseline-acc", "0", "-q", *cache]) == 0
    capsys.readouterr()
    assert main(["cache", "info", *cache]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cache: {tmp_path / 'cache'}"
    assert lines[1].split() == ["kind", "artifacts", "size", "temporary", "files"]
    assert lines[2].split()[:2] == ["report", "1"]
    assert main(["cache", "clear", "--kind", "report", *cache]) == 0
    assert main(["cache", "info", *cache]) == 0
    assert "report" not in capsys.readouterr().out.split("cleared")[-1].split("cache:")[-1]
    notes = tmp_path / "cache" / "notes.txt"
    notes.write_text("the user's, not the cache's")
    assert main(["cache", "clear", *cache]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"left 1 entry fa-checks did not write: {notes}"
    assert notes.exists()
    assert main(["cache", "info", *cache]) == 0
    assert capsys.readouterr().out.strip().endswith("(empty)")
    for action in ("info", "clear"):
        assert main(["cache", action, "--cache-dir", str(notes)]) == 2
        assert f"cache {notes}: not a folder" in one_line(capsys.readouterr().err)


def test_check_and_report_write_the_visual_report(bp_run, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    page, plots, saved = tmp_path / "out" / "fa.html", tmp_path / "png", tmp_path / "fa.json"
    assert main(["check", str(bp_run), "--baseline-acc", "0", "-q", "--json", str(saved),
                 "--html", str(page), "--plots", str(plots), *cache]) == 0
    text = page.read_text()
    assert text.count("<svg") >= 3 and str(bp_run) in text and "<script" not in text
    assert sorted(p.suffix for p in plots.iterdir()) == [".png"] * len(list(plots.iterdir()))
    assert len(list(plots.iterdir())) >= 3
    assert "wrote the visual report" in capsys.readouterr().err
    again = tmp_path / "again.html"
    assert main(["report", str(saved), "--html", str(again)]) == 0
    assert again.read_text() == text  # the same page from the saved JSON: one renderer


def test_an_unwritable_html_path_is_refused_before_any_work(bp_run, tmp_path, capsys):
    code = main(["check", str(bp_run), "--baseline-acc", "0", "--html", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and "--html" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "cache").exists()


def test_version(capsys):
    import fa_checks

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fa-checks {fa_checks.__version__}"
