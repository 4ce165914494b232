"""``torch.compile(fullgraph=True)`` (backend ``aot_eager``) and ``torch.export`` of the torch path
on a fixed-size molecule and a periodic box match eager; the value checks stay in the graph.

Tracing switches TensorNet's neighbour search to the padded static-shape form
(:mod:`fastnnp.neighbors.static`); ``static_shapes=True`` (TorchMD-Net's) uses it eagerly too.
Compiles are slow on 2 cores: one model, one compile per system, module-scoped.
"""

import pytest
import torch
import yaml

from fastnnp.models.factory import build_model
from tests.helpers import DATA


def _tiny(derivative: bool, static_shapes: bool = False, seed: int = 3):
    with open(DATA / "tensornet" / "hparams.yaml") as fh:
        hp = yaml.safe_load(fh)
    hp.update(embedding_dimension=16, num_layers=1, num_rbf=8, max_z=20, cutoff_upper=3.0)
    torch.manual_seed(seed)
    model = build_model(hp, derivative=derivative, static_shapes=static_shapes).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _molecule():
    z = torch.tensor([6, 1, 1, 1, 8, 1, 7, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89],
                        [-0.5, -0.6, -1.2], [-1.4, -0.5, -1.4], [1.2, 1.3, 0.4], [1.9, 1.9, 0.1]])
    return z, pos


def _periodic():
    g = torch.Generator().manual_seed(5)
    cell = torch.tensor([[6.5, 0.0, 0.0], [0.8, 6.2, 0.0], [-0.5, 0.7, 6.4]])
    frac = torch.tensor([[0.1, 0.1, 0.1], [0.6, 0.15, 0.2], [0.2, 0.6, 0.3], [0.7, 0.7, 0.6],
                         [0.15, 0.3, 0.8], [0.9, 0.9, 0.95], [0.45, 0.85, 0.5], [0.95, 0.4, 0.4]])
    pos = frac @ cell + 0.05 * torch.randn(8, 3, generator=g)
    pos[2] += cell[0]  # an atom outside the cell
    return torch.tensor([8, 1, 1, 6, 1, 7, 1, 8]), pos, cell


@pytest.fixture(scope="module")
def forces_model():
    return _tiny(derivative=True)


@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_compile_fullgraph_matches_eager(forces_model, system):
    z, pos, *box = _molecule() if system == "molecule" else _periodic()
    box = box[0] if box else None
    energy, forces = forces_model(z, pos, box=box)
    with torch._dynamo.config.patch(trace_autograd_ops=True):  # forces: autograd.grad inside the graph
        compiled = torch.compile(forces_model, fullgraph=True, backend="aot_eager")
        c_energy, c_forces = compiled(z, pos, box=box)
        moved = pos + 0.01 * torch.ones_like(pos)
        m_energy, m_forces = compiled(z, moved, box=box)  # same shapes: the same graph, new values
    torch.testing.assert_close(c_energy, energy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_forces, forces, rtol=1e-5, atol=1e-6)
    e, f = forces_model(z, moved, box=box)
    torch.testing.assert_close(m_energy, e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m_forces, f, rtol=1e-5, atol=1e-6)
    assert forces.abs().max() > 1e-3


def test_export_matches_eager_with_forces_and_keeps_the_checks():
    """TorchMD-Net's export contract: ``derivative=False``, forces by autograd through the
    exported program; bad input raises inside it."""
    model = _tiny(derivative=False)
    z, pos, box = _periodic()
    program = torch.export.export(model, (z, pos), {"box": box})
    exported = program.module()
    pos_e = pos.clone().requires_grad_(True)
    energy_e = exported(z, pos_e, box=box)[0]
    (grad_e,) = torch.autograd.grad(energy_e.sum(), pos_e)
    pos_r = pos.clone().requires_grad_(True)
    energy_r = model(z, pos_r, box=box)[0]
    (grad_r,) = torch.autograd.grad(energy_r.sum(), pos_r)
    torch.testing.assert_close(energy_e, energy_r.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_e, grad_r, rtol=1e-5, atol=1e-6)
    bad_z = z.clone()
    bad_z[3] = 30
    with pytest.raises(RuntimeError, match="atomic numbers must be in 1..19"):
        exported(bad_z, pos, box=box)
    bad_pos = pos.clone()
    bad_pos[1, 0] = float("nan")
    with pytest.raises(RuntimeError, match="positions must be finite"):
        exported(z, bad_pos, box=box)
    with pytest.raises(RuntimeError, match="static-shape neighbour search needs every cell height >= the cutoff 3"):
        exported(z, pos, box=box * 0.4)


def test_static_shapes_matches_the_dynamic_search():
    """TorchMD-Net's test_staticshapes: the same weights with and without static shapes."""
    dynamic, static = _tiny(True), _tiny(True, static_shapes=True)
    for z, pos, *box in (_molecule(), _periodic()):
        box = box[0] if box else None
        for a, b in zip(dynamic(z, pos, box=box), static(z, pos, box=box)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="static-shape neighbour search needs every cell height >= the cutoff 3"):
        static(*_periodic()[:2], box=_periodic()[2] * 0.4)


def test_compile_needs_num_systems_for_a_batch():
    z, pos = _molecule()
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    model = _tiny(derivative=False)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="pass num_systems= \\(a Python int\\)"):
        compiled(z, pos, batch)
