"""``make gpu-check`` before a GPU day: the offline install's plan and wheel list, the report writer with
every step stubbed, and the one-line refusal without a GPU (kimi_mini/gpu_check.py)."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import torch
from packaging.markers import default_environment
from packaging.requirements import Requirement

from kimi_mini import gpu_check

ROOT = Path(__file__).resolve().parents[1]
# the GPU machine: CPython 3.12 on Linux x86_64, no extras
GPU_ENV = dict(default_environment(), python_version="3.12", python_full_version="3.12.3", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", implementation_name="cpython", extra="")


def test_gpu_requirements_cover_the_runtime_closure_without_torch_or_triton():
    """Every package kimi-mini needs at run time (pyproject.toml's dependencies and theirs, walked through the
    metadata installed here, markers evaluated for CPython 3.12) is on the GPU image or in requirements-gpu.txt;
    torch and triton are never in the list, and a package both lists pin is pinned alike."""
    reqs = gpu_check.gpu_requirements()
    image = {gpu_check.canonical(n) for n in gpu_check.GPU_IMAGE_PACKAGES}
    assert {"torch", "triton"} <= image and not {"torch", "triton"} & reqs.keys()
    assert not image & (reqs.keys() - {"setuptools"}), image & reqs.keys()  # nothing the image has is replaced
    todo = [Requirement(s) for s in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    missing, seen = [], set()
    while todo:
        req = todo.pop()
        name = gpu_check.canonical(req.name)
        if name in seen or (req.marker and not req.marker.evaluate(GPU_ENV)):
            continue
        seen.add(name)
        if name in image:
            continue  # the image's own packages bring their own dependencies
        if name not in reqs:
            missing.append(name)
            continue
        try:
            todo += [Requirement(r) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            pytest.fail(f"{name} is not installed here, so its dependencies cannot be checked")
    assert not missing, f"needed on the GPU machine, neither on its image nor in requirements-gpu.txt: {missing}"
    pins = {gpu_check.canonical(line.split("==")[0]): line.split("==")[1].strip()
            for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and line[0] != "#"}
    assert {n: v for n, v in reqs.items() if pins.get(n, v) != v} == {}


def test_install_commands_are_offline_and_never_name_torch():
    cmds = gpu_check.install_commands("python3", Path("wheels"))
    for _, cmd in cmds[:3]:
        assert {"--no-index", "--no-deps"} <= set(cmd) and cmd[cmd.index("--find-links") + 1] == "wheels", cmd
        assert not any(a.split("=")[0] in ("torch", "triton") for a in cmd), cmd
    assert "setuptools>=77" in cmds[1][1] and "-e" in cmds[2][1] and "ipykernel" in cmds[3][1]
    assert len(cmds[0][1]) - cmds[0][1].index("--no-deps") - 1 == len(gpu_check.gpu_requirements()) - 1


def _fake_wheels(folder: Path, reqs: dict[str, str]) -> Path:
    folder.mkdir()
    for n, v in reqs.items():
        (folder / f"{n.replace('-', '_')}-{v}-py3-none-any.whl").write_bytes(b"x" * 10)
    return folder


def test_wheel_problems_name_what_is_missing_extra_foreign_or_too_big(tmp_path, monkeypatch):
    reqs = {"papermill": "2.7.0", "pyzmq": "27.3.0", "multiprocess": "0.70.19"}
    w = _fake_wheels(tmp_path / "w", reqs)
    assert gpu_check.wheel_problems(w, reqs) == []
    (w / "pyzmq-27.3.0-py3-none-any.whl").rename(w / "pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl")
    (w / "multiprocess-0.70.19-py3-none-any.whl").rename(w / "multiprocess-0.70.19-py312-none-any.whl")
    assert gpu_check.wheel_problems(w, reqs) == []
    (w / "papermill-2.6.0-py3-none-any.whl").write_bytes(b"")  # a second version stops pip's install
    zmq = w / "pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl"
    zmq.rename(w / "pyzmq-27.3.0-cp312-abi3-macosx_11_0_arm64.whl")
    (w / "multiprocess-0.70.19-py312-none-any.whl").unlink()
    problems = gpu_check.wheel_problems(w, reqs)
    assert any("papermill-2.6.0" in p and "not in requirements-gpu.txt" in p for p in problems), problems
    assert any("macosx" in p and "CPython 3.12" in p for p in problems), problems
    assert any(p.startswith("multiprocess==0.70.19: no wheel") for p in problems), problems
    monkeypatch.setattr(gpu_check, "WHEELS_LIMIT", 5)
    assert any("over the" in p for p in gpu_check.wheel_problems(w, reqs))
    assert "make gpu-wheels" in gpu_check.wheel_problems(tmp_path / "absent", reqs)[0]


def test_the_wheel_folder_make_gpu_wheels_built():
    """When `make gpu-wheels` has run here: one cp312-installable wheel per pin, nothing else, ≤ 60 MiB."""
    if not (ROOT / "wheels").is_dir():
        pytest.skip("no wheels/ here (make gpu-wheels builds it)")
    assert gpu_check.wheel_problems(ROOT / "wheels") == []


def test_dry_run_prints_the_plan_on_a_cpu(tmp_path):
    w = _fake_wheels(tmp_path / "w", gpu_check.gpu_requirements())
    proc = subprocess.run([sys.executable, "kimi_mini/gpu_check.py", "--dry-run", "--wheels", str(w)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    steps = [line.split(" | ")[1] for line in lines if line.startswith("step |")]
    assert steps[0] == "kernel tests" and all(t in proc.stdout for t in gpu_check.KERNEL_TESTS)
    assert "tests/test_moe_kernel.py" in gpu_check.KERNEL_TESTS and "tests/test_kernels_compile.py" not in proc.stdout
    assert [s for s in steps if s.startswith("bench")] == [f"bench {t}" for t in gpu_check.BENCH_TOPICS]
    assert {"moba", "moe", "muon", "logprob"} <= set(gpu_check.BENCH_TOPICS)
    assert "notebook 00_tour" in steps and steps[-1].startswith("notebook 11")
    assert sum(line.startswith("install |") for line in lines) == 4 and "budget | 480 s" in lines


def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: `make gpu-check` runs for real")
    proc = subprocess.run([sys.executable, "kimi_mini/gpu_check.py", "--out", str(tmp_path), "--wheels", "wheels"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "needs a CUDA GPU" in proc.stderr, proc.stderr
    assert not (tmp_path / "GPU_REPORT.md").exists()  # no report of numbers that were not measured


def _stub(monkeypatch, fake_run):
    clock = [0.0]

    def run(cmd, limit, env=None):
        verdict, secs, out = fake_run(cmd, limit)
        clock[0] += secs
        return verdict, secs, out

    monkeypatch.setattr(gpu_check, "_run", run)
    monkeypatch.setattr(gpu_check, "_machine", lambda: "stub GPU")
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_gpu_check_report_with_the_steps_stubbed(tmp_path, monkeypatch):
    """The report writer, exercised before a GPU day: every step stubbed, one notebook over its limit."""
    def fake_run(cmd, limit):
        if "02" in cmd:
            return f"FAIL (over the {limit:.0f} s limit)", limit, "cell 7 ..."
        if "bench" in cmd:
            return "pass", 1.0, '{"rows": [{"T": 8192, "speed-up": 3.5}], "summary": {}}'
        return "pass", 2.0, "5 passed"

    _stub(monkeypatch, fake_run)
    assert gpu_check.main(["--out", str(tmp_path), "--only", "00,02"]) == 1
    text = (tmp_path / "GPU_REPORT.md").read_text()
    assert "**FAIL**" in text and "Machine: stub GPU" in text
    assert "| 02_muon | FAIL (over the 45 s limit) |" in text and "| 00_tour | pass |" in text
    assert "### bench moba" in text and "### bench logprob" in text and "8192" in text
    assert "## Kernel tests on the GPU" in text and "| torch | " in text  # the environment table


def test_gpu_check_stops_at_its_budget_and_lists_what_did_not_run(tmp_path, monkeypatch):
    _stub(monkeypatch, lambda cmd, limit: ("pass", 40.0, '{"rows": [], "summary": {}}'))
    assert gpu_check.main(["--out", str(tmp_path), "--only", "00,01,02", "--budget", "300"]) == 0
    text = (tmp_path / "GPU_REPORT.md").read_text()
    # 40 s each: kernel tests + 5 bench topics = 240 s, notebook 00 at 280 s, then 20 s left < 45 s
    assert "| 00_tour | pass | 40 |" in text and "| 01_moe | not run (budget) |" in text, text
    assert "| 02_muon | not run (budget) |" in text and "2 not run" in text and "**PASS**" in text
