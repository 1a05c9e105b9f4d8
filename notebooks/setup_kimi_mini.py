"""Install kimi_mini from the checkout this file sits in, into the Python that runs it — for Colab or any
Jupyter where ``import kimi_mini`` fails. The setup cell of every notebook runs it when kimi_mini is missing;
from a shell: ``python notebooks/setup_kimi_mini.py``.

It runs ``<this python> -m pip install -e <checkout>``: pyproject.toml's dependencies, whose torch and triton
ranges keep a preinstalled torch 2.11–2.13 (a GPU machine's, Colab's when it is in range) instead of replacing
it. Then it reads the editable install's ``.pth`` file, so the running kernel imports kimi_mini without a
restart.
"""

from __future__ import annotations

import importlib
import importlib.util
import site
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def main(dry_run: bool = False) -> int:
    """Install (``dry_run``: only print the command) unless kimi_mini is importable already."""
    if importlib.util.find_spec("kimi_mini") is not None:
        print("kimi_mini is already installed; nothing to do")
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", str(CHECKOUT)]
    print(f"kimi_mini is not installed: installing it from the checkout {CHECKOUT}\n  $ {' '.join(cmd)}\n"
          "(a few minutes the first time) ...", flush=True)
    if dry_run:
        return 0
    subprocess.run(cmd, check=True)
    # An editable install is a path hook in a .pth file, which Python reads only at start-up: read it now.
    for folder in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]):
        if any(Path(folder).glob("__editable__*kimi_mini*.pth")):
            site.addsitedir(folder)
    importlib.invalidate_caches()
    if importlib.util.find_spec("kimi_mini") is None:
        print("installed, but this kernel does not see it yet: restart the kernel (Colab: Runtime → Restart "
              "session) and run the notebook again")
        return 1
    print(f"kimi_mini installed from {CHECKOUT}; the notebook continues")
    return 0


if __name__ == "__main__":
    sys.exit(main())
