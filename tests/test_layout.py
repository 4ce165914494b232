"""The package imports from a plain checkout: every module, kernels included, from the source tree."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run from the checkout with any installed (editable) fastnnp finder removed, so only the
# source tree on the path (the working directory, as for ``python -c``) can provide fastnnp.
SCRIPT = """
import pkgutil, sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
import fastnnp
skip = ("compile_check", "__main__")  # the one sets TRITON_INTERPRET=0, the other runs a command
names = [m.name for m in pkgutil.walk_packages(fastnnp.__path__, "fastnnp.") if not m.name.endswith(skip)]
for name in names:
    __import__(name)
outside = [n for n in names if not sys.modules[n].__file__.startswith(sys.argv[1])]
print(len(names), outside)
"""


def test_every_module_imports_from_a_plain_checkout():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    count, outside = result.stdout.split(maxsplit=1)
    assert int(count) > 50 and outside.strip() == "[]", result.stdout
