"""The ``kimi-mini`` command.

    kimi-mini reproduce [--preset toy|gpu] [--only 00,02] [--seeds 3,4,5] [--compare runs/toy]
                                                            run notebooks, write runs/<preset>[-seeds-…]/REPORT.md
    kimi-mini report compare RUN_A RUN_B                    two runs' verdicts side by side (exit 1 on a flip)
    kimi-mini grade PATH [--json|--csv]                     grade learners' notebooks (exit 1 when any fails)
    kimi-mini bench <topic>|all [--json] [--quick]          side-by-side benchmarks
    kimi-mini list                                          notebooks, bench topics, presets

Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

# Modules that add a subcommand: each has add_parser(subparsers) and run(args) -> int.
SUBCOMMAND_MODULES: list[str] = ["kimi_mini.train_cli"]


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (``prog: message; see prog --help``) and exit 2,
    like every other usage error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _select_notebooks(directory: Path, only: str | None) -> list[Path]:
    from kimi_mini.notebooks import list_notebooks

    available = list_notebooks(directory)
    if not available:
        raise UsageError(f"no notebooks (NN_topic.ipynb) in {directory}")
    if only is None:
        return available
    keys = [k.strip() for k in only.split(",") if k.strip()]
    if not keys:
        raise UsageError(f"--only: expected comma-separated notebook numbers or names, got {only!r}")
    chosen = []
    for key in keys:
        match = [p for p in available if p.stem == key or p.stem.split("_")[0] == key]
        if not match:
            names = ", ".join(p.stem for p in available)
            raise UsageError(f"--only: unknown notebook {key!r}; expected a number or name among: {names}")
        chosen += [p for p in match if p not in chosen]
    return chosen


def _parse_seeds(text: str | None) -> tuple[int, ...] | None:
    from kimi_mini.notebooks import check_seeds

    if text is None:
        return None
    try:
        return check_seeds([int(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise UsageError(f"--seeds: expected distinct non-negative integers separated by commas, e.g. 3,4,5; "
                         f"got {text!r}") from None


def run_folder(out: str | Path, preset: str, seeds: tuple[int, ...] | None) -> Path:
    """``<out>/<preset>`` for the notebooks' own seeds, ``<out>/<preset>-seeds-3-4-5`` for another set."""
    name = preset if seeds is None else f"{preset}-seeds-{'-'.join(map(str, seeds))}"
    return (Path(out) / name).resolve()


def cmd_reproduce(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from kimi_mini.notebooks import error_summary, execute_notebook, notebook_dir
    from kimi_mini.presets import get_preset
    from kimi_mini.report import write_report

    try:
        preset = get_preset(args.preset)
        preset.check_device()  # up front: not one failed notebook after another
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--preset: {str(exc).split(': ', 1)[-1]}") from None
    if args.timeout < 1:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    directory = Path(args.notebooks) if args.notebooks else notebook_dir()
    if not directory.is_dir():
        raise UsageError(f"--notebooks: {directory} is not a folder")
    notebooks = _select_notebooks(directory, args.only)
    seeds = _parse_seeds(args.seeds)
    run_dir = run_folder(args.out, preset.name, seeds)
    compare = Path(args.compare).resolve() if args.compare else None
    if compare is not None and not (compare / "claims").is_dir():
        raise UsageError(f"--compare: {compare} is not a run folder (no claims/ in it); run reproduce there first")
    for parent in [Path(args.out), *Path(args.out).parents, run_dir]:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out: {parent} is a file; expected a folder (or a path that does not exist yet)")
    try:
        (run_dir / "claims").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create {run_dir} ({exc.strerror or exc})") from None
    results = []
    bar = tqdm(notebooks, desc=f"reproduce ({preset.name})", unit="notebook", dynamic_ncols=True)
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        (run_dir / "claims" / f"{nb.stem}.json").unlink(missing_ok=True)  # claims are this run's only
        t0 = time.perf_counter()
        error = None
        try:
            execute_notebook(nb, run_dir / nb.name, preset.name, run_dir, timeout=args.timeout, seeds=seeds)
        except Exception as exc:  # one failing notebook must not stop the others
            error = error_summary(exc)
            tqdm.write(f"FAILED {nb.stem}: {error} (executed copy: {run_dir / nb.name})")
        seconds = time.perf_counter() - t0
        results.append({"notebook": nb.stem, "seconds": seconds, "ok": error is None, "error": error})
        tqdm.write(f"{nb.stem}: {'ok' if error is None else 'FAILED'} in {seconds:.0f} s")
    report = write_report(run_dir, preset.name, results, compare_with=compare)
    summary = report.read_text().strip().splitlines()[-1]
    print(f"wrote {report}\n{summary}")
    if compare is not None:
        _print_comparison(compare, run_dir)
    return 0 if all(r["ok"] for r in results) else 1


def _print_comparison(run_a: Path, run_b: Path, out: Path | None = None) -> int:
    from kimi_mini.report import compare_runs, format_comparison

    try:
        rows = compare_runs(run_a, run_b)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    text = format_comparison(rows, run_a.name, run_b.name)
    print(text)
    if out is not None:
        out.write_text(f"# Claims of `{run_a}` vs `{run_b}`\n\n{text}\n")
        print(f"wrote {out}")
    return 1 if any(r["change"] == "FLIP" for r in rows) else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report compare RUN_A RUN_B``: per claim, both runs' verdicts and figures; exit 1 on a yes ↔ no flip."""
    return _print_comparison(Path(args.run_a), Path(args.run_b), Path(args.write) if args.write else None)


def cmd_grade(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from kimi_mini.grade import format_grades, grade_path
    from kimi_mini.presets import get_preset

    try:
        get_preset(args.preset).check_device()
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--preset: {str(exc).split(': ', 1)[-1]}") from None
    if args.timeout < 1:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    fmt = "json" if args.json else "csv" if args.csv else "text"
    try:
        grades = grade_path(args.path, preset=args.preset, timeout=args.timeout,
                            progress=lambda nb: tqdm.write(f"grading {nb} …", file=sys.stderr))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(format_grades(grades, fmt))
    return 1 if any(g.status == "FAIL" for g in grades) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kimi_mini.bench import discover, format_table, machine_info

    topics = discover()
    names = sorted(topics) if args.topic == "all" else [args.topic]
    for name in names:
        if name not in topics:
            raise UsageError(f"topic: unknown benchmark {name!r}; expected 'all' or one of {sorted(topics)}")
    out = {}
    if not args.json:  # the machine beside the tables: ratios are only comparable on a named machine
        m = machine_info()
        print(f"machine: {m['cuda'] or m['cpu']} · {m['cpu_count']} cores · torch {m['torch']} · "
              f"{m['torch_threads']} torch threads (OMP_NUM_THREADS={m['omp_num_threads']}) · "
              f"triton {m['triton']} · python {m['python']} · load average "
              f"{'?' if m['load_1min'] is None else round(m['load_1min'], 1)}")
    for name in names:
        result = topics[name].fn(quick=args.quick)
        out[name] = result
        if not args.json:
            print(f"\n== bench {name}: {topics[name].help} ==")
            print(format_table(result.rows))
            for note in result.notes:
                print(f"note: {note}")
            print("summary: " + json.dumps(result.summary, default=float))
    if args.json:
        machine = machine_info()
        if len(names) == 1:
            r = out[names[0]]
            payload = {"rows": r.rows, "summary": r.summary, "machine": machine}
        else:
            payload = {n: {"rows": r.rows, "summary": r.summary} for n, r in out.items()}
            payload["machine"] = machine
        print(json.dumps(payload, default=float))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from kimi_mini.bench import discover
    from kimi_mini.notebooks import list_notebooks
    from kimi_mini.presets import PRESETS

    print("notebooks:", ", ".join(p.stem for p in list_notebooks()))
    print("bench topics:", ", ".join(sorted(discover())))
    print("presets:", ", ".join(f"{p.name} ({p.description})" for p in PRESETS.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kimi-mini", description="kimi-mini: run the course, benchmark kernels.")
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("kimi-mini")
    except PackageNotFoundError:  # a checkout that was never installed
        ours = "(not installed)"
    parser.add_argument("--version", action="version",
                        version=f"kimi-mini {ours} (Python {platform.python_version()}, torch {version('torch')})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run the notebooks with papermill and write the reproduction report")
    p.add_argument("--preset", default="toy", help="toy (CPU) or gpu (one H100/H200); default toy")
    p.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 00,02")
    p.add_argument("--out", default="runs", help="output root; the run goes to <out>/<preset>/ (default runs)")
    p.add_argument("--notebooks", help="notebook folder (default: the course's notebooks/)")
    p.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds (default 1800)")
    p.add_argument("--seeds", help="another seed set for every notebook that takes SEEDS, e.g. 3,4,5; the run goes "
                                   "to <out>/<preset>-seeds-3-4-5/")
    p.add_argument("--compare", help="a previous run folder (e.g. runs/toy): REPORT.md gains a 'stable?' column "
                                     "and the comparison is printed")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="work with finished runs: `report compare RUN_A RUN_B`")
    rsub = p.add_subparsers(dest="report_command", required=True)
    c = rsub.add_parser("compare", help="per claim, both runs' verdicts and figures; exit 1 on a yes <-> no flip")
    c.add_argument("run_a", help="a run folder, e.g. runs/toy")
    c.add_argument("run_b", help="another run folder, e.g. runs/toy-seeds-3-4-5")
    c.add_argument("--write", help="also write the comparison as markdown to this file")
    c.set_defaults(func=cmd_report)

    p = sub.add_parser("grade", help="run learners' notebooks and print PASS / FAIL / NOT ATTEMPTED per exercise")
    p.add_argument("path", help="a submitted .ipynb, or a folder of them (searched recursively)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list of grades")
    fmt.add_argument("--csv", action="store_true", help="CSV: notebook, exercise, status, message")
    p.add_argument("--preset", default="toy", help="preset the notebooks run at (default toy)")
    p.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds (default 1800)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("bench", help="side-by-side benchmarks (tables; --json for one JSON object)")
    p.add_argument("topic", help="a topic name, or 'all'")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs, numbers mean little")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("list", help="list notebooks, benchmark topics and presets")
    p.set_defaults(func=cmd_list)

    for module in SUBCOMMAND_MODULES:
        mod = importlib.import_module(module)
        mod.add_parser(sub).set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"kimi-mini {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
