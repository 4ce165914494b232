"""fastnnp as an openmm-ml potential: ``MLPotential("fastnnp", modelPath="model.ckpt")``.

openmm-ml finds :class:`FastNNPPotentialImplFactory` through the entry point ``fastnnp`` in the
group ``openmmml.potentials`` (pyproject.toml). Importing this package imports neither OpenMM nor
openmm-ml: openmm-ml imports it while it registers its entry points, so the factory must exist
before anything here touches openmm-ml; the potential itself is :mod:`fastnnp.openmm.potential`.
"""

from typing import Any


class FastNNPPotentialImplFactory:
    """openmm-ml's factory for the ``fastnnp`` potential (the ``MLPotentialImplFactory``
    contract: ``createImpl(name, **args)``); see :class:`fastnnp.openmm.potential.FastNNPPotentialImpl`."""

    def createImpl(self, name: str, **args: Any):
        from .potential import FastNNPPotentialImpl

        return FastNNPPotentialImpl(name, **args)


__all__ = ["FastNNPPotentialImplFactory"]
