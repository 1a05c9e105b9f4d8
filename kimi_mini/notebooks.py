"""The notebook harness: what every notebook calls first, and how notebooks are kept tidy.

- :func:`start_notebook` — validates the preset, seeds, points :func:`record_claim` at the run
  directory papermill passed in, and saves figures there.
- The ``.py`` (jupytext py:percent) twin is the file to edit and review; the ``.ipynb`` is generated
  from it without outputs (``make notebooks`` / ``python -m kimi_mini.notebooks sync``) and committed,
  so JupyterLab, GitHub and Colab open it directly. :func:`check_notebook` is what the tests enforce.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from kimi_mini import report
from kimi_mini.presets import Preset, get_preset

__all__ = ["NotebookContext", "start_notebook", "check_seeds", "notebook_parameters", "notebook_dir",
           "list_notebooks", "sync", "check_notebook", "execute_notebook", "error_summary", "interactive_figure"]


def notebook_dir() -> Path:
    """The course's notebooks: the checkout's ``notebooks/`` (``make`` / ``pip install -e .``), else the copies a
    wheel ships inside the package (``kimi_mini/course_notebooks/``, put there by setup.py)."""
    checkout = Path(__file__).resolve().parents[1] / "notebooks"
    if any(checkout.glob("[0-9][0-9]_*.ipynb")):
        return checkout
    return Path(__file__).resolve().parent / "course_notebooks"


class NotebookContext:
    """What a running notebook knows about itself: its name, preset, run directory and clock."""

    def __init__(self, name: str, preset: Preset, run_dir: Path | None, seeds: tuple[int, ...] = (0, 1, 2)):
        self.name, self.preset, self.run_dir, self.seeds = name, preset, run_dir, tuple(seeds)
        self.t0 = time.perf_counter()

    @property
    def device(self) -> torch.device:
        return torch.device(self.preset.device)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def record_claim(self, claim: str, paper_value: str, ours: str, **kwargs) -> None:
        """:func:`kimi_mini.report.record_claim` for this notebook (prints the claim; returns nothing, so a
        cell ending with it shows no ``Out[]`` echo)."""
        report.record_claim(claim, paper_value, ours, notebook=self.name, run_dir=self.run_dir, **kwargs)

    def record_check(self, claim: str, paper_value: str, ours: str, passed: bool, explanation: str, *,
                     paper: str) -> None:
        """:func:`kimi_mini.report.record_check` for this notebook: a labelled check, not a finding."""
        report.record_check(claim, paper_value, ours, passed, explanation, paper=paper, notebook=self.name,
                            run_dir=self.run_dir)

    def savefig(self, fig, name: str):
        """Save ``fig`` as ``<run dir>/figures/<notebook>-<name>.png`` (when there is a run dir) and
        return it so the notebook still displays it."""
        if self.run_dir is not None:
            path = self.run_dir / "figures" / f"{self.name}-{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110, bbox_inches="tight")
        return fig

    def __repr__(self) -> str:
        return (f"NotebookContext({self.name!r}, preset={self.preset.name!r}, seeds={self.seeds}, "
                f"run_dir={self.run_dir})")


def check_seeds(seeds) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct non-negative ints (at least one); ``ValueError`` otherwise."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds: expected a sequence of non-negative integers such as (0, 1, 2), got {seeds!r}")
    out = tuple(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise ValueError(f"seeds: expected a non-empty sequence of non-negative integers, got {seeds!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds!r}")
    return out


def start_notebook(name: str, preset: str, run_dir: str | None = None, seeds=(0, 1, 2)) -> NotebookContext:
    """Call in the cell after ``parameters``: ``nb = start_notebook("01_moe", PRESET, RUN_DIR, SEEDS)``.

    ``seeds``: the seed set of the notebook's repeated runs (its ``SEEDS`` parameter; ``kimi-mini reproduce
    --seeds 3,4,5`` passes another set). The global torch seed is the set's first seed, so a second seed set
    also changes whatever incidental randomness the notebook draws from it. Claims record the set."""
    p = get_preset(preset)
    p.check_device()
    seeds = check_seeds(seeds)
    torch.manual_seed(seeds[0])
    run = Path(run_dir) if run_dir else None
    report.set_run(run, name, seeds)
    if run is not None:  # headless (papermill): text progress bars, not widgets saved frozen in the output
        os.environ["KIMI_MINI_TEXT_PROGRESS"] = "1"
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.figsize": (7, 3.6), "axes.grid": True, "grid.alpha": 0.3,
                                    "axes.spines.top": False, "axes.spines.right": False})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    print(f"{name} · preset {p.name} ({p.description}) · torch {torch.__version__} · "
          f"{torch.get_num_threads()} CPU threads · seeds {seeds}" + (f" · run dir {run}" if run else ""))
    return NotebookContext(name, p, run, seeds)


def interactive_figure(draw, *, save=None, **controls) -> bool:
    """Live controls under one figure: ``draw(**values) -> Figure`` with each control's current value.

    The first figure is a regular display output — what papermill, CI and GitHub render, so no separate
    static copy is needed — and the controls below it redraw *that same* figure in place on every change
    (one figure, never a stack). Each figure is closed after it is shown, so matplotlib's inline backend
    does not show it a second time. ``controls`` are ipywidgets (``IntSlider``, ``Dropdown``, ``Text``, ...)
    or ``ipywidgets.fixed`` values. ``save``: called once with the first figure, e.g.
    ``save=lambda fig: nb.savefig(fig, "mask")`` to put it in the run's figures. Returns False when ipywidgets
    is missing (the figure is still shown).
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    def values() -> dict:
        return {name: getattr(c, "value", c) for name, c in controls.items()}

    def render():
        fig = draw(**values())
        plt.close(fig)
        return fig

    first = render()
    if save is not None:
        save(first)
    handle = display(first, display_id=True)
    try:
        import ipywidgets as widgets
    except ImportError:
        return False
    live = [c for c in controls.values() if isinstance(c, widgets.DOMWidget)]

    def on_change(_change) -> None:
        fig = render()
        if handle is not None:  # None outside a kernel (plain Python): nothing to update
            handle.update(fig)

    for c in live:
        c.observe(on_change, names="value")
    box = widgets.VBox(live)
    box.add_class("kimi-mini-controls")  # how tests/test_browser.py finds an explorer's controls
    display(box)
    return True


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """Course notebooks in order: ``NN_topic.ipynb``."""
    d = directory or notebook_dir()
    return sorted(p for p in d.glob("[0-9][0-9]_*.ipynb"))


def _ipc_kernel_manager(folder: str):
    """A kernel manager whose kernel talks over Unix sockets in ``folder`` instead of TCP ports: kernels
    started side by side (pytest workers, a JupyterLab next to a run) can never pick the same port and
    end up listening to each other's messages."""
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(Path(folder) / "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


def notebook_parameters(path: Path) -> set[str]:
    """The names a notebook's ``parameters`` cell assigns (what papermill may override)."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
    return set()


def execute_notebook(path: Path, output: Path, preset: str, run_dir: Path, timeout: int = 1800,
                     seeds: tuple[int, ...] | None = None) -> None:
    """Run notebook ``path`` with papermill (parameters ``PRESET``, ``RUN_DIR``, and ``SEEDS`` when ``seeds`` is
    given and the notebook takes it), writing the executed copy to ``output``; raises papermill's
    ``PapermillExecutionError`` (with the failing cell) when a cell fails and nbclient's timeout error when a
    cell runs longer than ``timeout`` seconds."""
    import tempfile

    import papermill as pm

    parameters = {"PRESET": preset, "RUN_DIR": str(run_dir)}
    if seeds is not None and "SEEDS" in notebook_parameters(path):
        parameters["SEEDS"] = list(check_seeds(seeds))
    with tempfile.TemporaryDirectory(prefix="kimi-mini-kernel-") as sockets:
        pm.execute_notebook(str(path), str(output), cwd=str(Path(path).parent), progress_bar=False,
                            parameters=parameters, execution_timeout=timeout,
                            kernel_manager_class=_ipc_kernel_manager(sockets))


def error_summary(exc: BaseException) -> str:
    """One line for a failed notebook: ``cell [N]: ErrorName: first line of the message``."""
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f"cell [{cell}]" if cell is not None else "notebook"
    return f"{where}: {ename}: {str(evalue).splitlines()[0] if evalue else ''}".strip()


def _read_py(path: Path):
    import jupytext

    return jupytext.read(path, fmt="py:percent")


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def sync(directory: Path | None = None) -> list[Path]:
    """Regenerate every ``NN_topic.ipynb`` from ``NN_topic.py``, without outputs."""
    import nbformat

    d = directory or notebook_dir()
    written = []
    for py in sorted(d.glob("[0-9][0-9]_*.py")):
        nb = _read_py(py)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:03d}"  # deterministic ids: an unchanged .py regenerates the same .ipynb
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        out = py.with_suffix(".ipynb")
        text = nbformat.writes(nb)
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
            written.append(out)
    return written


def check_notebook(ipynb: Path) -> list[str]:
    """Problems with a committed notebook (empty list: fine): outputs left in, the py:percent twin out of
    sync, no ``parameters`` cell first among the code cells, or no setup cell right after it."""
    import nbformat

    problems = []
    nb = nbformat.read(ipynb, as_version=4)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None):
            problems.append(f"cell {i} has outputs or an execution count (commit notebooks stripped)")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        problems.append("the first code cell must be tagged 'parameters'")
    elif "PRESET" not in code[0].source:
        problems.append("the parameters cell must define PRESET")
    if len(code) < 2 or "setup_kimi_mini.py" not in code[1].source:
        problems.append("the second code cell must be the setup cell (runs notebooks/setup_kimi_mini.py where "
                        "kimi_mini is not installed: Colab, a fresh Jupyter)")
    py = ipynb.with_suffix(".py")
    if not py.exists():
        problems.append(f"no py:percent twin {py.name}")
    elif _cells(_read_py(py)) != _cells(nb):
        problems.append(f"{py.name} and {ipynb.name} differ: run `make notebooks` and commit both")
    return problems


def _main(argv: list[str]) -> int:
    if argv[:1] == ["sync"]:
        for path in sync():
            print(f"wrote {path}")
        return 0
    if argv[:1] == ["check"]:
        bad = 0
        for nb in list_notebooks():
            for problem in check_notebook(nb):
                print(f"{nb.name}: {problem}")
                bad += 1
        return 1 if bad else 0
    print("usage: python -m kimi_mini.notebooks sync|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
