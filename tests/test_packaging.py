"""Packaging: a wheel that works outside the checkout, and dependency lists that say one thing.

- A wheel built from the sources (setup.py copies the notebooks into it) installs into an empty venv in a
  temporary folder and runs notebook 00 there with ``kimi-mini reproduce --only 00_tour``: the notebooks are
  found inside the package, the cache lands in the user cache folder (platformdirs, under ``XDG_CACHE_HOME``
  here) and the run under ``./runs``. Its metadata admits Python 3.11–3.13, and a python3.12 on PATH accepts it.
  The venv gets its heavy packages (torch, …) from this interpreter's site-packages through a ``.pth`` line,
  so nothing is downloaded and torch is not installed twice.
- pyproject.toml's ranges and requirements*.txt's pins agree, the test tools are only in requirements-dev.txt,
  and every package the library and the notebooks import is declared.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in", "kimi_mini", "kernels", "notebooks"]
TEST_TOOLS = {"pytest", "pytest-xdist", "hypothesis", "playwright", "ruff"}


def _pins(path: Path) -> dict[str, Requirement]:
    """name → requirement of a requirements file, following ``-r`` includes."""
    pins: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            pins.update(_pins(path.parent / line[2:].strip()))
        elif line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def _declared(reqs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs) if canonicalize_name(r.name) != "kimi-mini"}


RUNTIME = _declared(PYPROJECT["dependencies"])
EXTRAS = {name: _declared(reqs) for name, reqs in PYPROJECT["optional-dependencies"].items()}
PINS, DEV_PINS = _pins(ROOT / "requirements.txt"), _pins(ROOT / "requirements-dev.txt")


def _pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req}: requirements files pin exact versions"
    return spec.version


@pytest.mark.parametrize("path", ["requirements.txt", "requirements-dev.txt"])
def test_every_pin_is_exact(path):
    for req in _pins(ROOT / path).values():
        _pinned_version(req)


def test_runtime_ranges_and_pins_agree():
    missing = sorted(set(RUNTIME) - set(PINS))
    assert not missing, f"declared in pyproject.toml but not pinned in requirements.txt: {missing}"
    bad = [f"{n}=={_pinned_version(PINS[n])} outside {RUNTIME[n].specifier}" for n in RUNTIME
           if not RUNTIME[n].specifier.contains(_pinned_version(PINS[n]))]
    assert not bad, "; ".join(bad)


def test_extras_are_pinned_in_the_dev_file_and_test_tools_only_there():
    for extra, reqs in EXTRAS.items():
        for name, req in reqs.items():
            assert name in DEV_PINS, f"[{extra}] {name} is not pinned in requirements-dev.txt"
            assert req.specifier.contains(_pinned_version(DEV_PINS[name])), f"[{extra}] {req} vs {DEV_PINS[name]}"
    assert TEST_TOOLS <= set(EXTRAS["test"]) | set(EXTRAS["dev"])
    leaked = sorted(TEST_TOOLS & (set(PINS) | set(RUNTIME)))
    assert not leaked, f"test tools in the runtime (requirements.txt / dependencies): {leaked}"


def test_torch_and_triton_are_bounded_above():
    """An open range would let a resolver fetch a newer, multi-GB CUDA build; the floor admits a GPU machine's
    torch 2.11 / triton 3.6, which then stays."""
    for name, oldest in (("torch", "2.11.0"), ("triton", "3.6.0")):
        spec = RUNTIME[name].specifier
        assert any(s.operator in ("<", "<=", "==") for s in spec), f"{name}: {spec} has no upper bound"
        assert spec.contains(oldest) and spec.contains(_pinned_version(PINS[name]))


def _third_party_imports() -> set[str]:
    found = set()
    files = [*(ROOT / "kimi_mini").rglob("*.py"), *(ROOT / "kernels").rglob("*.py"), *(ROOT / "notebooks").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names}
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("kimi_mini", "kernels", "__future__")}


def test_every_imported_package_is_declared():
    dists = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "pandas", "scipy", "sklearn"} <= imports  # the scan sees the library
    undeclared = sorted(m for m in imports if not {canonicalize_name(d) for d in dists.get(m, [m])} & set(RUNTIME))
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


# --- the wheel -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (so no build/ or egg-info lands in the checkout), without build
    isolation: this interpreter's setuptools builds it, nothing is downloaded."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in SOURCES:
        p = ROOT / name
        (shutil.copytree(p, src / name, ignore=ignore) if p.is_dir() else shutil.copy2(p, src / name))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = dist.glob("kimi_mini-*.whl")
    return whl


def _metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


@pytest.mark.slow
def test_wheel_carries_the_notebooks_the_licence_and_admits_python_3_12(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("kimi_mini/course_notebooks/"))
    assert shipped == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert any(n.startswith("kimi_mini/kernels/") for n in names) and any(n.endswith("/LICENSE") for n in names)
    meta = _metadata(wheel)
    requires = SpecifierSet(meta["Requires-Python"])
    assert all(requires.contains(v) for v in ("3.11.7", "3.12.0", "3.12.1", "3.13.0")), requires
    assert not requires.contains("3.10.14")
    assert meta["License-Expression"] == "MIT"
    assert not TEST_TOOLS & {canonicalize_name(Requirement(r).name) for r in meta.get_all("Requires-Dist")
                             if "extra ==" not in r}


def _python(version: str) -> str | None:
    """A runnable ``python<version>`` with pip: on PATH, or a pyenv install that PATH's shim does not select."""
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    candidates = [shutil.which(f"python{version}"), *pyenv]
    for exe in filter(None, candidates):
        if subprocess.run([exe, "-m", "pip", "--version"], capture_output=True, timeout=60).returncode == 0:
            return str(exe)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_newer_pythons_accept_the_wheel(wheel, tmp_path, version):
    """pip on a real Python 3.12 / 3.13 checks the wheel's Requires-Python against its own version (a dry run:
    nothing is installed)."""
    exe = _python(version)
    if exe is None:
        pytest.skip(f"no python{version} with pip here")
    proc = subprocess.run([exe, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "--target", str(tmp_path / "t"), str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert "Would install kimi-mini-0.1.0" in proc.stdout or "Would install kimi_mini-0.1.0" in proc.stdout


@pytest.mark.slow
@pytest.mark.notebook
def test_wheel_runs_a_notebook_outside_the_checkout(wheel, tmp_path):
    venv, work, xdg = tmp_path / "venv", tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # This interpreter's packages (torch, papermill, ...) behind the venv's own: a plain path line, so the
    # editable install's finder (.pth import lines there) is not run and `kimi_mini` is the wheel's.
    here = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    (site / "zz_course_packages.pth").write_text("\n".join(dict.fromkeys(here)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_MINI_", "PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env.update(XDG_CACHE_HOME=str(xdg), JUPYTER_DATA_DIR=str(tmp_path / "jupyter"), OMP_NUM_THREADS="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                              "--disable-pip-version-check", str(wheel)],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.run([py, "-c", "import kimi_mini, kimi_mini.notebooks as n, kimi_mini.data as d; "
                            "print(kimi_mini.__file__); print(n.notebook_dir()); print(d.cache_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    module, notebooks, cache = map(Path, where.stdout.split())
    assert module.is_relative_to(site) and notebooks == module.parent / "course_notebooks"
    assert cache == xdg / "kimi-mini"
    script = venv / "bin" / "kimi-mini"
    proc = subprocess.run([str(script), "reproduce", "--only", "00_tour"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((work / "runs").rglob("REPORT.md")) and list((work / "runs").rglob("00_tour.ipynb"))
    # the kernel ran the wheel's kimi_mini (an editable one would have cached in the checkout's data/cache)
    assert any(cache.glob("stdlib-py*")), f"no corpus in the user cache {cache}"
    assert not (ROOT / "notebooks" / "runs").exists()


def test_version_flag_prints_the_installed_version(capsys):
    from kimi_mini.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kimi-mini {importlib.metadata.version('kimi-mini')} (Python ") and "torch" in out


# --- Colab / a fresh Jupyter: the setup cell -------------------------------------------------------------------

def _bare_python(cwd: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` run by the interpreter under this venv, isolated (-I): kimi_mini is not importable there."""
    base = getattr(sys, "_base_executable", sys.executable)
    return subprocess.run([base, "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def _setup_cell() -> str:
    import nbformat

    code = [c for c in nbformat.read(ROOT / "notebooks" / "00_tour.ipynb", as_version=4).cells if c.cell_type == "code"]
    return code[1].source


def test_setup_cell_says_how_to_get_a_checkout_when_there_is_none(tmp_path):
    proc = _bare_python(tmp_path, _setup_cell())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kimi_mini is not installed and no checkout is in sight" in proc.stdout and "git clone" in proc.stdout


def test_setup_cell_finds_a_clone_below_the_working_folder(tmp_path):
    """Colab: the kernel runs in /content and the clone is /content/<name>/."""
    fake = tmp_path / "kimi-mini" / "notebooks" / "setup_kimi_mini.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def main():\n    print('setup ran from', __file__)\n")
    proc = _bare_python(tmp_path, _setup_cell())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"setup ran from {fake}" in proc.stdout


def test_setup_helper_installs_this_checkout_editable(tmp_path):
    helper = ROOT / "notebooks" / "setup_kimi_mini.py"
    proc = _bare_python(tmp_path, f"import runpy; runpy.run_path({str(helper)!r})['main'](dry_run=True)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"-m pip install -q -e {ROOT}" in proc.stdout


@pytest.mark.parametrize("gpu, ok", [(("Tesla T4", 7, 5, 15), False), (("NVIDIA A10G", 8, 6, 22), False),
                                     (("NVIDIA H100 80GB HBM3", 9, 0, 79), True)], ids=["t4", "a10g", "h100"])
def test_gpu_preset_refuses_a_gpu_it_was_not_sized_for(monkeypatch, gpu, ok):
    import types

    import torch

    from kimi_mini.presets import get_preset

    name, major, minor, gib = gpu
    props = types.SimpleNamespace(name=name, major=major, minor=minor, total_memory=gib * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    if ok:
        get_preset("gpu").check_device()
    else:
        with pytest.raises(RuntimeError, match=rf"{name} \(sm_{major}{minor}, {gib} GiB\); use PRESET = 'toy'"):
            get_preset("gpu").check_device()
    get_preset("toy").check_device()  # the CPU preset never looks at the GPU
