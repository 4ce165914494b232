"""TensorNet's fused kernels: embedding messages, interaction messages and the per-atom update,
over the ten-component ``[N, 10, F]`` layout of :mod:`.components`; :mod:`.reference` holds
their torch references (built on the pure-torch model's steps), for float64 checks."""
