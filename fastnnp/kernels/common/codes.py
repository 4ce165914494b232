"""The kernels' ``tl.constexpr`` codes for activations and radial bases (importable without
Triton): :func:`~fastnnp.kernels.common.edge_math.activation` and
:func:`~fastnnp.kernels.common.edge_math.radial_basis` branch on them. Which activation of a
checkpoint has which code is the table :data:`fastnnp.models.common.activations.ACTIVATIONS`."""

SILU, SSP, TANH, SIGMOID = 0, 1, 2, 3
EXPNORM, GAUSS = 0, 1
RBF_CODES = {"expnorm": EXPNORM, "gauss": GAUSS}
