"""TorchMD-Net's model-contract tests (``tests/test_model.py``, ``test_examples.py``,
``test_priors.py``, ``test_calculator.py`` of torchmd/torchmd-net), ported: the same intent,
fastnnp as the model under test and TorchMD-Net 3.1.0 as the oracle wherever numbers are compared."""
