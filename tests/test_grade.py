"""`kimi-mini grade`: a learner's notebook is run and every exercise it checks gets PASS / FAIL / NOT ATTEMPTED
from the course's own checkers (which tests/test_exercises.py proves reject a registered wrong answer)."""

import json

import nbformat
import pytest

from kimi_mini.cli import main
from kimi_mini.grade import exercises_in, format_grades, grade_path

pytestmark = pytest.mark.notebook

SUBMISSION = [
    "from kimi_mini.exercises import check, load_all\nE = load_all()",
    # right: the learner's own entropy of the byte distribution
    "import math\nfrom collections import Counter\n"
    "def my_entropy(tokens):\n"
    "    counts = Counter(int(t) for t in tokens)\n"
    "    n = sum(counts.values())\n"
    "    return -sum(c / n * math.log(c / n) for c in counts.values())\n"
    "_ = check('unigram_entropy', my_entropy)",
    # wrong: the registered wrong answer
    "_ = check('rmsnorm_backward_dx', E['rmsnorm_backward_dx'].wrong)",
    # not attempted: the stub as handed out
    "def my_init_loss_prediction():\n    raise NotImplementedError\n"
    "_ = check('init_loss_prediction', my_init_loss_prediction)",
]


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PRESET = "toy"\nRUN_DIR = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_grade_one_notebook_right_wrong_and_unattempted(tmp_path, capsys):
    path = _write(tmp_path / "alice.ipynb", SUBMISSION)
    assert exercises_in(path) == ["unigram_entropy", "rmsnorm_backward_dx", "init_loss_prediction"]
    grades = {g.exercise: g for g in grade_path(path)}
    assert {k: g.status for k, g in grades.items()} == {
        "unigram_entropy": "PASS", "rmsnorm_backward_dx": "FAIL", "init_loss_prediction": "NOT ATTEMPTED"}
    assert grades["rmsnorm_backward_dx"].message  # the checker's hint travels with the verdict
    assert main(["grade", str(path), "--json"]) == 1  # a FAIL → exit status 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["PASS", "FAIL", "NOT ATTEMPTED"]


def test_grade_a_folder_and_a_notebook_that_stops(tmp_path, capsys):
    folder = tmp_path / "submissions"
    (folder / "bob").mkdir(parents=True)
    _write(folder / "bob" / "00_tour.ipynb", SUBMISSION[:2])
    # carol's notebook raises before her second check: graded FAIL, saying where it stopped
    _write(folder / "carol.ipynb", SUBMISSION[:2] + ["raise RuntimeError('oops')"] + SUBMISSION[2:3])
    grades = grade_path(folder)
    assert [(g.notebook, g.exercise, g.status) for g in grades] == [
        ("bob/00_tour.ipynb", "unigram_entropy", "PASS"),
        ("carol.ipynb", "unigram_entropy", "PASS"),
        ("carol.ipynb", "rmsnorm_backward_dx", "FAIL"),
    ]
    assert "RuntimeError: oops" in grades[-1].message
    csv = format_grades(grades, "csv").splitlines()
    assert csv[0] == "notebook,exercise,status,message" and len(csv) == 4
    assert "3 exercises: 2 pass, 1 fail, 0 not attempted" in format_grades(grades)
    assert main(["grade", str(folder / "bob")]) == 0
    assert "1 exercises: 1 pass" in capsys.readouterr().out


def test_grade_refuses_what_is_not_a_notebook(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    (tmp_path / "x.txt").write_text("")
    assert main(["grade", str(tmp_path / "x.txt")]) == 2
    assert main(["grade", str(tmp_path)]) == 2  # a folder without notebooks
    err = capsys.readouterr().err
    assert "missing.ipynb" in err and "no .ipynb" in err
