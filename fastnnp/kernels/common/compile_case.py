"""How a kernel module declares what :mod:`fastnnp.kernels.compile_check` compiles.

A kernel module defines ``compile_cases(channels, num_rbf) -> list[CompileCase]``: the
specialisations it launches at production shape. The check finds every such module in
:mod:`fastnnp.kernels` by itself, so a new kernel needs no edit anywhere else.
"""

from typing import Any, NamedTuple, Optional


class CompileCase(NamedTuple):
    """One specialisation of a ``@triton.jit`` function: its ``tl.constexpr`` values, the
    pointer arguments that are not ``*fp32`` (name -> Triton type, e.g. ``"*i32"``) and the
    scalar arguments that are ``fp32`` (the other scalars are ``i32``), and the warps per
    program and software-pipelining stages the launcher uses (``num_stages`` None: Triton's
    default, 3 on sm_90)."""

    fn: Any
    constexprs: dict[str, Any]
    pointers: dict[str, str] = {}
    floats: tuple[str, ...] = ()
    num_warps: int = 4
    num_stages: Optional[int] = None
