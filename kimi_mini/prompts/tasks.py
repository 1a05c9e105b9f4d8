"""The prompted task format: one text-to-text format for every task and the registry of task families.

ZeroPrompt (Wang et al., "ZeroPrompt: Scaling Prompt-Based Pretraining to 1,000 Tasks Improves Zero-Shot
Generalization", arXiv 2201.06910) casts every task into one format — task prompt + input + label options →
verbalised label — and trains on a growing number of tasks, evaluating zero-shot on held-out tasks and held-out
task types. Here a task is a :class:`Task`: its instruction templates (``"Has '{c}'? {text}"``, with the task's
parameter already written in and the input slots left as ``{slot}`` fields), a verbaliser (label index → option
string) and labelled :class:`Example` s. :func:`render` fills one template with one example:

    prompt = template.format(**example.slots, options="/".join(options)) + ANSWER_SEP
    sequence scored for option c = prompt + c

``ANSWER_SEP`` is appended by :func:`render`, never part of a template, so a prompt search (GPS) that rewrites
the instruction cannot remove the place where the answer starts. Every input slot must appear exactly once in a
template (:func:`check_template`); ``{options}`` may appear at most once.

The families (``families``, ``numeric``, ``real``) import this module to register themselves; the zoo built
from them and its splits live one level up, in :mod:`kimi_mini.prompts.zoo`, so registration runs one way.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from kimi_mini.checks import check_int
from kimi_mini.registry import Registry

__all__ = ["Example", "Task", "FamilySpec", "FAMILIES", "register_family", "render", "check_template",
           "template_slots", "ANSWER_SEP", "ZOO_VERSION"]

ANSWER_SEP = " =>"
ZOO_VERSION = "3"  # bump when a family changes: it is part of the pretraining cache key


@dataclass(frozen=True)
class Example:
    """One labelled input: ``slots`` fill the template's ``{slot}`` fields, ``label`` indexes the options.
    ``options`` overrides the task's verbaliser for this example (multiple choice with per-example answers)."""

    slots: Mapping[str, str]
    label: int
    options: tuple[str, ...] | None = None

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.slots.items())), self.label, self.options))


@dataclass(frozen=True)
class Task:
    """A prompted task: ``name`` (unique), ``family`` (task type), ``templates`` (≥ 1 instruction templates,
    each with every input slot exactly once), ``verbalizer`` (label → option string; None when every example
    carries its own ``options``), ``examples``, ``params`` (the family parameter the instruction carries) and
    ``real`` (True for tasks on human-written text)."""

    name: str
    family: str
    templates: tuple[str, ...]
    verbalizer: tuple[str, ...] | None
    examples: tuple[Example, ...]
    params: Mapping[str, object] = field(default_factory=dict)
    real: bool = False

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError(f"templates: task {self.name!r} needs at least one template")
        if not self.examples:
            raise ValueError(f"examples: task {self.name!r} has no examples")
        slots = set(self.examples[0].slots)
        for t in self.templates:
            check_template(t, slots)
        for ex in self.examples:
            opts = self.options_for(ex)
            if not 0 <= ex.label < len(opts):
                raise ValueError(f"examples: label {ex.label} out of range for options {opts} in {self.name!r}")

    def options_for(self, example: Example) -> tuple[str, ...]:
        opts = example.options if example.options is not None else self.verbalizer
        if not opts or len(opts) < 2:
            raise ValueError(f"example: task {self.name!r} gives fewer than two options ({opts!r})")
        return tuple(opts)

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, family={self.family!r}, {len(self.templates)} templates, "
                f"{len(self.examples)} examples, options={self.verbalizer})")


def template_slots(template: str) -> list[str]:
    """The ``{field}`` names of ``template`` in order, repeats kept (``"{a} {b} {a}"`` → ``[a, b, a]``)."""
    if not isinstance(template, str):
        raise ValueError(f"template: expected a string, got {template!r}")
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"template: not a valid format string ({exc}): {template!r}") from None


def check_template(template: str, slots: Sequence[str] | set[str]) -> None:
    """``ValueError`` unless every input slot appears exactly once and nothing else but ``{options}`` (≤ once)."""
    found = template_slots(template)
    for s in slots:
        if found.count(s) != 1:
            raise ValueError(f"template: slot {{{s}}} must appear exactly once, found {found.count(s)} in {template!r}")
    extra = [f for f in found if f not in slots and f != "options"]
    if extra or found.count("options") > 1:
        raise ValueError(f"template: unknown or repeated fields {extra or ['options']} in {template!r}; "
                         f"expected the slots {sorted(slots)} and at most one {{options}}")


def render(task: Task, example: Example, template: str | int = 0) -> tuple[str, list[str]]:
    """``(prompt_text, option_strings)`` for ``example`` of ``task`` under ``template`` (a template string —
    e.g. one GPS proposes — or an index into ``task.templates``). The scored sequence for option c is
    ``prompt_text + c``; ``option_strings[example.label]`` is the right answer."""
    if not isinstance(task, Task):
        raise ValueError(f"task: expected a Task, got {type(task).__name__}")
    if not isinstance(example, Example):
        raise ValueError(f"example: expected an Example, got {type(example).__name__}")
    if isinstance(template, int) and not isinstance(template, bool):
        if not 0 <= template < len(task.templates):
            raise ValueError(f"template: index {template} out of range for {len(task.templates)} templates")
        template = task.templates[template]
    check_template(template, set(example.slots))
    options = list(task.options_for(example))
    text = template.format(**example.slots, options="/".join(options))
    return text + ANSWER_SEP, options


# --- the family registry ----------------------------------------------------------------------------------

class FamilySpec(NamedTuple):
    """A task family: ``build(n_examples, seed) -> list[Task]``; ``kind`` is ``"generated"`` or ``"real"``."""

    name: str
    build: Callable[[int, int], list[Task]]
    kind: str
    description: str


FAMILIES: Registry[FamilySpec] = Registry("task family")


def register_family(name: str, kind: str = "generated", description: str = "") -> Callable:
    """Decorator: ``@register_family("contains_char")`` on ``build(n_examples, seed) -> list[Task]``."""
    if kind not in ("generated", "real"):
        raise ValueError(f"kind: expected 'generated' or 'real', got {kind!r}")

    def decorator(build: Callable[[int, int], list[Task]]) -> Callable[[int, int], list[Task]]:
        @functools.wraps(build)
        def checked(n: int, seed: int) -> list[Task]:  # the public boundary of every family
            check_int("n", n, 1, 100_000)
            check_int("seed", seed)
            return build(n, seed)

        FAMILIES.add(name, FamilySpec(name, checked, kind, description or (build.__doc__ or "").strip()))
        return checked

    return decorator
