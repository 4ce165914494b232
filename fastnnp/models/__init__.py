"""Pure-torch models with TorchMD-Net's reference semantics (the CPU path and the kernels' oracle)."""
