"""Test set-up: Triton's CPU interpreter when there is no GPU (decided by ``kimi_mini.kernels``, imported
first), the `gpu` marker, and the one ``device`` fixture every kernel test takes its tensors from.
"""

import pytest
import torch

import kimi_mini.kernels  # noqa: F401  (the one place that sets TRITON_INTERPRET, before triton is imported)

_has_cuda = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Test tensors are tiny: a second intra-op thread only spin-waits, and with two pytest workers on two
    cores it makes everything several times slower (`make test` also sets OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def device() -> str:
    """The device every kernel test puts its tensors on: "cuda" when the kernels are compiled, "cpu" when
    Triton interprets them — so a CPU tensor never reaches a compiled kernel (kimi_mini.kernels decides)."""
    from kimi_mini.kernels import default_device

    return default_device()


def pytest_terminal_summary(terminalreporter):
    """One line when the browser test could not run, and how to make it run."""
    import importlib.util
    import shutil

    skipped = terminalreporter.stats.get("skipped", [])
    if not any("test_browser" in str(getattr(r, "nodeid", "")) for r in skipped):
        return
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = [what for what, ok in (("Debian's chromium", chromium),
                                     ("playwright", importlib.util.find_spec("playwright"))) if not ok]
    terminalreporter.write_line(
        f"browser test skipped ({' and '.join(missing) or 'see the skip reasons'} missing): "
        "`apt-get install chromium` and `make setup-dev` (or run .ci/run, which installs chromium) to enable it")
