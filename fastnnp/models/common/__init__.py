"""Building blocks shared by the representations: activations, radial bases and cutoffs, MLPs,
scatter, the neighbour embedding, and constructor-argument checks."""
