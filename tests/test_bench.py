"""Benchmarks run (quick sizes) and print the promised JSON shape. They never assert speed."""

import json

import pytest

from kimi_mini.bench import discover, format_table, peak_memory, time_it
from kimi_mini.cli import main

TOPICS = sorted(discover())


@pytest.mark.parametrize("topic", TOPICS)
def test_bench_topic_json_shape(topic, capsys):
    assert main(["bench", topic, "--json", "--quick"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"rows", "summary", "machine"}
    assert payload["rows"] and isinstance(payload["summary"], dict) and payload["machine"]["torch"]


def test_unknown_topic_exits_2(capsys):
    assert main(["bench", "nope"]) == 2
    assert "model" in capsys.readouterr().err


def test_helpers_measure_something():
    import torch

    assert time_it(lambda: sum(range(1000)), warmup=0, repeat=3) > 0
    mem = peak_memory(lambda: torch.ones(20_000_000).sum())  # 80 MB
    assert mem is None or mem > 40 * 2**20
    assert "a" in format_table([{"a": 1.0, "b": None}])


def test_peak_allocated_counts_live_tensors_not_their_sum():
    import torch

    from kimi_mini.bench import peak_allocated

    def two_in_turn():  # 40 MB, freed, then 20 MB: the peak is 40 MB, not 60
        a = torch.ones(10_000_000)
        del a
        b = torch.ones(5_000_000)
        return float(b[0])

    def two_at_once():
        a, b = torch.ones(10_000_000), torch.ones(5_000_000)
        return float(a[0] + b[0])

    turn, once = peak_allocated(two_in_turn), peak_allocated(two_at_once)
    assert turn is not None and once is not None
    assert abs(turn - 40e6) < 1e6 and abs(once - 60e6) < 1e6


def test_bench_tables_name_the_machine(capsys):
    assert main(["bench", "qk_clip", "--quick"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("machine: ") and "torch threads" in first and "cores" in first
