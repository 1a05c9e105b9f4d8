"""Package discovery that pyproject.toml alone cannot express: every subpackage of ``kimi_mini`` (found,
never listed by hand) plus the top-level ``kernels/`` folder installed as ``kimi_mini.kernels``; and, in a
wheel, the course notebooks copied to ``kimi_mini/course_notebooks/`` so that ``kimi-mini reproduce`` finds
them outside a checkout (:func:`kimi_mini.notebooks.notebook_dir`)."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGES = find_packages(include=["kimi_mini", "kimi_mini.*"]) + ["kimi_mini.kernels"]
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"


class BuildWithNotebooks(build_py):
    """``build_py`` that also copies ``notebooks/NN_*.ipynb`` into the built package. An editable install
    skips it: there :func:`~kimi_mini.notebooks.notebook_dir` reads the checkout's notebooks directly."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        if not notebooks:
            raise SystemExit(f"no course notebooks in {NOTEBOOKS}: a wheel without them could not reproduce")
        target = Path(self.build_lib) / "kimi_mini" / "course_notebooks"
        self.mkpath(str(target))
        for nb in notebooks:
            self.copy_file(str(nb), str(target / nb.name))


setup(packages=PACKAGES, package_dir={"kimi_mini.kernels": "kernels"}, cmdclass={"build_py": BuildWithNotebooks})
