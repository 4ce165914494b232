"""Work model of TensorNet2's energy + forces call on the Triton path: per-edge FLOPs and bytes of
the charged interaction-messages kernels, and the call's per-atom totals and H200 floor.

Counted from the code (``fastnnp/kernels/tensornet2/charged_messages.py``, launched by
``fastnnp/models/tensornet2/triton.py``) with :mod:`work_model`'s conventions and its TensorNet
counts: everything but the layers' messages is TensorNet's kernels (:func:`work_model.call_steps`),
and the charged kernels are TensorNet's radial-MLP interaction kernels changed as follows:

- forward (``_forward_kernel``): the same MLP and sums, plus recv[i] + send[j] before the first
  activation (2F per edge); reads recv and send [N, F] once (8F bytes per atom) and gathers the
  sender's send row per edge (4F);
- backward, two launches: (a) the forward kernel with recv and send swapped, on the incoming
  gradient: the features' gradient (the filter is not symmetric in the pair's ends); (b)
  ``_backward_kernel``: TensorNet's backward without the feature-gradient sums (-20F per edge)
  but with the charge terms (2F), recv's row sum (F) and the atomic scatter to send's gradient
  (F, an fp32 atomic per channel); reads features, grad [10, F], recv, send; writes grad_vec per
  edge, grad_recv, grad_send (zeroed first) [N, F]; gathers features[j] and send[j] per edge
  (44F; the own row's grad is not counted, as for TensorNet) and performs 4F bytes of atomics.

Torch steps TensorNet2 adds per atom (counted as GEMMs, as :func:`work_model.atom_gemms`): each
of the L + 1 charge predictions' MLP 3F -> F -> 2q, each layer's charge terms (2 q -> F) and
self-loop MLP on per-atom pre-activations (F -> 2F -> 3F); backward the inputs' gradients of
the same GEMMs. Layer norms, activations, the equilibration, the ZBL term and the Coulomb head
(all-to-all or cut off: per pair of the output model's own list) are not counted.

    python bench/work_model_tensornet2.py    # prints the per-edge counts and the floors
"""

import argparse
from pathlib import Path

from work_model import ATOMS, Shape, Step, call_steps, interaction_messages, summary

Q_DIM = 16  # AceFF-2.0's q_dim


def charged_messages(s: Shape) -> list[Step]:
    """The charged messages' forward and the backward's two launches, once per layer."""
    F, E = s.channels, s.edges
    forward, backward = interaction_messages(s, table=False)
    charge = 2 * F  # recv[i] + send[j]
    fwd = forward._replace(
        name="tensornet2_messages", other=forward.other + E * charge,
        bytes=forward.bytes + 8 * F, gathered=forward.gathered + E * 4 * F,
    )
    swapped = fwd._replace(name="tensornet2_messages (features' gradient)", direction="backward")
    # backward kernel: TensorNet's less the feature-gradient sums (20F), plus the charge terms,
    # the row sum and the atomic scatter of d loss / d z1.
    other = backward.other + E * (-20 * F + charge + 2 * F)
    # features and grad [10, F] read; recv, send read; grad_recv written, grad_send zeroed and
    # written: TensorNet's less grad_features [10, F] written, plus 4 x 4F.
    bytes_ = backward.bytes - 40 * F + 16 * F
    gathered = backward.gathered - E * 40 * F + E * (4 * F + 4 * F)  # no grad[j]; send[j], atomics
    back = backward._replace(name="tensornet2_messages_backward", other=other, bytes=bytes_, gathered=gathered)
    return [fwd, swapped, back]


def charge_gemms(s: Shape, q_dim: int = Q_DIM) -> list[Step]:
    """The torch GEMMs TensorNet2 adds per atom: L + 1 predictions, L charge terms and self loops."""
    F, L = s.channels, s.layers
    predictions = (L + 1) * [(3 * F, F), (F, 2 * q_dim)]
    layers = L * [(2 * q_dim, F), (F, F), (F, 2 * F), (2 * F, 3 * F)]  # charge terms (as one), self-loop MLP
    gemms = predictions + layers
    flops = sum(2 * a * b for a, b in gemms)
    bytes_ = sum(4 * (a + b) for a, b in gemms)
    return [Step("charge GEMMs", "forward", "torch", flops, 0, bytes_),
            Step("charge GEMMs", "backward", "torch", flops, 0, bytes_)]


def tensornet2_steps(s: Shape, table: bool) -> list[Step]:
    """TensorNet's call (embedding filter exact or from a table) with the charged layers."""
    steps = [st for st in call_steps(s, table) if not st.name.startswith("interaction_messages")]
    steps += charged_messages(s) + charge_gemms(s)
    return [st for st in steps if st.direction == "forward"] + [st for st in steps if st.direction == "backward"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)
    print("| F | launch | pass | matmul FLOP/edge | other FLOP/edge | DRAM B/edge | gathered B/edge |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for F in args.channels:
        s = Shape(channels=F)
        tn = interaction_messages(s, table=False)
        for st in [*charged_messages(s), *[t._replace(name="TensorNet " + t.name) for t in tn]]:
            print(f"| {F} | {st.name} | {st.direction} | {st.matmul / s.edges:.0f} | {st.other / s.edges:.0f} "
                  f"| {st.bytes / s.edges:.0f} | {st.gathered / s.edges:.0f} |")
    print()
    print("| F | embedding | matmul MFLOP/atom | other MFLOP/atom | KB/atom | ieee 1M atoms (ms) | tf32 1M atoms (ms) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for F in args.channels:
        for variant, table in (("exact", False), ("table", True)):
            t = summary(tensornet2_steps(Shape(channels=F), table))
            f = t["floor_seconds"]
            print(f"| {F} | {variant} | {t['matmul_flops'] / 1e6:.2f} | {t['other_flops'] / 1e6:.2f} | "
                  f"{t['bytes'] / 1e3:.1f} | {f[f'ieee_{ATOMS[1]}'] * 1e3:.2f} | {f[f'tf32_{ATOMS[1]}'] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
