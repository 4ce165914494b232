"""The radial-MLP message kernels launch with the warps, stages and hidden chunk their compile
cases are checked at (:mod:`fastnnp.kernels.tensornet.mlp_tiles`), at the report's widths."""

import pytest
import torch

from fastnnp.kernels.tensornet import embedding_messages, interaction_messages

LAUNCH_OPTIONS = ("num_warps", "num_stages")


def _case(cases, fn):
    (case,) = [c for c in cases if c.fn is fn]
    return case


def _check(case, meta):
    """The launch's constexprs include the case's, and its warps and stages are the case's."""
    constexprs = {k: v for k, v in meta.items() if k not in LAUNCH_OPTIONS}
    for name in ("KC", "BF", "BR"):
        if name in case.constexprs:
            assert constexprs[name] == case.constexprs[name], name
    assert meta["num_warps"] == case.num_warps
    assert meta.get("num_stages") == case.num_stages


@pytest.mark.parametrize("channels", [64, 128])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_interaction_launch_matches_compile_case(channels, backward):
    R = 32
    z = torch.zeros
    mlp = interaction_messages.RadialMLP(
        0, z(R), z(R), 1.0, 0.0, 5.0, 0, z(channels, R), z(channels), z(2 * channels, channels), z(2 * channels),
        z(3 * channels, 2 * channels), z(3 * channels),
    )
    *_, meta = interaction_messages._launch(mlp, torch.zeros(4, 8, dtype=torch.int32), "ieee", backward)
    cases = interaction_messages.compile_cases(channels, R)
    fn = interaction_messages._backward_kernel if backward else interaction_messages._forward_kernel
    _check(_case(cases, fn), meta)


@pytest.mark.parametrize("channels", [64, 128])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_embedding_launch_matches_compile_case(channels, backward):
    R = 32
    projection = embedding_messages.DistanceProjection(0, torch.zeros(R), torch.zeros(R), 1.0, 0.0, 5.0,
                                                       torch.zeros(3 * channels, R), torch.zeros(3 * channels))
    *_, meta = embedding_messages._launch(projection, torch.zeros(4, 8, dtype=torch.int32), "ieee", backward)
    cases = embedding_messages.compile_cases(channels, R)
    fn = embedding_messages._backward_kernel if backward else embedding_messages._forward_kernel
    _check(_case(cases, fn), meta)
