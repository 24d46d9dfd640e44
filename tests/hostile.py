"""Inputs written by someone else, for the adversarial tests: report entries whose figures
agree (or are made to disagree), torch archives with a pickle of our choosing, tiny checkpoints
that pass and fail, and a TCP server that is not Ray."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import socket
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from fa_checks.findings import depth_utility, reference_from_norms, scale_from_norms
from fa_checks.report import Report, Thresholds, divergence_of

TINY = {"d_hidden": 16, "num_blocks": 2}


def entry(norms: Sequence[float] = (1.0, 1.2, 1.3), grads: Sequence[float] = (0.3, 0.2, 0.1),
          test_acc: float = 0.8, baseline: float | None = 0.5, *, ident: str = "subject",
          thresholds: Thresholds | None = None, history: Any = None) -> dict[str, Any]:
    """A report entry whose every derived figure agrees with the figures it derives from,
    judged against ``thresholds`` (the defaults when None), as ``check --json`` writes it."""
    limits = thresholds or Thresholds()
    d1 = scale_from_norms(list(norms), limits.max_growth)
    d2 = reference_from_norms(list(grads), limits.grad_floor)
    d3 = depth_utility(test_acc, baseline, limits.min_margin_pp,
                               divergence=divergence_of(d1, d2))
    report = Report(test_acc=test_acc, d1=d1, d2=d2, d3=d3, num_samples=32,
                    subject={"id": ident, "method": "bp", "seed": 0, "path": f"{ident}.pt"},
                    history=history)
    return json.loads(json.dumps(report.to_dict()))


def write_report(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"subjects": list(entries)}))
    return path


def archive_with(pickle_bytes: bytes, *, extra: dict[str, bytes] | None = None,
                 names: dict[str, str] | None = None) -> bytes:
    """A zip laid out as ``torch.save`` lays it out, whose ``data.pkl`` is ``pickle_bytes``
    (``extra``: more members; ``names``: members renamed)."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = pickle_bytes if info.filename.endswith("/data.pkl") else source.read(info)
            name = (names or {}).get(info.filename, info.filename)
            target.writestr(zipfile.ZipInfo(name), data)
        for name, data in (extra or {}).items():
            target.writestr(zipfile.ZipInfo(name), data)
    return out.getvalue()


def nested_lists_pickle(depth: int, *, key: str = "format") -> bytes:
    """``{"format": [[[...]]]}`` nested ``depth`` deep, written opcode by opcode (pickle
    itself would recurse while writing it)."""
    body = b"]" * depth + b"a" * (depth - 1)
    return (b"\x80\x02}" + pickle.dumps(key, protocol=2)[2:-1] + body + b"s.")


def shared_bomb(depth: int) -> list[Any]:
    """A list of two references to a list of two references ... ``depth`` levels: 2**depth
    leaves when walked or printed, a few hundred bytes when pickled."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value, value]
    return value


def tiny_checkpoints(folder: Path) -> dict[str, Path]:
    """``bp.pt`` passes against a 30% baseline; ``exploding.pt`` is bp.pt with its residual
    branches scaled by 1e6 (D1 and D2 fire)."""
    from fa_checks.checkpoint import load_checkpoint, save_checkpoint
    from fa_checks.training.loop import train

    folder.mkdir(parents=True, exist_ok=True)
    train("bp", "resmlp", "synthetic", epochs=8, seed=0, lr=1e-2, arch_options=TINY,
          checkpoint=folder / "bp.pt", progress=False, device="cpu")
    bp = load_checkpoint(folder / "bp.pt")
    exploding = bp.build_model()
    with torch.no_grad():
        for block in exploding.blocks:
            block.w2.weight.mul_(1e6)
            block.w2.bias.mul_(1e6)
    save_checkpoint(folder / "exploding.pt", model=exploding, data=bp.data, seed=0, epochs=8)
    return {"bp.pt": folder / "bp.pt", "exploding.pt": folder / "exploding.pt"}


@contextlib.contextmanager
def not_ray_server(answer: bytes = b"") -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts and then says ``answer`` (or nothing), and
    holds the connection open: something that is not Ray.  Yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            if answer:
                with contextlib.suppress(OSError):
                    connection.sendall(answer)
            held.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()
