"""Work model of TensorNet's energy + forces call on the Triton path: FLOPs and minimum bytes per
atom of every kernel (forward and backward) and of the torch steps between them, and the H200
floor of the call.

Counted by hand from the code: the kernels in ``fastnnp/kernels/tensornet/`` and
``fastnnp/kernels/common/`` (the MLP kernels' edge tiles of ``GPU_TILE``, one receiver row x 16
slots; the table kernels' ``TABLE_GPU_TILE``, one receiver row x 4 slots), the launch sequence
in ``fastnnp/models/tensornet/triton.py`` and the torch steps of
``fastnnp/models/tensornet/reference.py`` it calls. The counts follow the code line by line;
each is a comment below. Conventions:

- FLOPs: an add, multiply, exp, cos, sqrt or reciprocal is 1, a multiply-add 2. "matmul" FLOPs
  are those of ``tl.dot`` and of the torch GEMMs (tensor cores with tf32), "other" FLOPs run on
  the fp32 CUDA cores; a min, max, floor, abs or compare is 1 as well, integer index work 0.
  The table kernels' counts have every such op (checked against the TTIR, below); the MLP
  counts, not checked that way, round some per-edge scalar work in the shared helpers (e.g. 30
  for the embedding backward's direction-to-vector part, 51 in the table count, and 4 for the
  direction, 5 there): tens of FLOPs per edge against tens of thousands.
  Edge FLOPs are counted on the E valid slots; the kernels run whole tiles (each receiver's
  slots rounded up to the tile's, masked loads of the padding move nothing): about
  (E + 7.5) / E more for the MLP kernels' 16-slot tiles, (E + 1.5) / E for the table kernels'
  4-slot tiles.
- bytes: the minimum a step moves to and from DRAM: each array it reads or writes once (other
  atoms' rows gathered per edge perfectly reused), 4 bytes a value; "fixed" bytes per call are
  weights or tables, read once per launch.
- gathered: what a step loads per edge from other atoms' rows (and, table kernels, from the
  table's coefficient rows) plus the weights it loads per tile (MLP kernels): L2 traffic when
  rows are reused, DRAM traffic when not; not in the floor.
- floor of a step = max(bytes / bandwidth, matmul FLOPs / matmul rate + other FLOPs / fp32
  rate); the call's floor is the sum over its steps, which run one after another. "ieee": every
  FLOP at the fp32 rate; "tf32": matmul FLOPs at the tf32 tensor-core rate.

The radial-table variant is counted, like the MLP one, from its kernels:
``_table_forward_kernel`` and ``_table_backward_kernel`` of ``embedding_messages.py`` and
``interaction_messages.py``, their shared device code in ``fastnnp/kernels/common/radial_table.py``
(``table_position`` once per edge, ``table_group`` per edge and channel group) and
``edge_math.py``, at ``TABLE_GPU_TILE`` and ``TABLE_NUM_WARPS`` (``table_tiles.py``), launched by
``fastnnp/models/tensornet/triton.py`` when a table is attached (the cosine cutoff is in the
table: no basis, MLP or cutoff per edge). The per-edge table FLOPs were checked against the
arithmetic ops of the compiled TTIR (sm_90, Triton 3.9, rate > 0, F = 128), which has the
compiler's CSE and dead-code elimination. Per edge and group g the lookup gathers the piece's
four coefficient rows (4 x F floats) once; forward evaluates the value (6 FLOPs per channel),
backward value and slope (13), as two Horner chains. Where the code differs from the
description this variant was first modelled from (a position of 4 FLOPs, 8 per channel for
value and slope in both passes, always 4 x 3F coefficients per edge):

- ``table_position`` with rate > 0 (the expnorm tables the checkpoints get) evaluates expm1 as a
  degree-8 series and exp(x) - 1 and selects: 28 FLOPs per edge, 1 more for dt/dd in backward
  (its exp is the one expm1 computed, merged by CSE);
- forward evaluates the value only (6 per channel, 18F per edge), backward value and slope
  (13 per channel, 39F per edge), except the embedding's I group, whose value backward does not
  use: its slope only (7 per channel) and three coefficient rows, c0's load being dead, so the
  embedding backward gathers 11 x F coefficient floats per edge, not 12 x F;
- the tiles pad each receiver to a multiple of 4 slots, not 16: (E + 1.5) / E of the FLOPs.

The gathered bytes of the other atoms' rows (z_send, features, gradients) and the DRAM bytes
are those of the MLP kernels: the table kernels read and write the same arrays. "fixed" is one
table per launch (``table_pieces`` pieces x 4 x 3F floats), read once, as if from DRAM.

Achieved rates of a bench run (``--achieved RESULT.json``, a ``python -m fastnnp.bench`` report,
merged or not): for every fastnnp-triton* row with a time, the work of one call at its shape
(F, layers and rbf of the run's model, the system's measured neighbours per atom; the cutoff
enters through that count) over its median ms/step: FLOP/s, DRAM bytes/s (per-atom bytes x
atoms + the fixed bytes of its launches) and their fractions of the H200 ceilings. Bandwidth:
bytes/s / 4.3 TB/s. Compute: the time its FLOPs need at the ceilings over the measured time,
matmul FLOPs at the row's rate (tf32 for the tl.dot of a TF32 row's radial-MLP kernels; torch's
GEMMs stay float32 in every row, the bench turns torch's TF32 off) and the other FLOPs at the
fp32 rate: in an ieee row FLOP/s / 67 TFLOP/s. Floor: the call's floor at those rates (the sum of
its steps' floors) over the measured time. The row's radial variant follows its load_model
arguments (``radial="exact"``: the MLP kernels; else the tables, assumed of ``Shape.table_pieces``
pieces, every filter tabulated). Only TensorNet with SiLU and expnorm rbf is counted; other
models' rows say "no work model".

    python bench/work_model.py                        # writes bench/results/work_model.{md,json}
    python bench/work_model.py --out /tmp/work_model  # writes /tmp/work_model.{md,json}
    python bench/work_model.py --achieved R.json      # writes R_achieved.{md,json} beside R.json
"""

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

from fastnnp.bench.backends import FASTNNP, TF32, TRITON
from fastnnp.bench.environment import commit, source_digest
from fastnnp.kernels.common.edge_math import GPU_TILE
from fastnnp.kernels.tensornet.table_tiles import TABLE_GPU_TILE

OUT = Path(__file__).resolve().parent / "results" / "work_model"
# H200 SXM: HBM3e bandwidth and dense rates (FLOP/s), as given for this model.
BANDWIDTH = 4.3e12
FP32_RATE = 67e12
TF32_RATE = 495e12
ATOMS = (1_000, 1_000_000)
# SiLU x sigmoid(x): exp, add, reciprocal, multiply; its derivative s (1 + x (1 - s)) with s again.
ACT, ACT_GRAD = 4, 7
# table_position per edge, rate > 0: x = -rate (d - lower) (sub, mul); expm1(x): the series
# x (1 + x (1/2 + ... x / 8!)) (8 mul, 7 add), |x| < 0.5 (abs, compare), exp(x) - 1 (exp, sub);
# t = -expm1 x scale (neg, mul); k = clamp(floor t) (floor, max, min); u = t - k (sub); d < upper
# (compare): 28. Backward's dt/dd = exp(x) slope_scale: 1 (the exp is expm1's).
POSITION, POSITION_SLOPE = 28, 1
# table_group per channel: value c0 + u (c1 + u (c2 + u c3)) (3 mul, 3 add); slope
# (c1 + u (2 c2 + u 3 c3)) dt (5 mul, 2 add).
VALUE, SLOPE = 6, 7


class Shape(NamedTuple):
    """The modelled model and system: TensorNet, water at 5 Å cutoff."""

    channels: int = 128  # F
    layers: int = 2
    num_rbf: int = 32  # R
    edges: float = 53.9  # directed neighbours per atom (both directions of ~27 pairs)
    table_pieces: int = 2048  # pieces per radial table (the shipped checkpoint builds 2048, 2048, 1024)

    @property
    def capacity(self) -> int:
        """Table width K: 1.25 x the expected neighbours, a multiple of 16 (neighbor_search)."""
        return 16 * math.ceil(1.25 * self.edges / 16)

    @property
    def tiles(self) -> float:
        """MLP kernels' edge tiles per atom: E slots in tiles of SLOTS (GPU_TILE), the last one
        half full on average (SLOTS - 1) / 2 padding slots per receiver."""
        slots = GPU_TILE[1]
        return (self.edges + (slots - 1) / 2) / slots

    @property
    def table_tiles(self) -> float:
        """Table kernels' edge tiles per atom (TABLE_GPU_TILE: 4 slots, 1.5 padding slots)."""
        slots = TABLE_GPU_TILE[1]
        return (self.edges + (slots - 1) / 2) / slots


class Step(NamedTuple):
    """One launch (or torch step) of a call, per atom: FLOPs, DRAM bytes, gathered bytes, and
    bytes per call (weights, tables). ``count``: launches per call (one per layer)."""

    name: str
    direction: str  # "forward" or "backward"
    runs: str  # "kernel" or "torch"
    matmul: float
    other: float
    bytes: float
    gathered: float = 0.0
    fixed: float = 0.0
    count: int = 1

    def seconds(self, atoms: int, matmul_rate: float) -> float:
        """Floor of its launches for ``atoms`` atoms."""
        memory = (self.bytes * atoms + self.fixed) / BANDWIDTH
        compute = self.matmul * atoms / matmul_rate + self.other * atoms / FP32_RATE
        return self.count * max(memory, compute)


def neighbor_search(s: Shape) -> Step:
    """The cell-list kernel: each receiver tests the atoms of 27 bins (at least a cutoff wide)."""
    E = s.edges
    candidates = 27 / (4 / 3 * math.pi) * E  # 27 cutoff cubes around the cutoff sphere
    # d = r - p_j on 4 components (4), squares (4), sum (3), two cutoff compares (2).
    other = 13 * candidates
    # pos 16, atom 4, bin 24, shift 16, sys 4, count 4 per receiver; neighbours 4 and images 12 per edge.
    bytes_ = 68 + 16 * E
    gathered = 16 * candidates + 20 * E  # candidate positions; index and shift of each kept sender
    return Step("neighbor_search", "forward", "kernel", 0, other, bytes_, gathered)


def edge_glue(s: Shape) -> list[Step]:
    """The [N, K] table's edge vectors (``kernels/common/table_vectors.py``) and the torch work
    around them, at its minimum (each array once)."""
    K, L = s.capacity, s.layers
    E = s.edges
    return [
        # _empty_table writes neighbours (4) and images (12) of all K slots.
        Step("table init", "forward", "torch", 0, 0, 16 * K),
        # table_vectors: d = p_i - p_j (3), minus images @ box (15) per slot; neighbours (4) and
        # images (12) read, vec (12) written per slot; the sender's position gathered (12 per edge).
        Step("table_vectors", "forward", "kernel", 0, 18 * K, 28 * K, 12 * E),
        # Each of the 1 + L backward kernels' grad_vec starts as zeros (12); autograd sums the
        # 1 + L edge-vector gradients (12 each).
        Step("grad_vec zeros + sum", "backward", "torch", 0, L * 3 * K, (1 + L) * 12 * K + (1 + L) * 12 * K),
        # table_vectors backward: g read (12) and neighbours (4) per slot, the row sum (3) and the
        # negation (3); atomic adds to the sender (12 per edge) and the receiver (12 per atom).
        Step("table_vectors", "backward", "kernel", 0, 6 * K, 16 * K + 12, 12 * E),
    ]


def embedding_messages(s: Shape, table: bool) -> list[Step]:
    """embedding_messages forward and backward (the radial filter: 3 distance projections)."""
    F, R, E = s.channels, s.num_rbf, s.edges
    weights = 4 * (3 * F * R + 3 * F + 2 * R)  # W [3F, R], b [3F], basis p0, p1
    # Per edge: vec (12) and sender (4); per atom: count, z_recv and z_send rows, out [10, F].
    forward_bytes = 16 * E + 4 + 4 * 2 * F + 4 * 10 * F
    # Backward: the incoming gradient [10, F] instead of out, and grad_vec (12 per edge).
    backward_bytes = 16 * E + 4 + 4 * 2 * F + 4 * 10 * F + 12 * E
    # Messages: a0 += P0 t (2F); m1 = P1 t (F), three of m1 u (6F); m2 (F), six of m2 uu (12F).
    messages = 22 * F
    if table:
        table_bytes = 4 * 4 * 3 * F * s.table_pieces
        # Per edge: length (mul, 2 FMA, sqrt: 6) and direction (max, reciprocal, 3 mul: 5) in
        # edge_tile and _direction; the position; types z_recv + z_send (F).
        edge = 6 + 5 + POSITION + F
        # Forward: three table_group values (18F); the messages as the projection kernel's (22F),
        # and the six u u^T products per edge.
        forward = edge + 3 * VALUE * F + messages + 6
        # Backward, per group. I: slope only (its value is dead), g x types x slope summed over
        # channels (3F). A: value and slope, message value x types (F), three sums of message x g
        # (6F), filter gradient (g . u) x types (6F), its sum with the slope (2F). S: value and
        # slope, message (F), six sums (12F), filter gradient (12F), with the slope (2F).
        grads = (SLOPE + 3) * F + (VALUE + SLOPE + 15) * F + (VALUE + SLOPE + 27) * F
        # Per edge: dt/dd (1); S's six u u^T products, d/d direction 3 x 6, g_u += 3; g_d += 2;
        # _store_vector_gradient: g_u . u (5), d > 0 and 1 / d (2), three g_d u + (g_u - r u) / d (15).
        vector = POSITION_SLOPE + 6 + 18 + 3 + 2 + 22
        # Gathered per edge: the z_send row (4F), the coefficient rows (4 x F floats per group;
        # backward drops the I group's c0).
        return [
            Step("embedding_messages (table)", "forward", "kernel", 0, E * forward,
                 forward_bytes, E * (4 * F + 4 * 12 * F), table_bytes),
            Step("embedding_messages (table)", "backward", "kernel", 0, E * (edge + grads + vector),
                 backward_bytes, E * (4 * F + 4 * 11 * F), table_bytes),
        ]
    # Backward sums (code): I 4F, A 17F, S 29F (d loss / d projection, d cutoff, d direction).
    grads = 4 * F + 17 * F + 29 * F
    # Basis: x = exp(alpha (lower - d)) and the envelope per edge (8), 6 per function; slopes 4 + 7R more.
    return [
        # geometry 10, basis 8 + 6R, cutoff 5, three projections (dot 2RF + bias F each), types 2F.
        Step("embedding_messages", "forward", "kernel", E * 6 * R * F, E * (10 + 8 + 6 * R + 5 + 3 * F + 2 * F + messages),
             forward_bytes, E * 4 * F + s.tiles * 4 * (3 * F * R + 3 * F), weights),
        # projections again (6RF) and their transposes for d loss / d basis (6RF); basis with
        # slopes 12 + 13R, its dot with the slopes 2R; cutoff with slope 9; types F; biases 3F.
        Step("embedding_messages", "backward", "kernel", E * 12 * R * F,
             E * (10 + 12 + 15 * R + 9 + F + 3 * F + grads + 30),
             backward_bytes, E * 4 * F + s.tiles * 4 * (6 * F * R + 3 * F), weights),
    ]


def interaction_messages(s: Shape, table: bool) -> list[Step]:
    """interaction_messages forward and backward, once per layer (radial MLP R -> F -> 2F -> 3F)."""
    F, R, E, L = s.channels, s.num_rbf, s.edges, s.layers
    weights = 4 * (2 * R + R * F + F + 2 * F * F + 2 * F + 6 * F * F + 3 * F)
    # Per edge: vec and sender; per atom: count, features [10, F] (read once as a sender), out [10, F].
    forward_bytes = 16 * E + 4 + 4 * 10 * F + 4 * 10 * F
    # Backward: features, grad and grad_features [10, F], grad_vec per edge.
    backward_bytes = 16 * E + 4 + 3 * 4 * 10 * F + 12 * E
    messages = 20 * F  # ten components: filter x gathered feature, summed over the slots
    # Backward: the feature-gradient sums (20F) and grad[i] x features[j] summed within groups
    # (10F + 7F); d loss / d filter x d filter / d distance over 3F channels (6F).
    feature_grads = 20 * F + 17 * F
    filter_slope = 6 * F
    if table:
        table_bytes = 4 * 4 * 3 * F * s.table_pieces
        # Per edge: length (6) and the position; no direction.
        edge = 6 + POSITION
        # Backward per edge: dt/dd (1), g_d += 2, _store_vector_gradient: d > 0, g_d / d, three
        # products (5).
        vector = POSITION_SLOPE + 2 + 5
        # Gathered per edge: forward the sender's features [10, F] (40F bytes) and the 12 x F
        # coefficient floats (48F); backward the sender's gradient and features (80F) and the
        # coefficients (48F); the receiver's own gradient row is not counted, as for the MLP.
        return [
            # Three table_group values (18F) and the ten filter x feature sums (20F).
            Step("interaction_messages (table)", "forward", "kernel", 0, E * (edge + 3 * VALUE * F + messages),
                 forward_bytes, E * (40 * F + 48 * F), table_bytes, L),
            # Three values and slopes (39F), the feature-gradient sums and the per-group products
            # (37F), each group's product x slope summed over channels (6F).
            Step("interaction_messages (table)", "backward", "kernel", 0,
                 E * (edge + 3 * (VALUE + SLOPE) * F + feature_grads + filter_slope + vector),
                 backward_bytes, E * (80 * F + 48 * F), table_bytes, L),
        ]
    # The MLP: biases F + 2F + 3F and activations of z1, z2 (3F ACT), recomputed in backward;
    # forward also act(z3) x cutoff (3F ACT + 3F).
    recompute = 6 * F + 3 * F * ACT
    mlp = recompute + 3 * F * ACT + 3 * F
    # Backward beyond the recomputed MLP: filter = act(z3) x cutoff (3F ACT + 3F); d loss / d z3
    # = g x cutoff x act'(z3) (3F (2 + ACT_GRAD)); the hidden loop recomputes z2 (bias 2F) and
    # takes act'(z2) (2F ACT_GRAD) and its product (2F); act'(z1) and its product (F (ACT_GRAD + 1)).
    backward_mlp = 3 * F * ACT + 3 * F + 3 * F * (2 + ACT_GRAD) + 2 * F + 2 * F * ACT_GRAD + 2 * F + F * (ACT_GRAD + 1)
    # Per tile loads of weights: forward W1 (RF), p0 p1, b1, W2, b2, W3, b3; backward also W2
    # twice more (the recomputed z2 and its transpose) and W3 once more.
    forward_tile = R * F + 2 * R + F + 2 * F * F + 2 * F + 6 * F * F + 3 * F
    backward_tile = forward_tile + 4 * F * F + 6 * F * F + 2 * F
    return [
        # geometry 6, basis 8 + 6R, cutoff 5; dots R x F, F x 2F, 2F x 3F.
        Step("interaction_messages", "forward", "kernel", E * (2 * R * F + 16 * F * F), E * (6 + 8 + 6 * R + 5 + mlp + messages),
             forward_bytes, E * 40 * F + s.tiles * 4 * forward_tile, weights, L),
        # dots: the forward (2RF + 16F^2), z2 again (4F^2), d/dh2 from 3 groups (12F^2), d/dh1
        # (4F^2), d/d basis (2RF). Basis with slopes 12 + 15R, cutoff with slope 9, 10 for the vector.
        Step("interaction_messages", "backward", "kernel", E * (4 * R * F + 36 * F * F),
             E * (6 + 12 + 15 * R + 9 + recompute + backward_mlp + feature_grads + filter_slope + 10),
             backward_bytes, E * 80 * F + s.tiles * 4 * backward_tile, weights, L),
    ]


def interaction_update(s: Shape) -> list[Step]:
    """message_products and residual_update, once per layer: per (atom, channel) arithmetic."""
    F, L = s.channels, s.layers
    # products: m = M + L T (10 FMA = 20), compose m and T (18), msg Y and Y msg (2 x 45), c (p + q)
    # (18), |C|^2 + 1 and its reciprocal (19), decompose (18), scale (10).
    products = 20 + 18 + 90 + 18 + 19 + 18 + 10
    # backward: the forward less the scaling (183), d/d inv (19 + 3), g inv (10), decompose_t (22),
    # d/dC (18), four 3x3 products (180) and c (a + b) twice (36), compose_t twice (16), the self loop (20).
    products_backward = 183 + 22 + 10 + 22 + 18 + 180 + 36 + 16 + 20
    # residual on components: compose X and D (18), dX dX (45), X + dX + c dX dX (27), decompose
    # (18); backward: decompose_t (22), compose D (9), two products (90), g + c (a + b) (27),
    # compose_t twice (16).
    residual, residual_backward = 18 + 45 + 27 + 18, 22 + 9 + 90 + 27 + 16
    fixed = 4 * 3 * F  # the self-loop filter
    return [
        # M, T read, P written [10, F]; charge factor 4.
        Step("message_products", "forward", "kernel", 0, products * F, 4 * 30 * F + 4, 0, fixed, L),
        # M, T, grad read, grad_M, grad_T written.
        Step("message_products", "backward", "kernel", 0, products_backward * F, 4 * 50 * F + 4, 0, fixed, L),
        # X and D [10, F] read, X' [10, F] written.
        Step("residual_update", "forward", "kernel", 0, residual * F, 4 * 30 * F + 4, 0, 0, L),
        # D and grad read, grad_X and grad_D written [10, F].
        Step("residual_update", "backward", "kernel", 0, residual_backward * F, 4 * 40 * F + 4, 0, 0, L),
    ]


def atom_kernels(s: Shape) -> list[Step]:
    """The per-atom component kernels (``atom_tensors.py``, ``channel_mix.py``) and the binning
    (``atom_bins.py``)."""
    F, L = s.channels, s.layers
    mixes = 1 + 2 * L  # the embedding's, each layer's input and products
    # channel_mix: 10 component rows of F -> F per atom; x read, y written [10, F]; 3 F x F weights.
    # Its tl.dot is always exact float32 ("ieee"), so its FLOPs count at the fp32 rate in both variants.
    mix = Step("channel_mix", "forward", "kernel", 0, 2 * 10 * F * F, 4 * 20 * F, 0, 4 * 3 * F * F, mixes)
    # normalized: compose (9), |.|^2 (17), + 1 and reciprocal (2), scale (10); backward: the
    # forward less the scale (28), g . x (19), the factor (3), s e (9), compose_t (8), g inv + n (20).
    normalized, normalized_backward = 9 + 17 + 2 + 10, 28 + 19 + 3 + 9 + 8 + 20
    # embedding_components: self loop (2), trace removal (5), compose (9), |.|^2 (17); backward
    # the forward (33), s e (10), compose_t (8), g + n (10), trace projection (5).
    embedding, embedding_backward = 2 + 5 + 9 + 17, 33 + 10 + 8 + 10 + 5
    # readout_invariants: compose (9), decompose (18), invariants (15); backward compose and
    # decompose (27), the ten gradients (14), decompose_t (22), compose_t (8).
    readout, readout_backward = 9 + 18 + 15, 27 + 14 + 22 + 8
    # binning: fractional coordinates (15), floor and wrap (21), u (6), bins (12), key (4) per atom in
    # each of the two kernels (float64, counted at the fp32 rate); pos read (12) twice, key written
    # and read (16), sorted pos, atom, bin, shift, sys written (16 + 4 + 24 + 16 + 4). The cell
    # kernel's work is per system (a 3 x 3 inverse and heights): nothing per atom.
    binning = 58
    return [
        Step("bin_atoms", "forward", "kernel", 0, 2 * binning, 24 + 16 + 64),
        mix, mix._replace(direction="backward"),
        # x read, out written [10, F]; backward x and grad read, grad_x written.
        Step("normalized", "forward", "kernel", 0, normalized * F, 4 * 20 * F, 0, 0, L),
        Step("normalized", "backward", "kernel", 0, normalized_backward * F, 4 * 30 * F, 0, 0, L),
        # M [10, F] and t [F] read, X0 [10, F] and |X0|^2 [F] written; backward also both gradients.
        Step("embedding_components", "forward", "kernel", 0, embedding * F, 4 * 22 * F),
        Step("embedding_components", "backward", "kernel", 0, embedding_backward * F, 4 * 32 * F),
        # X [10, F] read, [3F] written; backward grad [3F] and X read, grad_X written.
        Step("readout_invariants", "forward", "kernel", 0, readout * F, 4 * 13 * F),
        Step("readout_invariants", "backward", "kernel", 0, readout_backward * F, 4 * 23 * F),
    ]


def atom_gemms(s: Shape) -> list[Step]:
    """The torch GEMMs per atom (operands only: the layer norms and activations between them
    move more and are not counted). Backward gives the inputs' gradients only (the weights are
    constants)."""
    F = s.channels
    # (rows, in, out): the embedding's norm MLP F -> 2F -> 3F; readout 3F -> F; head F -> F/2 -> 1.
    gradients = [(1, F, 2 * F), (1, 2 * F, 3 * F), (1, 3 * F, F), (1, F, F // 2), (1, F // 2, 1)]
    # atom_terms: z_recv and z_send from the type embedding (constants: no backward).
    forward = [(2, F, F)] + gradients

    def flops(gemms):
        return sum(2 * rows * a * b for rows, a, b in gemms)

    def bytes_(gemms):
        return sum(4 * rows * (a + b) for rows, a, b in gemms)

    return [
        Step("torch GEMMs", "forward", "torch", flops(forward), 0, bytes_(forward)),
        Step("torch GEMMs", "backward", "torch", flops(gradients), 0, bytes_(gradients)),
    ]


def call_steps(s: Shape, table: bool) -> list[Step]:
    """Every step of one energy + forces call, forward then backward."""
    steps = [neighbor_search(s), *edge_glue(s), *embedding_messages(s, table), *interaction_messages(s, table),
             *interaction_update(s), *atom_kernels(s), *atom_gemms(s)]
    return [step for step in steps if step.direction == "forward"] + [step for step in steps if step.direction == "backward"]


def summary(steps: list[Step]) -> dict:
    """Per-atom totals (FLOPs, bytes; a step's figures times its count) and the floors (s)."""
    floors = {
        f"{precision}_{atoms}": sum(step.seconds(atoms, rate) for step in steps)
        for precision, rate in (("ieee", FP32_RATE), ("tf32", TF32_RATE)) for atoms in ATOMS
    }
    return {
        "matmul_flops": sum(st.count * st.matmul for st in steps), "other_flops": sum(st.count * st.other for st in steps),
        "bytes": sum(st.count * st.bytes for st in steps), "gathered": sum(st.count * st.gathered for st in steps),
        "fixed_bytes": sum(st.count * st.fixed for st in steps), "floor_seconds": floors,
    }


def model(s: Shape) -> dict:
    """Steps and summary of the MLP (today's kernels) and the table variant at shape ``s``."""
    out = {"shape": {**s._asdict(), "capacity": s.capacity, "tiles_per_atom": s.tiles,
                     "table_tiles_per_atom": s.table_tiles}, "variants": {}}
    for variant, table in (("mlp", False), ("table", True)):
        steps = call_steps(s, table)
        out["variants"][variant] = {"steps": [st._asdict() for st in steps], "summary": summary(steps)}
    return out


def _markdown(report: dict) -> str:
    shape = report["models"][0]["shape"]
    tile_factor = f"{shape['tiles_per_atom'] * GPU_TILE[1] / shape['edges']:.2f}x"
    table_factor = f"{shape['table_tiles_per_atom'] * TABLE_GPU_TILE[1] / shape['edges']:.2f}x"
    lines = [
        "# Work model: TensorNet energy + forces on the Triton path",
        "",
        f"Written by `python bench/work_model.py` at commit `{report['commit']}` (source digest "
        f"`{report['source_digest']}`). Conventions, the counting of both variants and where the table kernels "
        "differ from the description the table variant was first modelled from are in `bench/work_model.py`'s "
        "docstring: FLOPs and minimum DRAM bytes per atom (each array once), \"gathered\" = bytes loaded per "
        "edge from other atoms' rows and table coefficients and per tile from weights (L2 when reused), "
        "\"fixed\" = weights or tables per call. Floor per step = "
        f"max(bytes / {BANDWIDTH / 1e12:g} TB/s, matmul FLOPs / rate + other FLOPs / {FP32_RATE / 1e12:g} "
        f"TFLOP/s), rate {FP32_RATE / 1e12:g} (ieee) or {TF32_RATE / 1e12:g} (tf32: every tl.dot and torch GEMM) "
        "TFLOP/s; the call's floor is the sum. Edge FLOPs are counted on the valid slots; the MLP kernels run "
        f"whole {GPU_TILE[1]}-slot tiles ({tile_factor} the FLOPs at these counts), the table kernels "
        f"{TABLE_GPU_TILE[1]}-slot tiles ({table_factor}). Both variants are counted from their kernels: the table "
        "variant from `_table_forward_kernel` and `_table_backward_kernel` (radial MLP, distance projections and "
        "cutoff replaced by a cubic table: per edge and channel group a gather of the piece's 4 x F coefficient "
        "floats, the value in forward (6 FLOPs per channel), value and slope in backward (13), and 28 FLOPs per "
        "edge for the table position), its per-edge FLOPs checked against the compiled TTIR.",
        "",
        "## Floors of one call (H200)",
        "",
        "| F | radial | matmul MFLOP/atom | other MFLOP/atom | KB/atom | gathered KB/atom | fixed MB "
        "| ieee 1k atoms (µs) | tf32 1k atoms (µs) | ieee 1M atoms (ms) | tf32 1M atoms (ms) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in report["models"]:
        for variant, data in result["variants"].items():
            t = data["summary"]
            f = t["floor_seconds"]
            lines.append(
                f"| {result['shape']['channels']} | {variant} | {t['matmul_flops'] / 1e6:.2f} | {t['other_flops'] / 1e6:.2f} "
                f"| {t['bytes'] / 1e3:.1f} | {t['gathered'] / 1e3:.0f} | {t['fixed_bytes'] / 1e6:.1f} "
                f"| {f['ieee_1000'] * 1e6:.0f} | {f['tf32_1000'] * 1e6:.0f} | {f['ieee_1000000'] * 1e3:.2f} "
                f"| {f['tf32_1000000'] * 1e3:.2f} |"
            )
    for result in report["models"]:
        shape = result["shape"]
        for variant, data in result["variants"].items():
            lines += [
                "",
                f"## F={shape['channels']}, {variant}: {shape['layers']} layers, {shape['num_rbf']} rbf, "
                f"{shape['edges']} neighbours per atom (K={shape['capacity']}, "
                f"{shape['table_tiles_per_atom' if variant == 'table' else 'tiles_per_atom']:.2f} "
                f"{(TABLE_GPU_TILE if variant == 'table' else GPU_TILE)[1]}-slot tiles per atom)",
                "",
                *step_table([Step(**row) for row in data["steps"]], tf32=True),
            ]
    return "\n".join(lines) + "\n"


def step_table(steps: list[Step], tf32: bool) -> list[str]:
    """Markdown rows of one variant's steps: per-atom work and each step's floor at 1M atoms
    (fp32 and, with ``tf32``, tf32 matmuls)."""
    lines = [
        "| step | pass | runs | x | matmul kFLOP/atom | other kFLOP/atom | bytes/atom | gathered KB/atom "
        "| fixed KB | ieee 1M (ms) |" + (" tf32 1M (ms) |" if tf32 else ""),
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if tf32 else ""),
    ]
    for st in steps:
        lines.append(
            f"| {st.name} | {st.direction} | {st.runs} | {st.count} | {st.matmul / 1e3:.1f} | {st.other / 1e3:.1f} "
            f"| {st.bytes:.0f} | {st.gathered / 1e3:.1f} | {st.fixed / 1e3:.0f} "
            f"| {st.seconds(1_000_000, FP32_RATE) * 1e3:.3f} |"
            + (f" {st.seconds(1_000_000, TF32_RATE) * 1e3:.3f} |" if tf32 else "")
        )
    return lines


def write_report(out: Path, report: dict, markdown: str) -> None:
    """``out``.json (the report) and ``out``.md (its tables)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(f"wrote {out}.json and {out}.md")


def unmodelled(hparams: dict) -> str | None:
    """Why the run's model has no work model here, or None (TensorNet, SiLU, expnorm rbf)."""
    for key, counted in (("model", "tensornet"), ("activation", "silu"), ("rbf_type", "expnorm")):
        if hparams.get(key) != counted:
            return f"no work model: {key} {hparams.get(key)} (counted: {counted})"
    return None


def row_shape(hparams: dict, neighbors_per_atom: float) -> Shape:
    """The Shape of a bench row: the model's width, depth and rbf, the system's measured
    directed neighbours per atom."""
    return Shape(channels=hparams["embedding_dimension"], layers=hparams["num_layers"], num_rbf=hparams["num_rbf"],
                 edges=neighbors_per_atom)


def row_rates(steps: list[Step], atoms: int, seconds: float, tf32: bool) -> dict:
    """Work of one call of ``atoms`` atoms and its rates when it takes ``seconds``: FLOPs (all,
    and matmul), DRAM bytes, FLOP/s, bytes/s, their fractions of the ceilings and the call's
    floor (s; module docstring). ``tf32``: the kernels' matmuls at the tf32 rate (torch GEMMs at
    fp32)."""
    def matmul_rate(st: Step) -> float:
        return TF32_RATE if tf32 and st.runs == "kernel" else FP32_RATE

    matmul = sum(st.count * st.matmul for st in steps) * atoms
    flops = matmul + sum(st.count * st.other for st in steps) * atoms
    bytes_ = sum(st.count * (st.bytes * atoms + st.fixed) for st in steps)
    compute_s = sum(st.count * (st.matmul / matmul_rate(st) + st.other / FP32_RATE) for st in steps) * atoms
    floor_s = sum(st.seconds(atoms, matmul_rate(st)) for st in steps)
    return {"flops": flops, "matmul_flops": matmul, "bytes": bytes_, "flop_per_s": flops / seconds,
            "bytes_per_s": bytes_ / seconds, "bandwidth_fraction": bytes_ / seconds / BANDWIDTH, "compute_fraction": compute_s / seconds,
            "floor_s": floor_s, "floor_fraction": floor_s / seconds}


def achieved(bench: dict) -> list[dict]:
    """One entry per fastnnp-triton* row of a bench report: the row's identity, its shape and
    :func:`row_rates`, or a ``note`` saying why there are none."""
    hparams = bench["config"]["hparams"]
    why_not = unmodelled(hparams)
    out = []
    for row in bench["results"]:
        if row["backend"] not in TRITON:
            continue
        info = bench["systems"].get(row["system"], {})
        tf32 = row["backend"] in TF32
        entry = {"system": row["system"], "backend": row["backend"], "n_atoms": row["n_atoms"],
                 "neighbors_per_atom": info.get("neighbors_per_atom"), "cutoff": hparams["cutoff_upper"],
                 "radial": "mlp" if FASTNNP[row["backend"]].get("radial") == "exact" else "table",
                 "precision": "tf32" if tf32 else "ieee", "median_ms": row.get("median_ms")}
        if why_not:
            entry["note"] = why_not
        elif "median_ms" not in row:
            entry["note"] = f"not timed: {row['status']}"
        elif entry["neighbors_per_atom"] is None:
            entry["note"] = "no neighbour count for the system"
        else:
            shape = row_shape(hparams, entry["neighbors_per_atom"])
            entry["shape"] = shape._asdict()
            steps = call_steps(shape, table=entry["radial"] == "table")
            entry.update(row_rates(steps, row["n_atoms"], row["median_ms"] / 1e3, tf32))
        out.append(entry)
    return out


def _achieved_markdown(report: dict) -> str:
    run = report["run"]
    lines = [
        f"# Achieved rates: {run['model_description']}",
        "",
        f"- run: `{report['source']}`; device {run['device']}; run commit {run['commit'][:12]}",
        f"- work model: `python bench/work_model.py --achieved` at commit `{report['commit']}` (source digest "
        f"`{report['source_digest']}`); conventions in `bench/work_model.py`'s docstring",
        f"- ceilings (H200): {BANDWIDTH / 1e12:g} TB/s, {FP32_RATE / 1e12:g} TFLOP/s fp32, {TF32_RATE / 1e12:g} "
        "TFLOP/s tf32 (the TF32 rows' kernel matmuls only)",
    ]
    if "H200" not in run["device"]:
        lines.append(f"- **this run was not on an H200 ({run['device']}): its fractions of the H200's ceilings "
                     "measure nothing**")
    head = ["system", "atoms", "nbrs/atom", "backend", "radial", "precision", "ms/step", "GFLOP/call", "MB/call",
            "TFLOP/s", "TB/s", "% bandwidth", "% compute", "floor ms", "% floor"]
    lines += ["", "| " + " | ".join(head) + " |", "|---|---:|---:|---|---|---|" + "---:|" * 9]
    for e in report["rows"]:
        ident = [e["system"], f"{e['n_atoms']:,}", _cell(e["neighbors_per_atom"], "{:.1f}"), e["backend"], e["radial"],
                 e["precision"], _cell(e["median_ms"], "{:.4g}")]
        if "note" in e:
            lines.append("| " + " | ".join(ident + [e["note"]] + ["-"] * 7) + " |")
            continue
        lines.append("| " + " | ".join(ident + [
            f"{e['flops'] / 1e9:.4g}", f"{e['bytes'] / 1e6:.4g}", f"{e['flop_per_s'] / 1e12:.3g}",
            f"{e['bytes_per_s'] / 1e12:.3g}", f"{100 * e['bandwidth_fraction']:.3g}", f"{100 * e['compute_fraction']:.3g}",
            f"{e['floor_s'] * 1e3:.4g}", f"{100 * e['floor_fraction']:.3g}"]) + " |")
    lines += ["", "GFLOP/call, MB/call: the work model's FLOPs (matmul and other) and minimum DRAM bytes of one energy + "
              "forces call at the row's shape. % bandwidth: (MB/call / ms/step) / the bandwidth; % compute: the FLOPs' "
              "time at the ceilings / ms/step; floor ms: the call's floor (per step the larger of the two, summed); "
              "% floor: floor / ms/step (100 % = at the ceiling)."]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def achieved_report(path: Path) -> dict:
    """The achieved rates of the bench report at ``path`` (see :func:`achieved`)."""
    bench = json.loads(path.read_text())
    env, config = bench["environment"], bench["config"]
    return {
        "source": str(path), "commit": commit(), "source_digest": source_digest(),
        "run": {"device": env["device"], "commit": env["commit"], "model": config["model"],
                "model_description": config["model_description"]},
        "hardware": {"bandwidth": BANDWIDTH, "fp32_rate": FP32_RATE, "tf32_rate": TF32_RATE},
        "rows": achieved(bench),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help=f"output path without suffix (default {OUT})")
    parser.add_argument("--achieved", type=Path, metavar="RESULT.json",
                        help="a bench report: write RESULT_achieved.{md,json} beside it instead")
    args = parser.parse_args(argv)
    if args.achieved:
        if args.out:
            parser.error("--out: --achieved writes beside its RESULT.json")
        report = achieved_report(args.achieved)
        write_report(args.achieved.with_name(args.achieved.stem + "_achieved"), report, _achieved_markdown(report))
        return
    report = {
        "commit": commit(), "source_digest": source_digest(),
        "hardware": {"bandwidth": BANDWIDTH, "fp32_rate": FP32_RATE, "tf32_rate": TF32_RATE},
        "models": [model(Shape(channels=F)) for F in (128, 64)],
    }
    write_report(args.out or OUT, report, _markdown(report))


if __name__ == "__main__":
    main()
