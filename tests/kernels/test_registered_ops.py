"""Every fastnnp kernel is a torch.library op: opcheck passes for each (schema, fake tensors,
autograd registration, AOT dispatch), and torch.compile(fullgraph=True) traces the Triton path."""

import pytest
import torch
from ase.build import molecule

import fastnnp
from fastnnp.bench.op_count import OpCounter
from fastnnp.step import EnergyStep
from tests.helpers.backends import assert_compiled_matches_eager

OPS = (
    "bin_atoms", "neighbor_search", "embedding_messages", "embedding_messages_backward", "interaction_messages",
    "interaction_messages_backward", "message_products", "message_products_backward", "residual_update",
    "residual_update_backward", "channel_mix", "normalized", "normalized_backward", "embedding_components",
    "embedding_components_backward", "readout_invariants", "readout_invariants_backward", "table_vectors",
    "table_vectors_backward",
)


def _ethanol():
    atoms = molecule("CH3CH2OH")
    return torch.tensor(atoms.numbers), torch.tensor(atoms.positions, dtype=torch.float32)


@pytest.fixture(scope="module", params=["table", "exact"])
def recorded(request, data_dir):
    """(model, step, the first inputs of every fastnnp op in one energy+forces step)."""
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="triton", radial=request.param)
    z, pos = _ethanol()
    step = EnergyStep(model, z, pos)
    step.run(pos)
    with OpCounter() as counter:
        step(pos)
    return model, step, counter.inputs


def test_every_op_is_registered_and_called(recorded):
    _, _, inputs = recorded
    assert sorted(inputs) == sorted(OPS)
    for name in OPS:
        assert hasattr(torch.ops.fastnnp, name)


@pytest.mark.parametrize("name", OPS)
def test_opcheck(recorded, name):
    _, _, inputs = recorded
    op, args, kwargs = inputs[name]
    # the backward ops run once, in backward, without a graph (no double backward: forces only)
    differentiable = not name.endswith("_backward")

    def fresh(a):
        return a.detach().clone().requires_grad_(differentiable and a.requires_grad)

    args = tuple(fresh(a) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args, kwargs)


def test_compiled_triton_path_matches_eager(recorded):
    """torch.compile(fullgraph=True, backend="aot_eager") of the model's energy, forces by
    autograd through the compiled backward: equal to eager (plan made by an eager call)."""
    model, step, _ = recorded
    _, pos = _ethanol()

    def energy(p):
        return model.checked_energy_terms(step.z, p, step.batch, None, None, step.n_systems, None)[0]

    assert_compiled_matches_eager(energy, pos)
