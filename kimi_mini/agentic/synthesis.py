"""Kimi K2's agentic data synthesis in miniature: agents, tasks with rubrics, a simulated user, a teacher, a judge.

Paper: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), §3.1.1: (2) **agents** — a system prompt and
a tool subset — and **tasks** with explicit success **rubrics**, generated per agent at several difficulty
levels; (3) multi-turn **trajectories** between the agent, a **simulated user** with a persona and the tool
simulator; (4) a **judge** that keeps only the trajectories that meet the rubric. K2's judge is an LLM; here
it is a rubric checker: every rubric item is a predicate over the simulator's final state and the answers.

The trajectory format is one compact byte string (what the byte-level model reads and writes)::

    #calc:add,subtract,multiply     system line: agent name and its tools
    U:add 3 and 4                   the user
    >add(3,4)                       tool call  (marker ">", written by the agent)
    <7                              tool result (marker "<", written by the simulator; "!busy" = failure)
    =7                              answer to the user (marker "=", written by the agent)

The agent writes the ``>`` and ``=`` lines; everything else is the environment's.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from kimi_mini.agentic.tools import Tool, ToolWorld, evolve_tool, parse_call, real_tools
from kimi_mini.checks import check_int, check_number, describe

__all__ = ["Agent", "Task", "Rubric", "make_agents", "make_tasks", "SimulatedUser", "Episode", "Teacher", "judge",
           "synthesize", "optimal_agent_bytes", "PERSONAS", "FLAKY", "MAX_AGENT_LINES", "MAX_LINE"]

PERSONAS = ("terse", "verbose", "changer")
FLAKY = {"multiply": 0.3, "echo": 0.3}  # controlled randomness: the tool playing this role fails with probability p
MAX_AGENT_LINES = 8
MAX_LINE = 24  # bytes; a longer agent line is cut and counts as malformed
_WORDS = ("hi", "bye", "milk", "todo", "eggs", "jazz")
_FILES = ("a.txt", "b.txt", "c.txt", "notes", "log.md")
_DIRS = ("docs", "src", "data", "logs", "tmp")
_OPS = ("add", "subtract", "multiply")  # the roles of the calc tools, in system-prompt order


@dataclass(frozen=True)
class Agent:
    """A system prompt and a tool subset. ``roles`` maps a role (``"add"``) to the tool that plays it (``"plus"``)."""

    name: str
    tools: dict[str, Tool] = field(compare=False)
    roles: dict[str, str] = field(compare=False)

    @property
    def prompt(self) -> str:
        return f"#{self.name}:{','.join(self.tools)}\n"


def make_agents() -> dict[str, Agent]:
    """The agents: ``calc`` (BFCL Math API), ``fs`` (BFCL file system), two calc agents whose tools were grown by
    renaming (``calc2``, ``calc3``: trained on) and ``calc_evo`` whose adder ``plus`` is never trained on."""
    real = real_tools()

    def calc(name, names):
        tools = {n: (real[op] if n == op else evolve_tool(real[op], "rename", n))
                 for op, n in zip(_OPS, names, strict=True)}
        return Agent(name, tools, dict(zip(_OPS, names, strict=True)))

    fs = {n: real[n] for n in ("mkdir", "touch", "echo", "cat")}
    return {"calc": calc("calc", _OPS), "calc2": calc("calc2", ("sum2", "minus", "times")),
            "calc3": calc("calc3", ("addition", "diff", "product")), "fs": Agent("fs", fs, {n: n for n in fs}),
            "calc_evo": calc("calc_evo", ("plus", "subtract", "multiply"))}


@dataclass(frozen=True)
class Rubric:
    """Checkable success criteria: every expected call was executed, the file system ends in the expected state,
    and the last answer contains the expected text (``None``: any answer)."""

    calls: tuple[tuple[str, tuple], ...]
    tree: dict = field(hash=False)
    answer: str | None

    def check(self, world: ToolWorld, answers: list[str]) -> dict[str, bool]:
        done = {(n, a) for n, a, _ in world.log}
        return {"calls": all(c in done for c in self.calls), "state": world.fs.tree == self.tree,
                "answer": bool(answers) and (self.answer is None or self.answer in answers[-1].split())}


@dataclass(frozen=True)
class Task:
    """A user goal for one agent: ``requests`` (one per user turn; a persona that changes its mind has two), the
    ``plans`` that fulfil them (calls ``(tool, args)``, ``"$"`` = the previous result), the initial files,
    the difficulty ``level`` (calls per request) and the :class:`Rubric`."""

    agent: Agent
    level: int
    persona: str
    requests: tuple[str, ...]
    plans: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]
    files: dict = field(hash=False)
    rubric: Rubric

    @property
    def key(self) -> str:
        return f"{self.agent.name}|{self.plans}"

    @property
    def split(self) -> str:
        """``test`` for the held-out agent and for ¼ of the plans (by a stable hash), else ``train``."""
        return "test" if self.agent.name == "calc_evo" or zlib.crc32(self.key.encode()) % 4 == 0 else "train"


def _run_plan(task_agent: Agent, files: dict, plans) -> tuple[ToolWorld, tuple, str | None]:
    world = ToolWorld(task_agent.tools, files=files)
    calls, last = [], None
    for plan in plans:
        for tool, args in plan:
            args = [last if a == "$" else a for a in args]
            last = world.call(tool, args)
            calls.append((tool, world.log[-1][1]))
    return world, tuple(calls), last


_CALC_WORDS = {"terse": {"add": "add {} {}", "subtract": "sub {} {}", "multiply": "mul {} {}"},
               "verbose": {"add": "please add {} and {}", "subtract": "please take {1} from {0}",
                           "multiply": "please multiply {} by {}"}}
_CALC_THEN = {"terse": {"add": " then add {}", "subtract": " then sub {}", "multiply": " then mul {}"},
              "verbose": {"add": ", then add {}", "subtract": ", then take {}", "multiply": ", then times {}"}}
_FS_WORDS = {"terse": {"mkdir": "new folder {}", "touch": "new file {}", "cat": "show {}", "write": "write {} to {}"},
             "verbose": {"mkdir": "please make a folder {}", "touch": "please make an empty file {}",
                         "cat": "please show me {}", "write": "please put {} in a new file {}"}}


def _calc_task(agent: Agent, level: int, persona: str, rng: random.Random, max_operand: int) -> Task:
    style = "terse" if persona == "changer" else persona
    op, a, b = rng.choice(_OPS), rng.randint(1, max_operand), rng.randint(1, max_operand)
    tool = agent.roles[op]
    request = _CALC_WORDS[style][op].format(a, b)
    plans = [((tool, (str(a), str(b))),)]
    if level == 2:
        op2, c = rng.choice(_OPS), rng.randint(2, 9)
        request += _CALC_THEN[style][op2].format(c)
        plans = [plans[0] + ((agent.roles[op2], ("$", str(c))),)]
    requests = [request]
    if persona == "changer":
        op2 = rng.choice([o for o in _OPS if o != op])
        requests.append(f"no, {dict(add='add', subtract='sub', multiply='mul')[op2]} them")
        plans.append(((agent.roles[op2], (str(a), str(b))),))
    world, calls, last = _run_plan(agent, {}, plans)
    return Task(agent, level, persona, tuple(requests), tuple(plans), {}, Rubric(calls, world.fs.tree, last))


def _fs_task(agent: Agent, level: int, persona: str, rng: random.Random, max_operand: int) -> Task:
    style = "terse" if persona == "changer" else persona
    files = dict(zip(rng.sample(_FILES, 2), rng.sample(_WORDS, 2), strict=True))
    new_file = rng.choice([f for f in _FILES if f not in files])
    if level == 1:
        kind = rng.choice(("mkdir", "touch", "cat"))
        arg = {"mkdir": rng.choice(_DIRS), "touch": new_file, "cat": rng.choice(sorted(files))}[kind]
        requests, plans = [_FS_WORDS[style][kind].format(arg)], [((kind, (arg,)),)]
        if persona == "changer":
            pool = {"mkdir": _DIRS, "touch": [f for f in _FILES if f not in files], "cat": sorted(files)}[kind]
            other = rng.choice([x for x in pool if x != arg])
            requests.append(f"no, {'show' if kind == 'cat' else 'call it'} {other}")
            plans.append(((kind, (other,)),))
    else:
        kind, word = "write", rng.choice(_WORDS)
        requests = [_FS_WORDS[style]["write"].format(word, new_file)]
        plans = [(("touch", (new_file,)), ("echo", (word, new_file)))]
        if persona == "changer":
            word2 = rng.choice([w for w in _WORDS if w != word])
            requests.append(f"no, write {word2}")
            plans.append((("echo", (word2, new_file)),))
    world, calls, last = _run_plan(agent, files, plans)
    return Task(agent, level, persona, tuple(requests), tuple(plans), files,
                Rubric(calls, world.fs.tree, last if kind == "cat" else None))


def make_tasks(agent: Agent, n: int, rng: random.Random, levels=(1, 2), personas=PERSONAS,
               max_operand: int = 30) -> list[Task]:
    """``n`` tasks for ``agent`` (level and persona drawn uniformly; a changer's tasks are level 1; calc operands
    in 1..``max_operand``)."""
    if not isinstance(agent, Agent):
        raise ValueError(f"agent: expected an Agent (make_agents()), got {type(agent).__name__}")
    check_int("n", n, 0, 10**6)
    check_int("max_operand", max_operand, 2, 10**6)
    if not isinstance(rng, random.Random):
        raise ValueError(f"rng: expected a random.Random, got {type(rng).__name__}")
    if isinstance(levels, (str, bytes)) or not levels or any(lv not in (1, 2) for lv in levels):
        raise ValueError(f"levels: expected a non-empty tuple of levels from (1, 2), got {levels!r}")
    if isinstance(personas, (str, bytes)) or not personas or any(p not in PERSONAS for p in personas):
        raise ValueError(f"personas: expected a non-empty tuple from {PERSONAS}, got {personas!r}")
    out = []
    for _ in range(n):
        persona = rng.choice(personas)
        level = 1 if persona == "changer" else rng.choice(levels)
        out.append((_fs_task if agent.name == "fs" else _calc_task)(agent, level, persona, rng, max_operand))
    return out


class SimulatedUser:
    """A scripted user with a persona: ``terse`` and ``verbose`` state one request; ``changer`` reads the first
    answer, then changes its mind. ``reply`` returns the next user message, or None when the user is done."""

    def __init__(self, task: Task):
        self.task, self.turn = task, 0

    def first_message(self) -> str:
        return self.task.requests[0]

    def reply(self, answer: str) -> str | None:
        self.turn += 1
        return self.task.requests[self.turn] if self.turn < len(self.task.requests) else None


class Episode:
    """One dialogue of an agent with the simulated user and the tool simulator. ``text`` is the trajectory so far;
    :meth:`step` takes one agent line (with its ``\\n``) and returns what the environment says next ("" when done)."""

    def __init__(self, task: Task, seed: int = 0, flaky: dict[str, float] | None = None):
        """``flaky`` maps a role (``"multiply"``) to its failure probability (default :data:`FLAKY`)."""
        self.task = task
        roles = task.agent.roles
        flaky = {roles[r]: p for r, p in (FLAKY if flaky is None else flaky).items() if r in roles}
        self.world = ToolWorld(task.agent.tools, files=task.files, flaky=flaky, seed=seed)
        self.user = SimulatedUser(task)
        self.segments: list[tuple[str, str]] = [("system", task.agent.prompt),
                                                ("user", f"U:{self.user.first_message()}\n")]
        self.answers: list[str] = []
        self.done, self.malformed, self.agent_lines = False, False, 0
        self.retry_bytes = 0  # agent bytes spent on calls the world answered "!busy" (not the agent's verbosity)

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.segments)

    def step(self, line: str) -> str:
        if self.done:
            raise ValueError("line: the episode is over")
        self.segments.append(("agent", line))
        self.agent_lines += 1
        body, reply = line.rstrip("\n"), None
        call = parse_call(body[1:]) if body.startswith(">") else None
        if call is not None:
            reply = ("result", f"<{self.world.call(*call)}\n")
            self.retry_bytes += len(line.encode()) if reply[1] == "<!busy\n" else 0
        elif body.startswith("=") and line.endswith("\n"):
            self.answers.append(body[1:])
            msg = self.user.reply(body[1:])
            reply = ("user", f"U:{msg}\n") if msg is not None else None
        else:
            self.malformed = True
        if reply is None or self.agent_lines >= MAX_AGENT_LINES:
            self.done = True
            return ""
        self.segments.append(reply)
        return reply[1]


def judge(episode: Episode) -> tuple[bool, dict[str, bool]]:
    """K2's judge as a rubric checker: well-formed, every rubric item holds. Returns ``(passed, items)``."""
    items = {"format": episode.done and not episode.malformed,
             **episode.task.rubric.check(episode.world, episode.answers)}
    return all(items.values()), items


ERRORS = ("wrong_tool", "wrong_args", "skip_check", "give_up")
LONG = ("redundant_check", "verbose_answer")


class Teacher:
    """A scripted expert with noise. With probability ``p_error`` it makes one mistake (a wrong tool, wrong
    arguments, skipping the tool and guessing, or giving up after a tool failure); with probability ``p_long``
    it is long-winded but right (an extra checking call, or a wordy answer). It retries a ``!busy`` tool."""

    def __init__(self, task: Task, rng: random.Random, p_error: float = 0.3, p_long: float = 0.3):
        self.task, self.rng = task, rng
        self.error = rng.choice(ERRORS) if rng.random() < p_error else None
        self.long = rng.choice(LONG) if rng.random() < p_long else None
        self.phase, self.i, self.checked, self.last_call, self.last = -1, 0, False, None, None

    def act(self, ep: Episode) -> str:
        role, text = ep.segments[-1]
        if role == "user":
            self.phase, self.i, self.checked = self.phase + 1, 0, False
        elif text == "<!busy\n":
            return "=sorry, it failed\n" if self.error == "give_up" else self.last_call
        else:
            self.last = text[1:-1]
        plan = self.task.plans[self.phase]
        if self.error == "skip_check" and self.phase == 0:
            guess = self.task.rubric.answer or "ok"
            return f"={int(guess) + self.rng.randint(1, 3) if guess.lstrip('-').isdigit() else 'ok'}\n"
        if self.i < len(plan):
            tool, args = plan[self.i]
            args = [self.last if a == "$" else a for a in args]
            if self.phase == 0 and self.i == 0 and self.error == "wrong_tool":
                tool = self.rng.choice([t for t in self.task.agent.tools if t != tool])
            if self.phase == 0 and self.i == 0 and self.error == "wrong_args":
                args = [str(int(a) + 1) if a.lstrip("-").isdigit() else a + "x" for a in args]
            self.i += 1
            self.last_call = f">{tool}({','.join(args)})\n"
            return self.last_call
        if self.long == "redundant_check" and not self.checked:
            self.checked = True
            return self.last_call
        answer = self.last if self.task.agent.name != "fs" or plan[-1][0] == "cat" else "ok"
        return f"=the answer is {answer}\n" if self.long == "verbose_answer" else f"={answer}\n"


def synthesize(tasks: list[Task], seed: int = 0, p_error: float = 0.3, p_long: float = 0.3
               ) -> list[tuple[Episode, bool]]:
    """Play every task once with the noisy teacher; returns ``(episode, judge_passed)`` pairs."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, (list, tuple)) or \
            any(not isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks: expected a list of Task, got {describe(tasks)}")
    check_int("seed", seed)
    check_number("p_error", p_error, 0, 1)  # a rate: 1.5 must not quietly act as 1.0
    check_number("p_long", p_long, 0, 1)
    rng = random.Random(seed)
    out = []
    for k, task in enumerate(tasks):
        ep = Episode(task, seed=seed * 100_003 + k)
        teacher = Teacher(task, rng, p_error, p_long)
        while not ep.done:
            ep.step(teacher.act(ep))
        out.append((ep, judge(ep)[0]))
    return out


def optimal_agent_bytes(task: Task) -> int:
    """Bytes the agent writes in the shortest correct dialogue (the noise-free teacher, no tool failures)."""
    ep, teacher = Episode(task, flaky={}), Teacher(task, random.Random(0), p_error=0.0, p_long=0.0)
    while not ep.done:
        ep.step(teacher.act(ep))
    return sum(len(t.encode()) for role, t in ep.segments if role == "agent")
