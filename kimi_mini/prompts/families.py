"""Generated task families for the ZeroPrompt zoo (arXiv 2201.06910): many tasks, cheaply, for task scaling.

Each family is a skill with a parameter (which letter, which length, which topic…); one parameter value is one
task, and the instruction carries it (``"Longer than 7? {text}"``), so a model that has learnt the family's skill
rather than N separate input→label maps can answer a held-out parameter zero-shot. Labels are balanced by
construction (half the examples of every task are positive). Inputs are short (≤ 20 bytes) so a byte-level
toy model sees whole prompts of ≤ ~48 bytes. Words come from the VADER lexicon (real human-rated words).
Identity-matching skills ("does the text contain q?", "does it start with q?") were tried first and left out: a
40k-parameter byte model stays at chance on them after 1,500 steps (a single such task it learns in 300), so at
toy scale they would only add noise; order relations on letters, lengths and numbers (here and in
:mod:`kimi_mini.prompts.numeric`) it learns within seconds.

Why generated tasks still test the mechanism: ZeroPrompt's claim is about the *number of distinct tasks* a
model is prompted with, at equal training tokens; what matters is that tasks differ in what the instruction
asks, which a family × parameter grid gives by the hundred where real labelled English tasks that a 100k-
parameter byte model could learn do not exist in that number.
"""

from __future__ import annotations

import random
import string
import zlib
from collections.abc import Callable

from kimi_mini.prompts.tasks import Example, Task, register_family

__all__ = ["LETTERS", "TOPICS", "YES_NO", "task_rng", "make_tasks"]

LETTERS = string.ascii_lowercase
YES_NO = ("yes", "no")  # label 0 = yes (the property holds), 1 = no

# Hand-picked keyword lists (a topic family): the instruction names the topic, the input holds three words.
TOPICS = {
    "animal": "cat dog cow pig horse sheep goat mouse lion tiger bear wolf fox deer duck owl".split(),
    "color": "red blue green black white pink brown gray orange purple yellow gold".split(),
    "food": "bread rice soup cake apple pear meat fish egg milk cheese bean corn plum".split(),
    "body": "arm leg hand foot head nose ear eye knee neck back chin lip toe".split(),
    "weather": "rain snow wind storm cloud sun fog hail frost heat mist".split(),
    "number": "one two three four five six seven eight nine ten zero".split(),
    "family": "mother father sister brother aunt uncle son daughter niece cousin".split(),
    "tool": "saw drill hammer knife axe nail rope wrench shovel rake".split(),
}
_FILLER = "the and with from over under into about after before near very quite just only much".split()


def task_rng(seed: int, name: str) -> random.Random:
    """A per-task random stream that depends only on ``(seed, task name)`` (stable across runs and orderings)."""
    return random.Random(zlib.crc32(f"{seed}/{name}".encode()))


def _word(rng: random.Random, lo: int = 4, hi: int = 7, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _balanced(n: int, rng: random.Random, make: Callable[[random.Random, bool], dict | Example]) -> tuple:
    """``n`` examples, half with the property (label 0) and half without (label 1), shuffled."""
    out = []
    for i in range(n):
        positive = i % 2 == 0
        made = make(rng, positive)
        out.append(made if isinstance(made, Example) else Example(made, 0 if positive else 1))
    rng.shuffle(out)
    return tuple(out)


def make_tasks(family: str, params: list, templates: Callable, make: Callable, n: int, seed: int,
               verbalizer=YES_NO) -> list[Task]:
    """One task per parameter ``p``: ``templates(*p)`` → its instruction templates, ``make(rng, positive, *p)`` →
    one example's slots (or an :class:`Example`); ``n`` balanced examples from the task's own random stream."""
    tasks = []
    for p in params:
        key = p if isinstance(p, tuple) else (p,)
        name = f"{family}:{'_'.join(map(str, key))}"
        rng = task_rng(seed, name)
        tasks.append(Task(name, family, tuple(templates(*key)), verbalizer,
                          _balanced(n, rng, lambda r, pos, key=key: make(r, pos, *key)), {"param": p}))
    return tasks



@register_family("longer_than")
def longer_than(n: int, seed: int) -> list[Task]:
    """Is the text longer than k letters (k = 2 … 13)? (12 tasks)"""
    return make_tasks("longer_than", list(range(2, 14)),
                  lambda k: [f"Longer than {k}? {{text}}", f"Has {{text}} over {k} letters?",
                             f"{{text}}: length > {k}? {{options}}"],
                  lambda r, pos, k: {"text": _word(r, k + 1, 15) if pos else _word(r, 1, k)}, n, seed)


@register_family("shorter_than")
def shorter_than(n: int, seed: int) -> list[Task]:
    """Is the text shorter than k letters (k = 3 … 14)? (12 tasks)"""
    return make_tasks("shorter_than", list(range(3, 15)),
                  lambda k: [f"Shorter than {k}? {{text}}", f"Has {{text}} under {k} letters?",
                             f"{{text}}: length < {k}? {{options}}"],
                  lambda r, pos, k: {"text": _word(r, 1, k - 1) if pos else _word(r, k, 15)}, n, seed)


@register_family("first_before")
def first_before(n: int, seed: int) -> list[Task]:
    """Does the text start with a letter before c in the alphabet (c = b … z)? (25 tasks)"""
    def make(r, pos, c):
        i = LETTERS.index(c)
        return {"text": r.choice(LETTERS[:i] if pos else LETTERS[i:]) + _word(r, 3, 5)}
    return make_tasks("first_before", list(LETTERS[1:]),
                  lambda c: [f"Starts before '{c}'? {{text}}", f"Is {{text}} before {c} in abc order?",
                             f"{{text}} first letter < {c}? {{options}}"], make, n, seed)


@register_family("first_after")
def first_after(n: int, seed: int) -> list[Task]:
    """Does the text start with a letter after c in the alphabet (c = a … y)? (25 tasks)"""
    def make(r, pos, c):
        i = LETTERS.index(c)
        return {"text": r.choice(LETTERS[i + 1:] if pos else LETTERS[:i + 1]) + _word(r, 3, 5)}
    return make_tasks("first_after", list(LETTERS[:25]),
                  lambda c: [f"Starts after '{c}'? {{text}}", f"Is {{text}} after {c} in abc order?",
                             f"{{text}} first letter > {c}? {{options}}"], make, n, seed)


def _lexicon_words() -> list[tuple[str, float]]:
    from kimi_mini.realdata import vader_lexicon
    return sorted((w, v) for w, v in vader_lexicon().items() if w.isalpha() and w.islower() and 3 <= len(w) <= 8)


@register_family("topic")
def topic(n: int, seed: int) -> list[Task]:
    """Is one of the three words about the topic (8 hand-listed topics)?"""
    others = {t: [w for u, ws in TOPICS.items() if u != t for w in ws] + _FILLER for t in TOPICS}

    def make(r, pos, t):
        words = r.sample(others[t], 3)
        if pos:
            words[r.randrange(3)] = r.choice(TOPICS[t])
        return {"text": " ".join(words)}
    return make_tasks("topic", sorted(TOPICS),
                  lambda t: [f"Any {t} word? {{text}}", f"Is {{text}} about {t}?", f"{{text}}: topic {t}? {{options}}"],
                  make, n, seed)


@register_family("lexicon_sentiment")
def lexicon_sentiment(n: int, seed: int) -> list[Task]:
    """Is a VADER-lexicon word positive (mean human valence ≥ 1) or negative (≤ −1)? Six phrasings whose
    question and options differ (the parameter is which pole is asked for and how it is named)."""
    words = _lexicon_words()
    pos_w = [w for w, v in words if v >= 1.0]
    neg_w = [w for w, v in words if v <= -1.0]
    variants = [("positive", ("yes", "no"), False), ("negative", ("yes", "no"), True),
                ("good", ("good", "bad"), False), ("pos", ("pos", "neg"), False),
                ("happy", ("happy", "sad"), False), ("bad", ("yes", "no"), True)]
    tasks = []
    for key, verb, flipped in variants:
        name = f"lexicon_sentiment:{key}"
        rng = task_rng(seed, name)
        templates = {"positive": ["Is '{text}' positive?", "Positive word? {text}", "{text}: positive? {options}"],
                     "negative": ["Is '{text}' negative?", "Negative word? {text}", "{text}: negative? {options}"],
                     "good": ["Good or bad: {text}", "Is {text} good or bad?", "{text} is {options}?"],
                     "pos": ["Sentiment of '{text}'?", "{text}: pos or neg?", "Polarity {options}: {text}"],
                     "happy": ["Happy or sad: {text}", "{text} feels {options}?", "Mood of '{text}'?"],
                     "bad": ["Is '{text}' bad?", "Bad word? {text}", "{text}: a bad word? {options}"]}[key]
        exs = _balanced(n, rng, lambda r, p, flipped=flipped: Example(
            {"text": r.choice(neg_w if p == flipped else pos_w)}, 0 if p else 1))
        tasks.append(Task(name, "lexicon_sentiment", tuple(templates), verb, exs, {"param": key}))
    return tasks


_TRANSFORMS = {"reversed": lambda w: w[::-1], "upper": str.upper, "sorted": lambda w: "".join(sorted(w)),
               "rotated": lambda w: w[1:] + w[0], "caesar": lambda w: "".join(LETTERS[(LETTERS.index(c) + 1) % 26]
                                                                          for c in w),
               "swapped": lambda w: w[-1] + w[1:-1] + w[0]}  # every transform keeps the length: options tie in bytes


@register_family("transform")
def transform(n: int, seed: int) -> list[Task]:
    """Which of two strings is the text transformed (reversed, upper-cased, sorted, …)? Options per example:
    the right transform and another transform of the same text (same length), in random order."""
    tasks = []
    for key in sorted(_TRANSFORMS):
        name = f"transform:{key}"
        rng = task_rng(seed, name)
        exs = []
        for i in range(n):
            while True:
                w = _word(rng, 4, 5)
                right = _TRANSFORMS[key](w)
                wrong = _TRANSFORMS[rng.choice([k for k in _TRANSFORMS if k != key])](w)
                if wrong != right:
                    break
            label = i % 2
            exs.append(Example({"text": w}, label, (right, wrong) if label == 0 else (wrong, right)))
        rng.shuffle(exs)
        tasks.append(Task(name, "transform", (f"{{text}} {key} is {{options}}?", f"Pick {{text}} {key}: {{options}}",
                                              f"Which is {{text}} {key}? {{options}}"), None, tuple(exs),
                          {"param": key}))
    return tasks
