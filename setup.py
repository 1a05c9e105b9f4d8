"""Package discovery that pyproject.toml alone cannot express: every subpackage of ``kimi_mini`` (found,
never listed by hand) plus the top-level ``kernels/`` folder installed as ``kimi_mini.kernels``."""

from setuptools import find_packages, setup

PACKAGES = find_packages(include=["kimi_mini", "kimi_mini.*"]) + ["kimi_mini.kernels"]

setup(packages=PACKAGES, package_dir={"kimi_mini.kernels": "kernels"})
