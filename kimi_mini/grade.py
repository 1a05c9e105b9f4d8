"""Grading for instructors: run a learner's notebook and collect the exercise checkers' verdicts.

``kimi-mini grade PATH`` executes each submitted notebook (a file, or every ``*.ipynb`` in a folder and its
sub-folders) with papermill at the ``toy`` preset. The checkers are the course's own (``kimi_mini.exercises``:
each is tested to accept the library's solution and reject a registered wrong answer); while a notebook runs,
``check(...)`` appends every verdict to a file the grader names (``KIMI_MINI_GRADES``). An exercise that the
notebook calls ``check`` on but never reaches (an earlier cell raised) is graded FAIL with where it stopped.

Like nbgrader's autograder, but with no separate release/collect step: the checker calls are already in the
notebooks.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Grade", "exercises_in", "grade_notebook", "grade_path", "format_grades"]

_CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([A-Za-z0-9_.-]+)["']""")


@dataclass
class Grade:
    notebook: str
    exercise: str
    status: str  # "PASS", "FAIL" or "NOT ATTEMPTED"
    message: str


def exercises_in(path: Path) -> list[str]:
    """The exercise names a notebook checks (``check("name", ...)`` in its code cells), in order."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            names += [n for n in _CHECK_CALL.findall(cell.source) if n not in names]
    return names


def grade_notebook(path: Path, *, preset: str = "toy", timeout: int = 1800) -> list[Grade]:
    """Run ``path`` and return one :class:`Grade` per exercise it checks (the last check of a name counts)."""
    from kimi_mini.notebooks import error_summary, execute_notebook

    path = Path(path)
    expected = exercises_in(path)
    with tempfile.TemporaryDirectory(prefix="kimi-mini-grade-") as tmp:
        record = Path(tmp) / "grades.jsonl"
        record.touch()
        previous = os.environ.get("KIMI_MINI_GRADES")
        os.environ["KIMI_MINI_GRADES"] = str(record)
        stopped = None
        try:
            execute_notebook(path, Path(tmp) / path.name, preset, Path(tmp) / "run", timeout=timeout)
        except Exception as exc:  # the learner's notebook stopped: grade what ran, the rest as not reached
            stopped = error_summary(exc)
        finally:
            if previous is None:
                os.environ.pop("KIMI_MINI_GRADES", None)
            else:
                os.environ["KIMI_MINI_GRADES"] = previous
        seen: dict[str, dict] = {}
        for line in record.read_text().splitlines():
            row = json.loads(line)
            seen[row["exercise"]] = row
    grades = []
    for name in expected + [n for n in seen if n not in expected]:
        if name in seen:
            row = seen[name]
            grades.append(Grade(path.name, name, row["status"].upper(), row["detail"]))
        else:
            why = f"not reached: the notebook stopped at {stopped}" if stopped else "its check never ran"
            grades.append(Grade(path.name, name, "FAIL", why))
    if stopped and not expected:
        grades.append(Grade(path.name, "(notebook)", "FAIL", f"the notebook stopped at {stopped}"))
    return grades


def grade_path(path: str | Path, *, preset: str = "toy", timeout: int = 1800, progress=None) -> list[Grade]:
    """Grade one notebook, or every ``*.ipynb`` under a folder (checkpoints skipped), in name order."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".ipynb":
            raise ValueError(f"path: expected a .ipynb notebook or a folder of them, got {path}")
        notebooks = [path]
    elif path.is_dir():
        notebooks = sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if not notebooks:
            raise ValueError(f"path: no .ipynb notebooks under {path}")
    else:
        raise ValueError(f"path: {path} does not exist; expected a notebook or a folder of submissions")
    grades = []
    for nb in notebooks:
        if progress is not None:
            progress(nb)
        for g in grade_notebook(nb, preset=preset, timeout=timeout):
            g.notebook = str(nb.relative_to(path)) if path.is_dir() else nb.name
            grades.append(g)
    return grades


def format_grades(grades: list[Grade], fmt: str = "text") -> str:
    """``text`` (one line per exercise and a total), ``json`` or ``csv``."""
    if fmt == "json":
        return json.dumps([asdict(g) for g in grades], indent=1)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["notebook", "exercise", "status", "message"])
        for g in grades:
            w.writerow([g.notebook, g.exercise, g.status, g.message])
        return buf.getvalue().rstrip("\n")
    if fmt != "text":
        raise ValueError(f"fmt: expected 'text', 'json' or 'csv', got {fmt!r}")
    width = max((len(g.exercise) for g in grades), default=8)
    lines = []
    for nb in dict.fromkeys(g.notebook for g in grades):
        lines.append(nb)
        lines += [f"  {g.exercise:<{width}}  {g.status:<13}  {g.message}" for g in grades if g.notebook == nb]
    n = {s: sum(g.status == s for g in grades) for s in ("PASS", "FAIL", "NOT ATTEMPTED")}
    lines.append(f"{len(grades)} exercises: {n['PASS']} pass, {n['FAIL']} fail, {n['NOT ATTEMPTED']} not attempted")
    return "\n".join(lines)
