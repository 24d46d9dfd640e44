"""The controller of parallel workers generates the fresh subjects' MNIST-1D while they start.

(Its effect on speed is in benchmarks/test_bench_plugin.py; here: what it makes, and what not.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fa_checks.data import load_data
from fa_checks.report import Thresholds
from fa_checks.session import CheckSession
from fa_checks.settings import Settings
from fa_checks.subjects import fresh_subjects


def session(tmp_path: Path, data: str, **data_options) -> CheckSession:
    settings = Settings(thresholds=Thresholds(), cache_dir=str(tmp_path / "cache"))
    subjects = fresh_subjects("dfa", [1, 2], data=data, data_options=data_options, epochs=1)
    return CheckSession(settings, subjects)


def test_the_fresh_subjects_mnist1d_is_made_once_on_a_thread(tmp_path):
    run = session(tmp_path, "mnist1d", num_samples=200)
    thread = run.generate_data_meanwhile()
    assert thread is not None and thread.daemon
    thread.join(timeout=120)
    assert not thread.is_alive()
    made = sorted((tmp_path / "cache" / "data").glob("*.pt"))
    assert len(made) == 1  # two seeds, one dataset
    # what a worker then loads is that file, the same data as a fresh generation
    root = run.settings.data_root_for("mnist1d")
    assert root is not None and Path(root) == made[0].parent
    served = load_data("mnist1d", root=root, num_samples=200)
    fresh = load_data("mnist1d", root=str(tmp_path / "elsewhere"), num_samples=200)
    assert served.x_train.equal(fresh.x_train) and served.y_test.equal(fresh.y_test)


def test_nothing_is_made_for_data_that_is_read_or_made_in_memory(tmp_path):
    assert session(tmp_path, "synthetic").generate_data_meanwhile() is None
    assert not (tmp_path / "cache" / "data").exists()


CHECKPOINTS_ONLY = """
import json, sys
from fa_checks.report import Thresholds
from fa_checks.session import CheckSession
from fa_checks.settings import Settings
from fa_checks.subjects import Subject
subjects = [Subject(id="run.pt", kind="checkpoint", path=sys.argv[1])]
thread = CheckSession(Settings(thresholds=Thresholds()), subjects).generate_data_meanwhile()
print(json.dumps({"thread": thread is not None, "torch": "torch" in sys.modules}))
"""


def test_a_controller_of_checkpoints_only_imports_no_torch_for_it(tmp_path):
    # a cached rerun's controller reads JSON: the data module would bring torch in for nothing
    done = subprocess.run([sys.executable, "-c", CHECKPOINTS_ONLY, str(tmp_path / "run.pt")],
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == {"thread": False, "torch": False}
