"""Generated task families for the ZeroPrompt zoo (arXiv 2201.06910): many tasks, cheaply, for task scaling.

Each family is a skill with a parameter (which letter, which threshold, which word…); one parameter value is one
task, and the instruction carries it (``"Has 'q'? {text}"``), so a model that has learnt the family's skill
rather than N separate input→label maps can answer a held-out parameter zero-shot. Labels are balanced by
construction (half the examples of every task are positive). Inputs are short (≤ 20 bytes) so a byte-level
toy model sees whole prompts of ≤ ~64 bytes. Words come from the VADER lexicon (real human-rated words).

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

__all__ = ["LETTERS", "TOPICS", "task_rng"]

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


def _tasks(family: str, params: list, templates: Callable, make: Callable, n: int, seed: int,
           verbalizer=YES_NO) -> list[Task]:
    tasks = []
    for p in params:
        key = p if isinstance(p, tuple) else (p,)
        name = f"{family}:{'_'.join(map(str, key))}"
        rng = task_rng(seed, name)
        tasks.append(Task(name, family, tuple(templates(*key)), verbalizer,
                          _balanced(n, rng, lambda r, pos, key=key: make(r, pos, *key)), {"param": p}))
    return tasks


def _without(rng: random.Random, banned: str, lo: int = 4, hi: int = 7) -> str:
    return _word(rng, lo, hi, "".join(c for c in LETTERS if c not in banned))


def _put(word: str, c: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + c + word[i + 1:]


@register_family("contains_char")
def contains_char(n: int, seed: int) -> list[Task]:
    """Does the text contain the letter c? (26 tasks)"""
    return _tasks("contains_char", list(LETTERS),
                  lambda c: [f"Has '{c}'? {{text}}", f"Is there a {c} in {{text}}?",
                             f"{{text}} contains {c}? {{options}}"],
                  lambda r, pos, c: {"text": _put(_without(r, c), c, r) if pos else _without(r, c)}, n, seed)


@register_family("starts_with")
def starts_with(n: int, seed: int) -> list[Task]:
    """Does the text start with the letter c? (26 tasks)"""
    return _tasks("starts_with", list(LETTERS),
                  lambda c: [f"Starts with '{c}'? {{text}}", f"Is {{text}} starting with {c}?",
                             f"First letter {c}? {{text}} {{options}}"],
                  lambda r, pos, c: {"text": (c if pos else r.choice(LETTERS.replace(c, ""))) + _word(r, 3, 6)},
                  n, seed)


@register_family("ends_with")
def ends_with(n: int, seed: int) -> list[Task]:
    """Does the text end with the letter c? (26 tasks)"""
    return _tasks("ends_with", list(LETTERS),
                  lambda c: [f"Ends with '{c}'? {{text}}", f"Is {{text}} ending with {c}?",
                             f"Last letter {c}? {{text}} {{options}}"],
                  lambda r, pos, c: {"text": _word(r, 3, 6) + (c if pos else r.choice(LETTERS.replace(c, "")))},
                  n, seed)


@register_family("letter_at")
def letter_at(n: int, seed: int) -> list[Task]:
    """Is letter number i (1–3) the letter c? (78 tasks)"""
    def make(r, pos, c, i):
        w = _without(r, c, 4, 7)
        return {"text": w[:i - 1] + c + w[i:] if pos else w}
    return _tasks("letter_at", [(c, i) for c in LETTERS for i in (1, 2, 3)],
                  lambda c, i: [f"Letter {i} is '{c}'? {{text}}", f"Is letter {i} of {{text}} a {c}?",
                                f"{{text}}: position {i} = {c}? {{options}}"], make, n, seed)


def _with_count(r: random.Random, c: str, k: int, lo: int = 6, hi: int = 9) -> str:
    w = list(_without(r, c, lo, hi))
    for i in r.sample(range(len(w)), k):
        w[i] = c
    return "".join(w)


@register_family("count_at_least")
def count_at_least(n: int, seed: int) -> list[Task]:
    """Does the letter c occur at least k times (k = 2, 3)? (52 tasks)"""
    return _tasks("count_at_least", [(c, k) for c in LETTERS for k in (2, 3)],
                  lambda c, k: [f"At least {k} '{c}'? {{text}}", f"Does {{text}} have {k}+ {c}s?",
                                f"{{text}} has {c} {k} times or more? {{options}}"],
                  lambda r, pos, c, k: {"text": _with_count(r, c, r.randint(k, k + 1) if pos else r.randint(0, k - 1))},
                  n, seed)


@register_family("count_exactly")
def count_exactly(n: int, seed: int) -> list[Task]:
    """Does the letter c occur exactly k times (k = 1, 2)? (52 tasks)"""
    return _tasks("count_exactly", [(c, k) for c in LETTERS for k in (1, 2)],
                  lambda c, k: [f"Exactly {k} '{c}'? {{text}}", f"Is {c} in {{text}} {k} times?",
                                f"{{text}}: {c} count is {k}? {{options}}"],
                  lambda r, pos, c, k: {"text": _with_count(r, c, k if pos else r.choice([x for x in (0, 1, 2, 3)
                                                                                         if x != k]))},
                  n, seed)


@register_family("more_x_than_y")
def more_x_than_y(n: int, seed: int) -> list[Task]:
    """Does letter x occur more often than letter y? (40 letter pairs)"""
    rng = task_rng(seed, "more_x_than_y/pairs")
    pairs = sorted(rng.sample([(x, y) for x in LETTERS for y in LETTERS if x != y], 40))

    def make(r, pos, x, y):
        a, b = sorted(r.sample(range(4), 2), reverse=True)
        nx, ny = (a, b) if pos else (b, a)
        w = list(_without(r, x + y, 7, 9))
        idx = r.sample(range(len(w)), nx + ny)
        for j, i in enumerate(idx):
            w[i] = x if j < nx else y
        return {"text": "".join(w)}
    return _tasks("more_x_than_y", pairs,
                  lambda x, y: [f"More '{x}' than '{y}'? {{text}}", f"Has {{text}} more {x}s than {y}s?",
                                f"{{text}}: #{x} > #{y}? {{options}}"], make, n, seed)


@register_family("longer_than")
def longer_than(n: int, seed: int) -> list[Task]:
    """Is the text longer than k letters (k = 3 … 12)? (10 tasks)"""
    return _tasks("longer_than", list(range(3, 13)),
                  lambda k: [f"Longer than {k}? {{text}}", f"Has {{text}} over {k} letters?",
                             f"{{text}}: length > {k}? {{options}}"],
                  lambda r, pos, k: {"text": _word(r, k + 1, k + 4) if pos else _word(r, max(1, k - 3), k)}, n, seed)


@register_family("sum_greater")
def sum_greater(n: int, seed: int) -> list[Task]:
    """Is a + b (one-digit numbers) greater than k (k = 3 … 17)? (15 tasks)"""
    def make(r, pos, k):
        while True:
            a, b = r.randint(0, 9), r.randint(0, 9)
            if (a + b > k) == pos:
                return {"text": f"{a}+{b}"}
    return _tasks("sum_greater", list(range(3, 18)),
                  lambda k: [f"Is {{text}} > {k}?", f"{{text}} greater than {k}?",
                             f"Sum {{text}} above {k}? {{options}}"],
                  make, n, seed)


@register_family("divisible")
def divisible(n: int, seed: int) -> list[Task]:
    """Is the two-digit number divisible by d (d = 2 … 9)? (8 tasks)"""
    def make(r, pos, d):
        while True:
            x = r.randint(10, 99)
            if (x % d == 0) == pos:
                return {"text": str(x)}
    return _tasks("divisible", list(range(2, 10)),
                  lambda d: [f"Is {{text}} divisible by {d}?", f"{d} divides {{text}}?",
                             f"{{text}} mod {d} = 0? {{options}}"],
                  make, n, seed)


def _bigrams(seed: int, k: int) -> list[str]:
    rng = task_rng(seed, "contains_bigram/params")
    return sorted(rng.sample([x + y for x in LETTERS for y in LETTERS if x != y], k))


@register_family("contains_bigram")
def contains_bigram(n: int, seed: int) -> list[Task]:
    """Does the text contain the two-letter string xy? (80 tasks)"""
    def make(r, pos, xy):
        while True:
            w = _word(r, 5, 8)
            if pos:
                i = r.randrange(len(w) - 1)
                w = w[:i] + xy + w[i + 2:]
            if (xy in w) == pos:
                return {"text": w}
    return _tasks("contains_bigram", _bigrams(seed, 80),
                  lambda xy: [f"Has '{xy}'? {{text}}", f"Is {xy} in {{text}}?", f"{{text}} contains {xy}? {{options}}"],
                  make, n, seed)


@register_family("first_before")
def first_before(n: int, seed: int) -> list[Task]:
    """Does the text start with a letter before c in the alphabet (c = c … y)? (23 tasks)"""
    def make(r, pos, c):
        i = LETTERS.index(c)
        return {"text": r.choice(LETTERS[:i] if pos else LETTERS[i + 1:]) + _word(r, 3, 5)}
    return _tasks("first_before", list(LETTERS[2:25]),
                  lambda c: [f"Starts before '{c}'? {{text}}", f"Is {{text}} before {c} in abc order?",
                             f"{{text}} first letter < {c}? {{options}}"], make, n, seed)


def _lexicon_words() -> list[tuple[str, float]]:
    from kimi_mini.realdata import vader_lexicon
    return sorted((w, v) for w, v in vader_lexicon().items() if w.isalpha() and w.islower() and 3 <= len(w) <= 8)


@register_family("contains_word")
def contains_word(n: int, seed: int) -> list[Task]:
    """Is the word w among the three words? (80 tasks; words from the VADER lexicon)"""
    vocab = [w for w, _ in _lexicon_words() if len(w) <= 6]
    targets = sorted(task_rng(seed, "contains_word/params").sample(vocab, 80))

    def make(r, pos, w):
        words = r.sample([v for v in vocab if v != w], 3)
        if pos:
            words[r.randrange(3)] = w
        return {"text": " ".join(words)}
    return _tasks("contains_word", targets,
                  lambda w: [f"Has '{w}'? {{text}}", f"Is {w} in: {{text}}?", f"{{text}} says {w}? {{options}}"],
                  make, n, seed)


@register_family("topic")
def topic(n: int, seed: int) -> list[Task]:
    """Is one of the three words about the topic (8 hand-listed topics)?"""
    others = {t: [w for u, ws in TOPICS.items() if u != t for w in ws] + _FILLER for t in TOPICS}

    def make(r, pos, t):
        words = r.sample(others[t], 3)
        if pos:
            words[r.randrange(3)] = r.choice(TOPICS[t])
        return {"text": " ".join(words)}
    return _tasks("topic", sorted(TOPICS),
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
