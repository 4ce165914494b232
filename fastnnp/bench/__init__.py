"""``python -m fastnnp.bench``: fastnnp's backends and TorchMD-Net's, timed side by side.

Modules: :mod:`.cli` (options), :mod:`.runner` (one subprocess per system and backend,
agreement checks), :mod:`.worker` (one measurement), :mod:`.steps` (each backend's
energy + forces callable), :mod:`.backends` (which rows exist and can run), :mod:`.models`
(presets and checkpoints), :mod:`.systems` (ASE-built inputs), :mod:`.timing`,
:mod:`.metrics`, :mod:`.environment`, :mod:`.report` (JSON, Markdown table, PNG plot).
"""

from .cli import main

__all__ = ["main"]
