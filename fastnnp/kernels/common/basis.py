"""The kernels' view of a radial basis module: its code and parameters as kernel arguments."""

from torch import Tensor, nn

from ...models.common.radial import ExpNormalSmearing
from .codes import RBF_CODES
from .op_args import constant


def kernel_basis(expansion: nn.Module) -> tuple[int, Tensor, Tensor, float]:
    """(code, p0 [R], p1 [R], alpha) of an ``ExpNormalSmearing`` (means, betas, alpha) or a
    ``GaussianSmearing`` (offsets, the coefficient per function, 0), tensors as constants."""
    if isinstance(expansion, ExpNormalSmearing):
        return RBF_CODES["expnorm"], constant(expansion.means), constant(expansion.betas), expansion.alpha
    offset = constant(expansion.offset)
    return RBF_CODES["gauss"], offset, constant(expansion.coeff.detach().expand_as(offset)), 0.0
