"""The pickle inside a file ``torch.save`` wrote, read without running it.

:class:`PickleScan` is an unpickler that imports nothing and builds nothing: a global the pickle
names resolves only when a plain state dict needs it (tensor rebuilders, storage types,
``OrderedDict``, numpy scalars); any other name is collected, and the file is refused as one
that needs trust.  Storages are recorded by key, dtype and element count without allocating
them, and every tensor's view is checked against its storage (:func:`check_view`) before
``torch.load`` sees the file.  :mod:`.torchfile` runs the scan on the pickle of a zip
archive or of the legacy format; :class:`FileRefused` is what every check of the file raises.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import UserError
from ..limits import LIMITS_VARIABLE, Limits

#: dtypes a checkpoint's tensors may have (storage type name -> (dtype name, bytes per element))
STORAGE_TYPES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("float32", 4),
    "DoubleStorage": ("float64", 8),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
}
ALLOWED_DTYPES = frozenset(dtype for dtype, _ in STORAGE_TYPES.values())
MAX_RANK = 8
#: how deep a value read from a pickle may nest (a checkpoint nests about five levels)
MAX_VALUE_DEPTH = 32
#: how many values a pickle may hold, counting a value shared by reference once per place it
#: is reachable from (as anything that formats or walks it would): 100,000 tensors with their
#: keys and a long history fit; a nest of shared lists that doubles at each level does not
MAX_VALUE_NODES = 2_000_000


class FileRefused(UserError):
    """A refusal whose message follows the file's name (the caller puts the name first)."""

    #: True when the file would be read if it were trusted (it names code or exotic objects)
    needs_trust: bool = False


# -- the scan --------------------------------------------------------------------------------------
class _Inert:
    """What every rebuilt object is during the scan: accepts any state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def __setstate__(self, state: Any) -> None:
        del state


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: str
    elements: int
    offset: int = 0  # a legacy view into a larger storage


@dataclass(frozen=True)
class _TensorRecord:
    storage: Any
    offset: Any
    size: Any
    stride: Any


def _inert(*args: Any, **kwargs: Any) -> _Inert:
    return _Inert()


class PickleScan(pickle.Unpickler):
    """Reads a pickle's structure; ``find_class`` never imports, ``persistent_load`` never
    allocates.  Globals outside what a plain state dict needs are collected in ``refused``."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.value: Any = None
        self.storages: dict[str, tuple[str, int]] = {}
        self.tensors: list[_TensorRecord] = []
        self.refused: list[str] = []

    def run(self) -> Any:
        try:
            value = self.load()
        except FileRefused:
            if self.refused:
                raise _needs_trust(self.refused) from None
            raise
        except Exception as exc:  # any malformed pickle ends here, whatever it tried
            if self.refused:
                raise _needs_trust(self.refused) from None
            if isinstance(exc, EOFError) or "truncated" in str(exc):
                raise FileRefused("is empty or truncated (its pickle ends early)") from None
            raise FileRefused(
                f"is corrupt or not a torch checkpoint ({type(exc).__name__}: "
                f"{first_line(exc)})"
            ) from None
        if self.refused:
            raise _needs_trust(self.refused)
        check_value_size(value)
        return value

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"):
            return self._rebuild_tensor
        if full in ("torch._utils._rebuild_parameter",
                    "torch._utils._rebuild_parameter_with_state"):
            return _first_argument
        if full == "collections.OrderedDict":
            return OrderedDict
        if module == "torch" and name in STORAGE_TYPES:
            return _StorageType(STORAGE_TYPES[name][0])
        if full in _NUMPY_SCALAR_GLOBALS or (module in ("numpy.dtypes",)
                                             and name.endswith("DType")):
            return _inert
        if full == "_codecs.encode":  # bytes at pickle protocol 2 (numpy scalars)
            return _inert
        if full not in self.refused:
            self.refused.append(full)
        return _inert

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage",
                                                                                  b"storage"):
            raise FileRefused("is corrupt: it refers to data that is not a tensor storage")
        storage_type, key, elements = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise FileRefused(
                f"holds a tensor storage of type {storage_type!r}; fa-checks reads tensors of "
                f"{', '.join(sorted(ALLOWED_DTYPES))} from an untrusted file"
            )
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(key, str) or not _is_count(elements):
            raise FileRefused("is corrupt: a storage has no valid key or size")
        known = self.storages.get(key)
        if known is not None and known != (storage_type.dtype, elements):
            raise FileRefused(f"is corrupt: storage {key!r} is declared twice, differently")
        self.storages[key] = (storage_type.dtype, elements)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy views: (view key, offset, elements) into this storage
            if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1])
                    and _is_count(view[2]) and view[1] + view[2] <= elements):
                raise FileRefused(f"is corrupt: a view of storage {key!r} lies outside it")
            return _StorageRef(key, storage_type.dtype, view[2], offset=view[1])
        return _StorageRef(key, storage_type.dtype, elements)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any,
                        *rest: Any) -> _TensorRecord:
        del rest
        record = _TensorRecord(storage, offset, size, stride)
        self.tensors.append(record)
        return record


_CONTAINERS = (dict, list, tuple, set, frozenset, _TensorRecord)


def check_value_size(value: Any, *, max_depth: int = MAX_VALUE_DEPTH,
                     max_nodes: int = MAX_VALUE_NODES) -> None:
    """Refuse a value that nests deeper than ``max_depth``, contains itself, or, walked as a
    tree (a shared reference counted at every place it is reachable from, as anything that
    formats or copies it would), holds more than ``max_nodes`` values: before anything
    formats, copies or compares it.  Each distinct object is visited once (its tree size and
    depth memoised), so a value built to grow exponentially costs what its pickle costs."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (tree size, height) of a container
    keep: list[Any] = []  # the objects whose ids are memoised stay alive while we look
    open_ids: set[int] = set()
    if not isinstance(value, _CONTAINERS):
        return
    stack: list[tuple[Any, list[Any] | None]] = [(value, None)]
    while stack:
        item, children = stack.pop()
        key = id(item)
        if children is None:  # first visit: open it, and visit its containers first
            if key in sizes:
                continue
            if key in open_ids:
                raise FileRefused("holds a value that contains itself; a checkpoint never "
                                  "does")
            if len(open_ids) >= max_depth:
                raise FileRefused(f"holds values nested deeper than {max_depth} levels; a "
                                  "checkpoint never does")
            inner = _children(item)
            open_ids.add(key)
            keep.append(item)
            stack.append((item, inner))
            stack.extend((child, None) for child in inner
                         if isinstance(child, _CONTAINERS) and id(child) not in sizes)
            continue
        open_ids.discard(key)
        size, height = 1, 0
        for child in children:
            if isinstance(child, _CONTAINERS):
                child_size, child_height = sizes[id(child)]
                size += child_size
                height = max(height, child_height + 1)
            else:
                size += 1
                height = max(height, 1)
        if size > max_nodes:
            raise FileRefused(
                f"holds more than {max_nodes:,} values counted as a tree (values shared by "
                "reference and nested); a checkpoint never does")
        sizes[key] = (size, height)


def _children(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return [*item.keys(), *item.values()]
    if isinstance(item, _TensorRecord):
        return [item.size, item.stride]
    return list(item)


def _first_argument(data: Any, *rest: Any) -> Any:
    del rest
    return data


_NUMPY_SCALAR_GLOBALS = frozenset({
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
})


def _needs_trust(names: list[str]) -> FileRefused:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if all(name.startswith("torch.") for name in names):
        refusal = FileRefused(
            f"holds objects beyond plain data and dense tensors (it needs {shown}), which "
            "fa-checks reads only from a trusted file, so it was not loaded"
        )
    else:
        refusal = FileRefused(
            f"loading it would execute code named by the file (it needs {shown}), so it was "
            "not loaded"
        )
    refusal.needs_trust = True
    return refusal


def check_metadata_size(size: int, limits: Limits) -> None:
    """Refuse a pickle (everything but the tensors' bytes) above ``max_metadata_bytes``."""
    if size > limits.max_metadata_bytes:
        raise FileRefused(
            f"its pickle (everything but the tensors' bytes) is larger than the limit "
            f"max_metadata_bytes={limits.max_metadata_bytes:,}; if you mean it, raise it with "
            f"{LIMITS_VARIABLE}=max_metadata_bytes={size}"
        )


def check_scanned_tensors(scan: PickleScan, limits: Limits) -> None:
    """The scanned tensors: bounded in number, each within its storage, and together viewing
    at most ``max_params`` elements beyond those stored."""
    if len(scan.tensors) > limits.max_tensors or len(scan.storages) > limits.max_tensors:
        count = max(len(scan.tensors), len(scan.storages))
        raise FileRefused(
            f"holds {count:,} tensors, above the limit max_tensors={limits.max_tensors:,}; if "
            f"you mean it, raise it with {LIMITS_VARIABLE}=max_tensors={count}"
        )
    stored = sum(elements for _, elements in scan.storages.values())
    logical = 0
    for number, record in enumerate(scan.tensors):
        if not isinstance(record.storage, _StorageRef):
            raise FileRefused(f"is corrupt: tensor #{number + 1} has no tensor storage")
        logical += check_view(record.storage.elements, record.offset, record.size,
                              record.stride, what=f"tensor #{number + 1}")
    if logical > stored + limits.max_params:
        raise FileRefused(
            f"its tensors view {logical:,} elements of {stored:,} stored ones, more than the "
            f"limit max_params={limits.max_params:,} beyond them"
        )


def check_view(storage_elements: int, offset: Any, size: Any, stride: Any, *, what: str) -> int:
    """The element count of a view into a storage of ``storage_elements``, if the view fits it
    without repeating an element (an expanded tensor, stride 0, is refused)."""
    if not _is_count(offset) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise FileRefused(f"is corrupt: {what} has no valid offset, shape or strides")
    if len(size) != len(stride) or len(size) > MAX_RANK:
        raise FileRefused(f"is corrupt: {what} has {len(size)} dimensions and "
                          f"{len(stride)} strides (at most {MAX_RANK})")
    if not all(_is_count(s) for s in size) or not all(_is_count(s) for s in stride):
        raise FileRefused(f"is corrupt: {what} has a negative or non-integer size or stride")
    elements = math.prod(size)
    if elements == 0:
        return 0
    available = storage_elements - offset
    reach = 1 + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
    repeats = any(st == 0 and s > 1 for s, st in zip(size, stride, strict=True))
    if repeats or elements > available or reach > available:
        raise FileRefused(
            f"{what} of shape {list(size)} needs {elements:,} elements but its storage "
            f"holds {max(available, 0):,} from its offset"
            + (" (an expanded tensor with stride 0)" if repeats else "")
            + "; a model's state_dict never holds such a tensor"
        )
    return elements


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def element_size(dtype: str) -> int:
    """Bytes per element of a storage dtype (``"float32"`` -> 4)."""
    return next(n for name, n in STORAGE_TYPES.values() if name == dtype)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, cut to 160 characters."""
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__




__all__ = ["ALLOWED_DTYPES", "MAX_RANK", "STORAGE_TYPES", "FileRefused", "PickleScan",
           "check_metadata_size", "check_scanned_tensors", "check_value_size", "check_view",
           "element_size",
           "first_line"]
