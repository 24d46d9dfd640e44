"""Checkpoints: the ``fa-checks/1`` schema, safe atomic save, safe load, the seeds' older formats.

A ``fa-checks/1`` file is a ``torch.save`` of one dict holding only what
``torch.load(weights_only=True)`` accepts (tensors, dicts, lists, str, int, float, bool, None)::

    format          "fa-checks/1"
    arch            a built-in architecture name ("resmlp", "mlp", "vit", "resnet")
    arch_kwargs     its keywords, input_shape and num_classes included (``model.spec["kwargs"]``)
    model_state     the model's state_dict
    method          the training rule's name (or "module:Class"), or None
    method_options  its keyword options
    method_state    its state_dict (feedback matrices): {"feedback.0": B_0, ...}
    data            the dataset spec {"name": ..., **params} (root-independent), or None
    seed, epochs, optimizer (dict of settings), test_acc, history (per-epoch list), version

Loading never runs code from the file unless the caller says the file is trusted: a pickle that
needs more than plain data is refused, and a method name it holds resolves only to a built-in
or an entry point, naming the file and the trust flag.  Every size the file declares is checked
against :mod:`fa_checks.limits` and against the tensors actually present before any work (see
:mod:`.torchfile` for what is checked of the bytes, and what the legacy format cannot
promise).  The research code's own files load too: ``{"state_dict", "Bs", "config",
"test_acc"}`` and a bare ResMLP state_dict, with the dimensions read off the tensor shapes.

The modules, one job each:

* :mod:`.rebuild` -- :class:`Checkpoint`, what a load returns, and the model and method it rebuilds
* :mod:`.save` -- :func:`save_checkpoint`
* :mod:`.load` -- :func:`load_checkpoint`: read, recognise the layout, compare with the architecture
* :mod:`.fields` -- the ``fa-checks/1`` fields, each checked
* :mod:`.seed_formats` -- the research code's two layouts
* :mod:`.architecture` -- the architecture named, its keywords, the state against its model
* :mod:`.errors` -- :class:`CheckpointError` and how a file's values are worded
"""

from __future__ import annotations

from .errors import TRUST_HINT, CheckpointError
from .load import load_checkpoint
from .rebuild import FORMAT, SEED_DICT_FORMAT, SEED_STATE_DICT_FORMAT, Checkpoint
from .save import save_checkpoint

__all__ = [
    "FORMAT",
    "SEED_DICT_FORMAT",
    "SEED_STATE_DICT_FORMAT",
    "TRUST_HINT",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
]
