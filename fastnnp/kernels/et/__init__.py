"""The Equivariant Transformer's fused kernels: the attention messages of a layer over the padded
neighbour table (:mod:`.attention_messages`), with their float64 torch reference in
:mod:`.reference`."""
