"""TensorNet2's fused kernels: the interaction messages whose radial filter also reads the
pair's charges (:mod:`.charged_messages`); :mod:`.reference` holds their float64 torch
reference. Everything else on TensorNet2's Triton path is TensorNet's kernels."""
