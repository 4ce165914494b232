"""Device code shared by every architecture's kernels, and the Triton neighbour search."""
