"""The 12 StoryWars task types, instantiated per genre, with instructions and recomputable ground truth.

Paper: *StoryWars* (Du & Chilton, ACL 2023, arXiv 2305.08152), §3–4: 7 understanding task types (genre
classification, authorship attribution, authorship verification, connectivity inference, temporal
inference, story scoring, story segmentation) and 5 generation task types (next-chapter generation,
conditional story generation, chapter infilling, global infilling, temporal ordering). A *task* is a
(task type, genre) pair, as the paper instantiates each type per genre; the fully-supervised, few-shot and
zero-shot task sets are disjoint (:func:`task_splits`). :data:`HELD_OUT` adds two task types of our own that
no model is trained on (the toy's zero-shot regime on unseen task *types*; see their builders).

Every example is text-to-text: an instruction, an input, the answer options (for generation types: the
true output among distractors, which is how candidate-ranking accuracy is scored) and the answer.
:func:`ground_truth` recomputes each answer from the story structure alone (story ids, chapter indices,
authors), independently of how the example was built.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from kimi_mini.checks import check_int
from kimi_mini.registry import Registry
from kimi_mini.storywars.corpus import Corpus, Story

__all__ = ["TaskType", "TASK_TYPES", "Example", "Task", "task_splits", "make_examples", "ground_truth",
           "render", "all_tasks", "story_view", "UNDERSTANDING", "GENERATION",
           "HELD_OUT"]

UNDERSTANDING = ("genre_classification", "authorship_attribution", "authorship_verification",
                 "connectivity_inference", "temporal_inference", "story_scoring", "story_segmentation")
GENERATION = ("next_chapter_generation", "conditional_story_generation", "chapter_infilling",
              "global_infilling", "temporal_ordering")


@dataclass(frozen=True)
class Example:
    """One text-to-text example: ``options`` holds every candidate answer (``answer`` among them); ``meta``
    holds the story ids / chapter indices the ground truth is recomputed from."""

    task: str
    type: str
    genre: str
    input: str
    options: tuple[str, ...]
    answer: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class TaskType:
    """A task type: its kind, its metric, the instruction template (``{genre}`` is filled in) and the
    builder ``build(corpus, genre, stories, rng) -> Example | None`` (None: this draw did not fit)."""

    name: str
    kind: str  # "understanding" | "generation"
    metric: str  # "f1" | "spearman" | "boundary" | "ranking"
    instruction: str
    build: Callable


TASK_TYPES: Registry[TaskType] = Registry("task type")
MAX_EXAMPLES = 10**6  # bounded by design (README)
MAX_MISSES = 10_000  # consecutive draws that did not fit before make_examples gives up


@dataclass(frozen=True)
class Task:
    type: str
    genre: str

    @property
    def name(self) -> str:
        return f"{self.type}/{self.genre}"


def _register(name, kind, metric, instruction):
    def deco(fn):
        TASK_TYPES.register(name)(TaskType(name, kind, metric, instruction, fn))
        return fn
    return deco


def _pair(a: str, b: str) -> str:
    return f"A: {a}\nB: {b}"


def _genre_stories(stories: list[Story], genre: str) -> list[Story]:
    return [s for s in stories if s.genre == genre]


# ------------------------------------------------------------------------- understanding task types
@_register("genre_classification", "understanding", "f1", "Is this a {genre} story?")
def _genre_classification(corpus, genre, stories, rng):
    positive = rng.random() < 0.5
    pool = [s for s in stories if (s.genre == genre) == positive]
    s = rng.choice(pool)
    return s.text, ("yes", "no"), "yes" if positive else "no", {"story": s.id}


@_register("authorship_attribution", "understanding", "f1",
           "Which candidate wrote this {genre} chapter?")
def _authorship_attribution(corpus, genre, stories, rng):
    s = rng.choice(_genre_stories(stories, genre))
    ch = rng.choice(s.chapters)
    others = sorted(a for a in corpus.authors if a != ch.author)
    cands = sorted(rng.sample(others, 3) + [ch.author])
    return (f"Candidates: {', '.join(cands)}\nChapter: {ch.text}", tuple(cands), ch.author,
            {"story": s.id, "chapter": ch.index})


@_register("authorship_verification", "understanding", "f1",
           "Did one author write both {genre} chapters A and B?")
def _authorship_verification(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    chapters = [(s.id, c) for s in pool for c in s.chapters]
    sa, a = rng.choice(chapters)
    same = rng.random() < 0.5
    cands = [(sid, c) for sid, c in chapters if (c.author == a.author) == same and (sid, c.index) != (sa, a.index)]
    if not cands:
        return None
    sb, b = rng.choice(cands)
    return (_pair(a.text, b.text), ("yes", "no"), "yes" if same else "no",
            {"a": (sa, a.index), "b": (sb, b.index)})


@_register("connectivity_inference", "understanding", "f1",
           "Does B come right after A in one {genre} story?")
def _connectivity_inference(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    s = rng.choice(pool)
    i = rng.randrange(len(s.chapters) - 1)
    a = s.chapters[i]
    kind = rng.choice(("next", "next", "next", "other story", "skip", "reversed"))
    if kind == "next":
        b = s.chapters[i + 1]
    elif kind == "other story":
        t = rng.choice([t for t in pool if t.id != s.id and len(t.chapters) > i + 1])
        b = t.chapters[i + 1]
    elif kind == "skip" and i + 2 < len(s.chapters):
        b = s.chapters[i + 2]
    else:
        a, b = s.chapters[i + 1], s.chapters[i]
    connected = b.story_id == a.story_id and b.index == a.index + 1
    return (_pair(a.text, b.text), ("yes", "no"), "yes" if kind == "next" else "no",
            {"a": (a.story_id, a.index), "b": (b.story_id, b.index), "connected": connected})


@_register("temporal_inference", "understanding", "f1",
           "In this {genre} story, does A happen before B?")
def _temporal_inference(corpus, genre, stories, rng):
    s = rng.choice(_genre_stories(stories, genre))
    i, j = rng.sample(range(len(s.chapters)), 2)
    return (_pair(s.chapters[i].text, s.chapters[j].text), ("yes", "no"), "yes" if i < j else "no",
            {"a": (s.id, i), "b": (s.id, j)})


@_register("story_scoring", "understanding", "spearman",
           "Rate the popularity of this {genre} story from 0 to 10.")
def _story_scoring(corpus, genre, stories, rng):
    s = rng.choice(_genre_stories(stories, genre))
    return s.text, tuple(str(k) for k in range(11)), str(s.score), {"story": s.id}


def _segmentation_options(n_sentences: int, max_boundaries: int) -> tuple[str, ...]:
    starts = range(2, n_sentences + 1)
    return tuple(" ".join(map(str, c)) for k in range(1, max_boundaries + 1) for c in itertools.combinations(starts, k))


@_register("story_segmentation", "understanding", "boundary",
           "At which sentences does a new author take over this {genre} story?")
def _story_segmentation(corpus, genre, stories, rng):
    s = rng.choice(_genre_stories(stories, genre))
    sentences = [x for c in s.chapters for x in c.sentences]
    numbered = " ".join(f"({k}) {x}" for k, x in enumerate(sentences, 1))
    starts, k = [], 1
    for c in s.chapters[:-1]:
        k += len(c.sentences)
        starts.append(k)
    options = _segmentation_options(len(sentences), corpus.config.chapters[1] - 1)
    return numbered, options, " ".join(map(str, starts)), {"story": s.id}


# ---------------------------------------------------------------------------- generation task types
def _distractors(pool: list[Story], s: Story, index: int, rng: random.Random, n: int = 3) -> list[str]:
    """Chapters at the same position of other stories of the genre: same plot stage, other cast or style."""
    others = [t.chapters[min(index, len(t.chapters) - 1)].text for t in pool if t.id != s.id]
    true = s.chapters[index].text
    picks = [x for x in dict.fromkeys(rng.sample(others, min(len(others), 4 * n))) if x != true][:n]
    return picks


def _candidates(true: str, distractors: list[str], rng: random.Random) -> tuple[str, ...]:
    opts = distractors + [true]
    rng.shuffle(opts)
    return tuple(opts)


@_register("next_chapter_generation", "generation", "ranking", "Write the next chapter of this {genre} story.")
def _next_chapter(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    s = rng.choice(pool)
    j = rng.randrange(1, len(s.chapters))
    context = " ".join(c.text for c in s.chapters[:j])
    true = s.chapters[j].text
    return context, _candidates(true, _distractors(pool, s, j, rng), rng), true, {"story": s.id, "chapter": j}


@_register("conditional_story_generation", "generation", "ranking",
           "Open a {genre} story with this hero and place.")
def _conditional(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    s = rng.choice(pool)
    others = [t for t in pool if (t.hero, t.place) != (s.hero, s.place)]
    distract = list(dict.fromkeys(t.chapters[0].text for t in rng.sample(others, min(len(others), 6))))[:3]
    true = s.chapters[0].text
    return (f"Hero: {s.hero}. Place: the {s.place}.", _candidates(true, distract, rng), true,
            {"story": s.id, "chapter": 0})


@_register("chapter_infilling", "generation", "ranking",
           "Write the {genre} chapter that goes between these two.")
def _chapter_infilling(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    s = rng.choice(pool)
    j = rng.randrange(1, len(s.chapters) - 1) if len(s.chapters) > 2 else None
    if j is None:
        return None
    true = s.chapters[j].text
    return (f"Before: {s.chapters[j - 1].text}\nAfter: {s.chapters[j + 1].text}",
            _candidates(true, _distractors(pool, s, j, rng), rng), true, {"story": s.id, "chapter": j})


@_register("global_infilling", "generation", "ranking", "Fill in the [gap] in this {genre} story.")
def _global_infilling(corpus, genre, stories, rng):
    pool = _genre_stories(stories, genre)
    s = rng.choice(pool)
    j = rng.randrange(len(s.chapters))
    text = " ".join("[gap]" if c.index == j else c.text for c in s.chapters)
    true = s.chapters[j].text
    return text, _candidates(true, _distractors(pool, s, j, rng), rng), true, {"story": s.id, "chapter": j}


@_register("temporal_ordering", "generation", "ranking",
           "Order these shuffled {genre} chapters in time.")
def _temporal_ordering(corpus, genre, stories, rng):
    s = rng.choice(_genre_stories(stories, genre))
    n = len(s.chapters)
    perm = list(range(n))
    while perm == sorted(perm):
        rng.shuffle(perm)
    labels = "ABCD"[:n]
    shown = "\n".join(f"[{labels[k]}] {s.chapters[perm[k]].text}" for k in range(n))
    order = sorted(range(n), key=lambda k: perm[k])  # the label shown at each true position
    options = tuple(" ".join(p) for p in itertools.permutations(labels))
    return shown, options, " ".join(labels[k] for k in order), {"story": s.id, "shown": tuple(perm)}


# ------------------------------------------------------------------------ held-out (zero-shot) task types
# Not among the paper's 12: task types that no model is ever trained on, for the zero-shot regime of the toy
# preset. Their instruction names the skill in the words genre classification is trained with ("a {genre}
# story") on an input format that type does not use (two chapters, and it names which one), and their label is
# independent of every trained type's label on the same input — so training priors can neither solve nor invert
# it, and only reading the instruction can help. Negatives are drawn from the genres other than the task's and
# other than the corpus's last genre (the few-shot genre of the type-level split, whose stories were only ever
# negatives in training): a model that cannot read which genre is asked then has P(yes | the chapter's genre) =
# 1/2 over the other genres' tasks, and cannot beat chance from the chapter's genre alone.
def _chapter_genre(corpus, genre, stories, rng, which):
    genres = corpus.config.genres
    negatives = set(genres) - {genre, genres[-1]} or set(genres) - {genre}
    positive = rng.random() < 0.5
    g = genre if positive else rng.choice(sorted(negatives))  # a genre first: story counts per genre differ
    pool = [t for t in stories if t.genre == g]
    if not pool:
        return None
    s = rng.choice(pool)
    other = rng.choice([t for t in stories if t.id != s.id])  # the other chapter: any genre, independent of the label
    asked, shown = rng.choice(s.chapters), rng.choice(other.chapters)
    a, b = (asked, shown) if which == "a" else (shown, asked)
    meta = {"a": (a.story_id, a.index), "b": (b.story_id, b.index)}
    return _pair(a.text, b.text), ("yes", "no"), "yes" if positive else "no", meta


@_register("chapter_a_genre", "understanding", "f1", "Is chapter A from a {genre} story?")
def _chapter_a_genre(corpus, genre, stories, rng):
    return _chapter_genre(corpus, genre, stories, rng, "a")


@_register("chapter_b_genre", "understanding", "f1", "Is chapter B from a {genre} story?")
def _chapter_b_genre(corpus, genre, stories, rng):
    return _chapter_genre(corpus, genre, stories, rng, "b")


HELD_OUT = ("chapter_a_genre", "chapter_b_genre")


# --------------------------------------------------------------------------------- tasks and splits
def _check_types_genres(types, genres) -> None:
    from kimi_mini.storywars.corpus import GENRES

    if isinstance(types, str) or not isinstance(types, (tuple, list)) or not types or \
            any(t not in TASK_TYPES for t in types):
        raise ValueError(f"types: expected a non-empty tuple of task types from {sorted(TASK_TYPES)}, got {types!r}")
    if isinstance(genres, str) or not isinstance(genres, (tuple, list)) or not genres or \
            any(g not in GENRES for g in genres) or len(set(genres)) != len(genres):
        raise ValueError(f"genres: expected a tuple of distinct genres from {sorted(GENRES)}, got {genres!r}")


def all_tasks(types: tuple[str, ...], genres: tuple[str, ...]) -> list[Task]:
    _check_types_genres(types, genres)
    return [Task(t, g) for t in types for g in genres]


def task_splits(types: tuple[str, ...], genres: tuple[str, ...]) -> dict[str, list[Task]]:
    """Disjoint task sets: for the i-th type, genre ``i mod G`` is zero-shot, genre ``i+1 mod G`` few-shot,
    the rest fully supervised — so every type is trained in some genres and every genre in some types."""
    _check_types_genres(types, genres)
    if len(genres) < 3:
        raise ValueError(f"genres: expected >= 3 genres (supervised, few-shot, zero-shot), got {genres!r}")
    splits: dict[str, list[Task]] = {"supervised": [], "few_shot": [], "zero_shot": []}
    for i, t in enumerate(types):
        zero, few = genres[i % len(genres)], genres[(i + 1) % len(genres)]
        for g in genres:
            splits["zero_shot" if g == zero else "few_shot" if g == few else "supervised"].append(Task(t, g))
    return splits


def make_examples(corpus: Corpus, task: Task, split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of ``task`` drawn from the ``split`` stories ("train" or "test"); deterministic."""
    check_int("n", n, 1, MAX_EXAMPLES)
    if not isinstance(task, Task):
        raise ValueError(f"task: expected a Task(type, genre), got {type(task).__name__}")
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if task.type not in TASK_TYPES:
        raise ValueError(f"task: unknown task type {task.type!r}; expected one of {sorted(TASK_TYPES)}")
    if task.genre not in corpus.config.genres:
        raise ValueError(f"task: genre {task.genre!r} is not in the corpus {corpus.config.genres}")
    ttype = TASK_TYPES.get(task.type)
    stories = corpus.split(split)
    rng = random.Random(f"{seed}/{task.name}/{split}")
    out, misses = [], 0
    while len(out) < n:
        built = ttype.build(corpus, task.genre, stories, rng) if stories else None
        if built is None:
            misses += 1  # a draw that did not fit; the corpus may not be able to satisfy the task at all
            if misses >= MAX_MISSES or not stories:
                raise ValueError(f"task: {task.name} found no fitting example in {MAX_MISSES if stories else 0} "
                                 f"draws from the {len(stories)} {split} stories (built {len(out)} of {n}); "
                                 f"expected a corpus with more {task.genre} stories in that split")
            continue
        misses = 0
        text, options, answer, meta = built
        out.append(Example(task.name, task.type, task.genre, text, tuple(options), answer, meta))
    return out


def _story_ids(meta: dict) -> set[int]:
    ids = {meta["story"]} if "story" in meta else set()
    return ids | {meta[k][0] for k in ("a", "b") if k in meta}


def story_view(corpus: Corpus, story_id: int, type_name: str, seed: int = 0, max_draws: int = 20_000) -> Example:
    """An example of ``type_name`` (in the story's genre) that reads story ``story_id``: the first of seeded draws
    from the whole corpus whose input uses that story (for pair types, either chapter) — what the task sees of it."""
    check_int("max_draws", max_draws, 1, MAX_EXAMPLES)
    if type_name not in TASK_TYPES:
        raise ValueError(f"type_name: expected one of {sorted(TASK_TYPES)}, got {type_name!r}")
    story = corpus.story(story_id)
    ttype = TASK_TYPES.get(type_name)
    rng = random.Random(f"{seed}/view/{story_id}/{type_name}")
    for _ in range(max_draws):
        built = ttype.build(corpus, story.genre, corpus.stories, rng)
        if built is not None and story_id in _story_ids(built[3]):
            text, options, answer, meta = built
            return Example(f"{type_name}/{story.genre}", type_name, story.genre, text, tuple(options), answer, meta)
    raise ValueError(f"story_id: no {type_name} example read story {story_id} in {max_draws} draws")


def ground_truth(corpus: Corpus, ex: Example) -> str:
    """The answer of ``ex`` recomputed from the story structure in ``ex.meta`` (not from how it was built)."""
    if not isinstance(ex, Example):
        raise ValueError(f"ex: expected an Example, got {type(ex).__name__}")
    m, st = ex.meta, corpus.story
    yes_no = {True: "yes", False: "no"}
    if ex.type == "genre_classification":
        return yes_no[st(m["story"]).genre == ex.genre]
    if ex.type == "authorship_attribution":
        return corpus.chapter(m["story"], m["chapter"]).author
    if ex.type == "authorship_verification":
        return yes_no[corpus.chapter(*m["a"]).author == corpus.chapter(*m["b"]).author]
    if ex.type == "connectivity_inference":
        return yes_no[m["a"][0] == m["b"][0] and m["b"][1] == m["a"][1] + 1]
    if ex.type == "temporal_inference":
        a, b = corpus.chapter(*m["a"]), corpus.chapter(*m["b"])
        return yes_no[(a.stage, a.index) < (b.stage, b.index)]
    if ex.type == "story_scoring":
        return str(st(m["story"]).score)
    if ex.type == "story_segmentation":
        lengths = [len(c.sentences) for c in st(m["story"]).chapters]
        return " ".join(str(1 + sum(lengths[:k])) for k in range(1, len(lengths)))
    if ex.type in ("chapter_a_genre", "chapter_b_genre"):
        return yes_no[st(m["a" if ex.type == "chapter_a_genre" else "b"][0]).genre == ex.genre]
    if ex.type == "temporal_ordering":
        shown = m["shown"]
        return " ".join("ABCD"[shown.index(i)] for i in range(len(shown)))
    if ex.type in GENERATION:
        return corpus.chapter(m["story"], m["chapter"]).text
    raise ValueError(f"ex: unknown task type {ex.type!r}")


def render(ex: Example, *, instruction: bool = True, task_id: int | None = None) -> tuple[str, str]:
    """``(prompt, target)`` of ``ex``: with ``instruction`` the natural-language instruction heads the
    prompt (InstructStory); without it a task-id token ``<task NN>`` does (the no-instruction baseline).
    The target is the answer with a leading space and a closing newline (the end-of-answer mark)."""
    if not isinstance(ex, Example):
        raise ValueError(f"ex: expected an Example, got {type(ex).__name__}")
    if instruction:
        head = TASK_TYPES.get(ex.type).instruction.format(genre=ex.genre)
    else:
        if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
            raise ValueError(f"task_id: expected an int >= 0 without an instruction, got {task_id!r}")
        head = f"<task {task_id:02d}>"
    return f"{head}\n{ex.input}\nAnswer:", f" {ex.answer}\n"
