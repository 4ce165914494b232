"""The models: one folder per architecture (``tensornet/``, ``et/``, ``gn/``: the pure-torch
reference with TorchMD-Net's semantics, and the Triton glue where kernels exist), shared blocks
in ``common/``, output heads, the whole potential (``potential``), and the registry that picks
an implementation per (architecture, backend) (``registry``, used by ``factory.build_model``)."""
