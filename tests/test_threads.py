"""The thread count: the user's choice, then the environment, then the free cores within a
process's share (a core busy with other work is not used: OpenMP threads would spin on it)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fa_checks.errors import ConfigError
from fa_checks.training import threads


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in threads.ENV_VARIABLES:  # the environment would win over the choice
        monkeypatch.delenv(name, raising=False)
    yield
    threads.share_cores(1)


def _spin(stop) -> None:  # noqa: ANN001 - a multiprocessing event
    while not stop.is_set():
        pass


def test_the_users_choice_then_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(5) == 5
    assert threads.choose_threads() == 3
    monkeypatch.setenv("FA_CHECKS_THREADS", "2")
    assert threads.choose_threads() == 2
    monkeypatch.setenv("FA_CHECKS_THREADS", "")  # empty: unset, the next variable decides
    assert threads.choose_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested form is OpenMP's business
    assert threads.env_threads() is None


@pytest.mark.parametrize(("name", "text", "said"), [
    ("FA_CHECKS_THREADS", "lots", "FA_CHECKS_THREADS='lots': it must be a whole number of 1"),
    ("FA_CHECKS_THREADS", "0", "FA_CHECKS_THREADS='0': it must be a whole number of 1"),
    ("FA_CHECKS_THREADS", "99999", "FA_CHECKS_THREADS=99999: above the limit max_threads=1024"),
    ("OMP_NUM_THREADS", "99999", "OMP_NUM_THREADS=99999: above the limit max_threads=1024"),
])
def test_a_thread_count_torch_cannot_take_is_refused_naming_the_variable(
        no_env: None, monkeypatch: pytest.MonkeyPatch, name: str, text: str, said: str) -> None:
    # torch crashes (SIGSEGV) with 99999 threads: a crash would read as no verdict at all
    monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError) as refused:
        threads.choose_threads()
    assert str(refused.value).startswith(said)
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_threads=100000")
    if text == "99999":
        assert threads.choose_threads() == 99999  # the limit's override, for who means it


@settings(max_examples=10)
@given(workers=st.integers(1, 64))
def test_a_worker_never_takes_more_than_its_share(workers: int) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name in threads.ENV_VARIABLES:
            env.delenv(name, raising=False)
        try:
            threads.share_cores(workers)
            share = max(1, threads.available_cores() // workers)
            assert 1 <= threads.choose_threads(step_madds=1e12) <= share
            assert threads.choose_threads(step_madds=1e5) == 1  # too small to split
        finally:
            threads.share_cores(1)


def test_a_busy_core_is_seen_and_left_alone(no_env: None) -> None:
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.3)
        busy = threads.busy_cores()
        if busy is None:
            pytest.skip("no /proc/stat here")
        assert 0.6 <= busy <= threads.available_cores() + 0.1
        chosen = threads.choose_threads(step_madds=1e12)
        assert chosen <= max(1, round(threads.available_cores() - 0.6))
    finally:
        stop.set()
        spinner.join(5)
