"""A kernel's filter description (a NamedTuple of tensors and numbers) as registered-op arguments.

``torch.library`` ops take tensors, lists and scalars, not Python objects: :func:`pack` turns a
:class:`~fastnnp.kernels.tensornet.interaction_messages.RadialMLP`,
:class:`~fastnnp.kernels.tensornet.embedding_messages.DistanceProjection` or
:class:`~fastnnp.kernels.common.radial_table.KernelTable` into (its class name, its tensors,
floats and ints in field order), and :func:`unpack` rebuilds it inside the op. The tensors
travel as op inputs, so tracing (``torch.compile``, ``opcheck``) sees them. :func:`constant`
passes a tensor the op treats as a constant for autograd.
"""

from typing import NamedTuple

from torch import Tensor

Packed = tuple[str, list[Tensor], list[float], list[int]]
# The filter classes the ops accept, by name.
FILTER_CLASSES: dict[str, type] = {}


def constant(t: Tensor) -> Tensor:
    """``t`` as a contiguous constant argument of an op: detached where it needs a gradient (only
    then is a detach op issued)."""
    return (t.detach() if t.requires_grad else t).contiguous()


def register_filter(cls: type) -> type:
    """Class decorator: make a filter NamedTuple (fields annotated Tensor, float, int or bool) packable."""
    FILTER_CLASSES[cls.__name__] = cls
    return cls


def pack(description: NamedTuple) -> Packed:
    tensors, floats, ints = [], [], []
    for name, kind in type(description).__annotations__.items():
        value = getattr(description, name)
        if kind is Tensor:
            tensors.append(value)
        elif kind is float:
            floats.append(float(value))
        else:
            ints.append(int(value))
    return type(description).__name__, tensors, floats, ints


def unpack(kind: str, tensors: list[Tensor], floats: list[float], ints: list[int]) -> NamedTuple:
    cls = FILTER_CLASSES[kind]
    sources = {Tensor: iter(tensors), float: iter(floats)}
    integers = iter(ints)  # int and bool fields, in order
    values = {}
    for name, annotation in cls.__annotations__.items():
        value = next(sources.get(annotation, integers))
        values[name] = bool(value) if annotation is bool else value
    return cls(**values)
