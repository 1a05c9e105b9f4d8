"""Kimi K2's agentic post-training in miniature (kimi_mini.agentic): tool world, synthesis, judge, RL objective."""

import importlib.util
import json
import math
import random
import sys
import types

import pytest
import torch

from kimi_mini.agentic.rl import (
    budget_penalty,
    collate,
    encode_episode,
    k15_policy_loss,
    rollout,
    sequence_logprob,
    sft_loss,
    temperature_schedule,
)
from kimi_mini.agentic.synthesis import (
    Episode,
    Teacher,
    judge,
    make_agents,
    make_tasks,
    optimal_agent_bytes,
    synthesize,
)
from kimi_mini.agentic.tools import (
    BFCL,
    FileSystem,
    ToolWorld,
    evolve_domain,
    evolve_tool,
    load_spec_dataset,
    load_specs,
    parse_call,
    real_tools,
)
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.sources import package_file
from kimi_mini.testing import assert_close


@pytest.fixture(scope="module")
def tools():
    return real_tools()


@pytest.fixture(scope="module")
def agents():
    return make_agents()


# ------------------------------------------------------------------------------------ tools
def test_real_specs_load():
    math_specs = {s["name"]: s for s in load_specs("math_api")}
    fs_specs = {s["name"]: s for s in load_specs("gorilla_file_system")}
    assert {"add", "subtract", "multiply", "square_root"} <= set(math_specs)
    assert {"ls", "cd", "mkdir", "touch", "echo", "cat"} <= set(fs_specs)
    assert math_specs["add"]["parameters"]["required"] == ["a", "b"]
    assert list(fs_specs["echo"]["parameters"]["properties"]) == ["content", "file_name"]
    dd = load_spec_dataset()
    assert list(dd) == ["math_api", "gorilla_file_system"]
    assert (dd["math_api"].num_rows, dd["gorilla_file_system"].num_rows) == (len(math_specs), len(fs_specs))
    echo = dd["gorilla_file_system"][list(fs_specs).index("echo")]  # a row is the raw spec line
    assert echo["description"] == fs_specs["echo"]["description"]
    assert json.loads(echo["parameters"]) == fs_specs["echo"]["parameters"]


@pytest.mark.parametrize("bad", ["no_such_api", "Math API", ""], ids=["unknown", "spaces", "empty"])
def test_load_specs_rejects_bad_api(bad):
    with pytest.raises(ValueError, match="api"):
        load_specs(bad)


def test_tools_execute_through_the_real_math_backend(tools):
    world = ToolWorld(tools)
    assert [world.call("add", ["3", "4"]), world.call("subtract", ["3", "9"]), world.call("multiply", ["6", "7"])] \
        == ["7", "-6", "42"]
    assert world.call("add", ["2.5", "1"]) == "3.5"
    assert world.call("add", ["x", "1"]) == "!bad args" and world.call("add", ["1"]) == "!bad args"
    assert world.call("nope", []) == "!unknown tool"
    assert [n for n, _, _ in world.log] == ["add", "subtract", "multiply", "add"]  # failed calls are not logged


def _bfcl_file_system():
    """BFCL's own GorillaFileSystem, loaded from the extracted source files; its one bfcl import (a data module
    that itself imports nothing) is registered for the load and removed afterwards."""
    root = "bfcl_eval/eval_checker/multi_turn_eval/func_source_code/"
    dep_name = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code.long_context"
    spec = importlib.util.spec_from_file_location(dep_name, package_file(*BFCL, root + "long_context.py"))
    dep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dep)
    parts = dep_name.split(".")
    added = {".".join(parts[:i]): types.ModuleType(".".join(parts[:i])) for i in range(1, len(parts))}
    added[dep_name] = dep
    added = {k: v for k, v in added.items() if k not in sys.modules}
    sys.modules.update(added)
    try:
        spec = importlib.util.spec_from_file_location("_bfcl_fs", package_file(*BFCL, root + "gorilla_file_system.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k in added:
            sys.modules.pop(k, None)
    return module.GorillaFileSystem


def test_file_system_matches_bfcl_backend():
    fs_cls = _bfcl_file_system()
    real = fs_cls()
    real._load_scenario({"root": {"workspace": {"type": "directory", "contents": {
        "a.txt": {"type": "file", "content": "hi"}, "docs": {"type": "directory", "contents": {}}}}}})
    ours = FileSystem({"a.txt": "hi", "docs": {}})
    script = [("ls", {}), ("cat", {"file_name": "a.txt"}), ("cat", {"file_name": "docs"}),
              ("cat", {"file_name": "zz"}), ("mkdir", {"dir_name": "src"}), ("mkdir", {"dir_name": "src"}),
              ("mkdir", {"dir_name": "a/b"}), ("touch", {"file_name": "b.txt"}), ("touch", {"file_name": "b.txt"}),
              ("echo", {"content": "milk", "file_name": "b.txt"}), ("echo", {"content": "x", "file_name": "no"}),
              ("echo", {"content": "out"}), ("cat", {"file_name": "b.txt"}), ("ls", {}), ("cd", {"folder": "src"}),
              ("ls", {}), ("touch", {"file_name": "c"}), ("cd", {"folder": ".."}), ("cd", {"folder": "nope"}),
              ("cd", {"folder": "a/b"}), ("ls", {})]
    for name, kwargs in script:
        assert getattr(ours, name)(**kwargs) == getattr(real, name)(**kwargs), f"{name}({kwargs})"


def test_simulator_is_deterministic_and_fails_at_rate_p(tools):
    def outcomes(seed):
        world = ToolWorld(tools, flaky={"multiply": 0.3}, seed=seed)
        return [world.call("multiply", ["2", "3"]) for _ in range(4000)]

    a, b, c = outcomes(1), outcomes(1), outcomes(2)
    assert a == b and a != c
    rate = a.count("!busy") / len(a)
    assert abs(rate - 0.3) < 3 * math.sqrt(0.3 * 0.7 / len(a)), rate
    assert set(a) == {"!busy", "6"}
    assert ToolWorld(tools, seed=0).call("multiply", ["2", "3"]) == "6"  # not flaky unless asked


def test_flaky_rejects_bad_probability(tools):
    with pytest.raises(ValueError, match="flaky"):
        ToolWorld(tools, flaky={"add": 1.5})


def test_evolved_tools_execute(tools):
    world = ToolWorld(tools)
    plus = evolve_tool(tools["subtract"], "rename", "minus")
    rev = evolve_tool(tools["subtract"], "reorder", "subtract_r")
    scaled = evolve_tool(tools["add"], "extra_param", "add_scaled")
    cents = evolve_tool(tools["add"], "unit", "add_cents", factor=100)
    world.tools.update({t.name: t for t in (plus, rev, scaled, cents)})
    assert world.call("minus", ["9", "4"]) == "5"
    assert [p for p, _ in rev.params] == ["b", "a"] and world.call("subtract_r", ["4", "9"]) == "5"
    assert world.call("add_scaled", ["1", "2", "10"]) == "30" and world.call("add_scaled", ["1", "2"]) == "!bad args"
    assert world.call("add_cents", ["1", "2"]) == "300"
    assert plus.evolved_from == "subtract" and plus.rule == "rename" and plus.spec["name"] == "minus"
    grown = evolve_domain(list(tools.values()), 12, random.Random(0))
    assert len({t.name for t in grown}) == 12 and all(t.evolved_from in tools for t in grown)


@pytest.mark.parametrize("rule,name,match", [("teleport", "x", "rule"), ("rename", "Bad Name", "name"),
                                             ("unit", "cat_v2", "rule")],
                         ids=["unknown-rule", "bad-name", "unit-on-fs"])
def test_evolve_rejects_bad_input(tools, rule, name, match):
    base = tools["cat"] if name == "cat_v2" else tools["add"]
    with pytest.raises(ValueError, match=match):
        evolve_tool(base, rule, name)


def test_parse_call():
    assert parse_call("add(3,4)") == ("add", ["3", "4"])
    assert parse_call("ls()") == ("ls", [])
    assert parse_call("add 3 4") is None and parse_call("=7") is None


# ------------------------------------------------------------------------------------ synthesis + judge
def test_noise_free_teacher_always_passes_the_judge(agents):
    rng = random.Random(0)
    tasks = [t for a in agents.values() for t in make_tasks(a, 40, rng)]
    played = synthesize(tasks, seed=0, p_error=0.0, p_long=0.0)
    assert all(ok for _, ok in played)
    noisy = synthesize(tasks, seed=0, p_error=1.0, p_long=0.0)
    assert sum(ok for _, ok in noisy) / len(noisy) < 0.5  # mistakes are caught (a give-up without failure is not one)


def test_judge_accepts_correct_and_rejects_broken_trajectory(agents):
    task = next(t for t in make_tasks(agents["calc"], 50, random.Random(3)) if t.level == 1 and t.persona == "terse")
    (tool, args), = task.plans[0]
    good = Episode(task, flaky={})
    assert good.step(f">{tool}({','.join(args)})\n").startswith("<")
    good.step(f"={task.rubric.answer}\n")
    assert judge(good) == (True, {"format": True, "calls": True, "state": True, "answer": True})
    wrong_args = Episode(task, flaky={})
    wrong_args.step(f">{tool}({args[0]},{int(args[1]) + 1})\n")
    wrong_args.step(f"={task.rubric.answer}\n")  # right answer, but not what the tool said: a guess
    assert judge(wrong_args)[1]["calls"] is False and judge(wrong_args)[0] is False
    malformed = Episode(task, flaky={})
    malformed.step("hello\n")
    assert malformed.done and judge(malformed)[1]["format"] is False


def test_changer_persona_and_flaky_retry(agents):
    tasks = make_tasks(agents["calc"], 200, random.Random(5))
    task = next(t for t in tasks if t.persona == "changer")
    ep = Episode(task, flaky={})
    teacher = Teacher(task, random.Random(0), p_error=0.0, p_long=0.0)
    while not ep.done:
        ep.step(teacher.act(ep))
    users = [t for role, t in ep.segments if role == "user"]
    assert len(users) == 2 and users[1].startswith("U:no, ") and judge(ep)[0]
    ep = Episode(task, flaky={"add": 1.0, "subtract": 1.0, "multiply": 1.0})  # every call fails
    teacher = Teacher(task, random.Random(0), p_error=0.0, p_long=0.0)
    while not ep.done:
        ep.step(teacher.act(ep))
    assert ep.text.count("<!busy") >= 7 and not judge(ep)[0]


def test_optimal_bytes_and_encoding(agents):
    task = make_tasks(agents["fs"], 1, random.Random(0))[0]
    ep = Episode(task, flaky={})
    teacher = Teacher(task, random.Random(0), p_error=0.0, p_long=0.0)
    while not ep.done:
        ep.step(teacher.act(ep))
    tokens, mask = encode_episode(ep)
    assert bytes(tokens).decode() == ep.text
    assert sum(mask) == optimal_agent_bytes(task)
    assert bytes(t for t, m in zip(tokens, mask, strict=True) if m).decode().splitlines()[0].startswith(">")


# ------------------------------------------------------------------------------------ RL pieces
def test_k15_loss_matches_formula():
    torch.manual_seed(0)
    lp_new, lp_old, r = torch.randn(3, 4), torch.randn(3, 4), torch.rand(3, 4)
    tau = 0.3
    per_task = []
    for x in range(3):
        rbar = r[x].mean()
        per_task.append(sum((r[x, i] - rbar - tau * (lp_new[x, i] - lp_old[x, i])) ** 2 for i in range(4)) / 4)
    assert_close(k15_policy_loss(lp_new, lp_old, r, tau), torch.stack(per_task).mean(), rtol=1e-6, what="loss")
    assert_close(k15_policy_loss(lp_new[0], lp_old[0], r[0], tau), per_task[0], rtol=1e-6, what="single task")


def test_k15_gradient_raises_logprob_of_above_mean_rewards():
    lp_old = torch.tensor([-5.0, -6.0, -4.0, -7.0])
    lp_new = lp_old.clone().requires_grad_(True)
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    k15_policy_loss(lp_new, lp_old, r, 0.5).backward()
    step = -lp_new.grad  # gradient descent direction
    assert (step[r > r.mean()] > 0).all() and (step[r < r.mean()] < 0).all()
    assert_close(lp_new.grad, -2 * 0.5 / 4 * (r - r.mean()), rtol=1e-6, what="grad at θ = θ_old")
    same = lp_old.clone().requires_grad_(True)
    k15_policy_loss(same, lp_old, torch.ones(4), 0.5).backward()
    assert torch.count_nonzero(same.grad) == 0  # equal rewards: nothing to learn


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(3, 1)), "K >= 2"), (dict(tau=0.0), "tau"), (dict(tau=-1.0), "tau"),
    (dict(old_shape=(3, 5)), "logp_old"), (dict(r_shape=(4, 4)), "rewards")],
    ids=["K1", "tau0", "tau-neg", "old-shape", "reward-shape"])
def test_k15_rejects_bad_input(kwargs, match):
    shape = kwargs.get("shape", (3, 4))
    with pytest.raises(ValueError, match=match):
        k15_policy_loss(torch.zeros(shape), torch.zeros(kwargs.get("old_shape", shape)),
                        torch.zeros(kwargs.get("r_shape", shape)), kwargs.get("tau", 0.1))


def test_budget_penalty():
    n = torch.tensor([5.0, 10.0, 15.0, 20.0, 40.0])
    p = budget_penalty(n, torch.full((5,), 10.0), weight=0.5)
    assert_close(p, torch.tensor([0.0, 0.0, -0.25, -0.5, -0.5]), rtol=1e-6, what="penalty")
    with pytest.raises(ValueError, match="budget"):
        budget_penalty(n, torch.zeros(5))
    with pytest.raises(ValueError, match="budget"):
        budget_penalty(n, torch.ones(3))


def test_temperature_schedule_decays():
    temps = [temperature_schedule(s, 10, 1.0, 0.5) for s in range(10)]
    assert temps[0] == 1.0 and abs(temps[-1] - 0.5) < 1e-12
    assert all(a > b for a, b in zip(temps, temps[1:], strict=False))
    for bad in [dict(step=10, steps=10), dict(step=0, steps=0), dict(step=0, steps=5, t_end=2.0)]:
        with pytest.raises(ValueError):
            temperature_schedule(**bad)


def test_sft_loss_counts_agent_tokens_only():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=32))
    tokens, mask = collate([([35, 65, 66, 10, 62, 67, 10], [0, 0, 0, 0, 1, 1, 1]), ([35, 10, 61, 55], [0, 0, 1, 1])])
    logits, _ = model(tokens[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), tokens[:, 1:].reshape(-1), reduction="none")
    want = ce[mask[:, 1:].reshape(-1) > 0].mean()
    assert_close(sft_loss(model, tokens, mask), want, rtol=1e-5, what="masked CE")
    assert_close(sequence_logprob(model, tokens, mask), -(ce.view(2, -1) * mask[:, 1:]).sum(-1), rtol=1e-5,
                 what="sequence log-prob")
    with pytest.raises(ValueError, match="mask"):
        sft_loss(model, tokens, mask[:, :-1])


def test_rollout_samples_like_generate(agents):
    """Without forced tokens the lock-step rollout draws exactly what KimiMini.generate draws (KV cache, same
    generator): compare the first agent line."""
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=128))
    task = make_tasks(agents["calc"], 1, random.Random(0))[0]
    ro = rollout(model, [task], seeds=[0], temperature=1.0, generator=torch.Generator().manual_seed(7))
    prompt = Episode(task).text.encode()
    agent_line = bytes(t for t, m in zip(ro.tokens[0].tolist(), ro.mask[0].tolist(), strict=True) if m)[:24]
    out = model.generate(torch.tensor([list(prompt)]), 24, temperature=1.0, generator=torch.Generator().manual_seed(7))
    gen = bytes(out[0, len(prompt):].tolist())
    first = agent_line.split(b"\n")[0]
    assert len(first) > 0 and gen.startswith(first)
    assert ro.passed.tolist() == [0.0]  # an untrained model does not solve the task


# ------------------------------------------------------------------------------------ pipeline
def test_pipeline_smoke_and_sft_cache(tmp_path, monkeypatch):
    import kimi_mini.agentic.pipeline as pipeline

    monkeypatch.setattr(pipeline, "cache_dir", lambda: tmp_path)
    setup = pipeline.AgenticSetup(d_model=16, n_heads=2, d_ff=32, n_layers=1, max_seq_len=224, tasks_per_agent=12,
                                  pretrain_steps=2, pretrain_batch=2, pretrain_seq=16, sft_steps=2, sft_batch=2,
                                  rl_steps=2, rl_tasks=2, rl_k=2, ptx_batch=2, ptx_seq=16, n_test=3)
    out = pipeline.run_experiment(setup, seeds=(0, 1), workers=1)
    res = out["results"]
    assert set(res) == {"base", "sft", "sft_unfiltered", "rl", "rl_no_ptx", "rl_no_budget"}
    assert len(res["base"]) == 1 and all(len(res[k]) == 2 for k in res if k != "base")
    assert all(0 <= r["seen"] <= 1 and 0 <= r["evolved"] <= 1 and r["stdlib"] > 0 for v in res.values() for r in v)
    assert [len(h) for h in out["histories"]["rl"]] == [2, 2]
    assert all(r["ptx"] == 0.0 for h in out["histories"]["rl_no_ptx"] for r in h)
    assert all(r["ptx"] > 0.0 for h in out["histories"]["rl"] for r in h)
    assert len(list(tmp_path.glob("agentic/sft-*.pt"))) == 4 and len(list(tmp_path.glob("agentic/pretrain-*.pt"))) == 1
    assert len(list(tmp_path.glob("agentic/rl-*.pt"))) == 6  # every RL run is cached: a rerun only evaluates
    again = pipeline.run_experiment(setup, seeds=(0, 1), workers=1)
    assert [r["seen"] for r in again["results"]["rl"]] == [r["seen"] for r in res["rl"]]
    corpus, tasks = pipeline._context(setup)
    a = pipeline.sft_model(setup, corpus, tasks["train"], seed=0)
    b = pipeline.sft_model(setup, corpus, tasks["train"], seed=0)  # from the cache: identical weights
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="workers"):
        pipeline.run_experiment(setup, workers=0)


def test_sft_optimizer_is_configurable(tmp_path, monkeypatch):
    """SFT builds its optimizer by name (Muon by default): another name trains other weights; a bad one is rejected."""
    import dataclasses

    import kimi_mini.agentic.pipeline as pipeline

    monkeypatch.setattr(pipeline, "cache_dir", lambda: tmp_path)
    setup = pipeline.AgenticSetup(d_model=16, n_heads=2, d_ff=32, n_layers=1, tasks_per_agent=12, sft_steps=3,
                                  sft_batch=2, n_test=3)
    assert setup.sft_optimizer == "muon"
    corpus, tasks = pipeline._context(setup)
    muon = pipeline.sft_model(setup, corpus, tasks["train"], seed=0)
    adamw = pipeline.sft_model(dataclasses.replace(setup, sft_optimizer="adamw"), corpus, tasks["train"], seed=0)
    assert not all(torch.equal(a, b) for a, b in zip(muon.state_dict().values(), adamw.state_dict().values(),
                                                     strict=True))
    with pytest.raises(ValueError, match="sft_optimizer"):  # refused by the setup, before any training
        pipeline.sft_model(dataclasses.replace(setup, sft_optimizer="sgd?"), corpus, tasks["train"], seed=0)


def test_validation_and_test_tasks_never_share_a_plan():
    import kimi_mini.agentic.pipeline as pipeline

    setup = pipeline.AgenticSetup(n_test=96, n_val=48, n_evolved=32)
    tasks = pipeline.build_tasks(setup)
    assert (len(tasks["val"]), len(tasks["test_seen"]), len(tasks["test_evolved"])) == (48, 96, 32)
    val, test, train = ({t.key for t in tasks[k]} for k in ("val", "test_seen", "train"))
    assert not val & test and not (val | test) & train
    assert pipeline.build_tasks(setup)["val"] == tasks["val"]  # deterministic


def test_task_dataset_splits_rows_and_read_back(tmp_path, monkeypatch):
    import kimi_mini.agentic.pipeline as pipeline

    monkeypatch.setattr(pipeline, "cache_dir", lambda: tmp_path)
    setup = pipeline.AgenticSetup(tasks_per_agent=40, n_test=16, n_val=8, n_evolved=8)
    generated = pipeline._generate_tasks(setup, 2)
    dd = pipeline.task_dataset(setup, seed=2)
    assert list(dd) == ["train", "val", "test_seen", "test_evolved"]
    assert {k: dd[k].num_rows for k in dd} == {k: len(v) for k, v in generated.items()}
    t, row = generated["test_seen"][5], dd["test_seen"][5]
    assert (row["agent"], row["level"], row["persona"], row["requests"], row["answer"]) == (
        t.agent.name, t.level, t.persona, list(t.requests), t.rubric.answer)
    assert json.loads(row["files"]) == t.files
    assert [c[0] for c in json.loads(row["calls"])] == [c[0] for c in t.rubric.calls]
    assert dd["train"].with_format("torch")[:]["level"].dtype == torch.int64
    read = pipeline.build_tasks(setup, seed=2)  # from the saved DatasetDict: the same tasks, types included

    def fields(ts):
        return repr([(t.agent.name, t.level, t.persona, t.requests, t.plans, t.files, t.rubric) for t in ts])

    assert read == generated and {k: fields(v) for k, v in read.items()} == {k: fields(v) for k, v in generated.items()}
    assert [p.name.startswith("tasks-") for p in (tmp_path / "agentic").iterdir() if p.is_dir()] == [True]


def test_rl_sweep_chooses_on_validation_and_is_cached(tmp_path, monkeypatch):
    import kimi_mini.agentic.pipeline as pipeline

    monkeypatch.setattr(pipeline, "cache_dir", lambda: tmp_path)
    setup = pipeline.AgenticSetup(d_model=16, n_heads=2, d_ff=32, n_layers=1, tasks_per_agent=12, sft_steps=2,
                                  sft_batch=2, rl_steps=2, rl_tasks=2, rl_k=2, rl_inner=2, ptx_batch=2, ptx_seq=16,
                                  n_test=3, n_val=3, n_evolved=2)
    grid = [{"rl_lr": 1e-4, "tau": 0.1}, {"rl_lr": 1e-3, "tau": 0.3}]
    rows = pipeline.rl_sweep(setup, grid, seed=0, eval_every=1)
    assert [(r["rl_lr"], r["step"]) for r in rows] == [(1e-4, 0), (1e-4, 1), (1e-4, 2), (1e-3, 0), (1e-3, 1),
                                                       (1e-3, 2)]
    assert all(0 <= r["val_success"] <= 1 for r in rows)
    assert len(list(tmp_path.glob("agentic/rl-sweep-*.json"))) == 1
    assert pipeline.rl_sweep(setup, grid, seed=0, eval_every=1) == rows  # from the cache
    fake = [{"rl_lr": 1e-4, "tau": 0.1, "step": 0, "val_success": 0.9},  # step 0 is SFT itself: never chosen
            {"rl_lr": 1e-4, "tau": 0.1, "step": 2, "val_success": 0.5},
            {"rl_lr": 1e-3, "tau": 0.3, "step": 2, "val_success": 0.6}]
    assert pipeline.choose_rl(fake, min_step=2) == {"rl_lr": 1e-3, "tau": 0.3, "step": 2, "val_success": 0.6}
    with pytest.raises(ValueError, match="grid"):
        pipeline.rl_sweep(setup, [{"learning_rate": 1e-3}])
    with pytest.raises(ValueError, match="rows"):
        pipeline.choose_rl(fake, min_step=5)


def test_measure_reports_sampled_lengths_budget_share_and_dialogues(tmp_path, monkeypatch):
    import kimi_mini.agentic.pipeline as pipeline

    monkeypatch.setattr(pipeline, "cache_dir", lambda: tmp_path)
    setup = pipeline.AgenticSetup(d_model=16, n_heads=2, d_ff=32, n_layers=1, tasks_per_agent=12, n_test=4,
                                  n_val=2, n_evolved=2)
    corpus, tasks = pipeline._context(setup)
    out = pipeline._measure(pipeline.pretrained_model(setup, corpus), setup, tasks, corpus, browse=3)
    assert out["n_seen"] == 4 and out["passed_seen"] == 0  # an untrained model solves nothing
    assert out["bytes_t1"] > 0 and 0 <= out["over_t1"] <= 1
    assert len(out["dialogues"]) == 3 and set(out["dialogues"][0]["items"]) >= {"format", "calls", "answer"}
    assert out["dialogues"][0]["segments"][0][0] == "system"
    t = tasks["test_seen"][0]
    assert pipeline.task_budget(setup, t) == math.ceil(setup.budget_slack * optimal_agent_bytes(t))


def test_experiment_with_workers_equals_one_process(tmp_path, monkeypatch):
    """With workers, SFT jobs are queued at once and a seed's RL jobs as soon as its judged SFT model exists: the
    results are those of the one-process run (every job deterministic on its own), in the same order."""
    import kimi_mini.agentic.pipeline as pipeline

    setup = pipeline.AgenticSetup(d_model=16, n_heads=2, d_ff=32, n_layers=1, max_seq_len=224, tasks_per_agent=12,
                                  pretrain_steps=2, pretrain_batch=2, pretrain_seq=16, sft_steps=2, sft_batch=2,
                                  rl_steps=2, rl_tasks=2, rl_k=2, ptx_batch=2, ptx_seq=16, n_test=3)
    runs = {}
    for workers in (1, 2):
        cache = tmp_path / f"w{workers}"
        monkeypatch.setenv("KIMI_MINI_CACHE", str(cache))  # the spawned workers read it too
        runs[workers] = pipeline.run_experiment(setup, seeds=(0, 1), workers=workers)
        assert len(list(cache.glob("agentic/rl-*.pt"))) == 6 and len(list(cache.glob("agentic/sft-*.pt"))) == 4
    for variant, rows in runs[1]["results"].items():
        other = runs[2]["results"][variant]
        keys = ("seen", "evolved", "bytes", "stdlib")
        assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in other], variant
    def untimed(out):  # wall-clock seconds aside
        return {v: [[{k: x for k, x in r.items() if k != "seconds"} for r in h] for h in hs]
                for v, hs in out["histories"].items()}

    assert untimed(runs[1]) == untimed(runs[2])
