"""What one call issues to torch: aten ops, device→host syncs, and the bytes the ops move.

:class:`OpCounter` is a ``TorchDispatchMode``: every aten op dispatched inside it is counted,
with the bytes of its tensor inputs and outputs (the glue traffic a fused kernel would not
have; views move nothing and fastnnp's own kernel ops are counted apart); ops issued from Triton's CPU interpreter while it runs a kernel are not counted (on a GPU
a launch issues none). A sync is an op whose result the host must read from the device:
:data:`SYNC_OPS` (``.item()``/``int()``/``bool()`` of a tensor, ``nonzero``, ``bincount``, ...).
Counting works the same on CPU tensors, so the tests check "no syncs" without a GPU.
"""

import sys
from collections import Counter
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# aten ops that make the host wait for the device (their output, or its shape, is data).
SYNC_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "bincount", "equal", "is_nonzero", "unique", "_unique", "_unique2",
    "unique_consecutive", "unique_dim", "masked_select", "repeat_interleave", "allclose", "_assert_async",
})
# Source files whose frames mark an op as issued by Triton's interpreter.
_INTERPRETER_FILES = ("triton/runtime/interpreter.py", "triton\\runtime\\interpreter.py")


def _in_interpreter() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.endswith(_INTERPRETER_FILES):
            return True
        frame = frame.f_back
    return False


def _bytes(values) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(values) if isinstance(t, torch.Tensor))


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` then ``c.ops`` (aten ops), ``c.names`` (a Counter of
    them), ``c.syncs`` (the syncing ones' names, in order), ``c.bytes`` (input + output tensor
    bytes of the aten ops that are not views: the glue's traffic), ``c.kernels`` (a Counter of
    fastnnp's registered kernel ops, not in ``ops`` or ``bytes``) and ``c.inputs`` (the first
    arguments each kernel op was called with: (args, kwargs))."""

    def __init__(self):
        super().__init__()
        self.names: Counter = Counter()
        self.kernels: Counter = Counter()
        self.inputs: dict = {}
        self.syncs: list[str] = []
        self.bytes = 0

    @property
    def ops(self) -> int:
        return sum(self.names.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if _in_interpreter():
            return out
        name = func.overloadpacket.__name__
        if func.namespace == "fastnnp":
            self.kernels[name] += 1
            self.inputs.setdefault(name, (func, args, kwargs or {}))
            return out
        self.names[name] += 1
        if not func.is_view:
            self.bytes += _bytes((args, kwargs)) + _bytes(out)
        if name in SYNC_OPS:
            self.syncs.append(name)
        return out

    def most_common(self, n: int = 20) -> Iterator[tuple[str, int]]:
        return iter(self.names.most_common(n))
