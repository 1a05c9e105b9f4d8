"""A collaborative-story generator with ground truth for every StoryWars task.

Paper: *StoryWars: A Dataset and Instruction Tuning Baselines for Collaborative Story Understanding and
Generation* — Du & Chilton, ACL 2023 (arXiv 2305.08152). The real corpus (40,135 stories by 9,494
authors) cannot be had offline, so this module writes stories whose every hidden variable is known:

- **genres** with their own cast, places, objects and a four-stage plot template
  (setup → trouble → struggle → ending), each stage a few clause templates;
- **authors** with measurable styles: a preferred connective (function word between clauses), a
  punctuation habit (sentence ends), a sentence-length distribution (1 … ``max_clauses`` clauses per sentence), a
  favourite phrase, and a skill — the rate of vivid adjectives;
- **stories** as chains of chapters, each chapter by one author and never two consecutive chapters by
  the same author; chapter ``j`` of ``n`` tells plot stage ``round(j·3/(n-1))`` (an *implicit*
  temporal cue) and, with probability ``explicit_p``, opens with ``"On day d,"`` where ``d`` grows along
  the story (an *explicit* cue);
- **popularity**: ``log likes = 2 + 1.5·vivid_rate + 0.25·n_chapters + 0.35·ε``, ``ε ~ N(0, 1)``,
  normalised to an integer score 0–10 over the corpus (the paper normalises likes to 0–10).

Everything is drawn from one ``random.Random(seed)``; :func:`load_corpus_dataset` saves the corpus as a
``datasets.DatasetDict`` (splits ``train`` / ``test``, one row per story) under ``data/cache/``, keyed by a hash of
its configuration and of the generator's code, and :func:`load_corpus` reads the :class:`Corpus` back from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from kimi_mini.checks import check_int, check_number
from kimi_mini.data import cache_dir, code_key, save_atomically

__all__ = ["GENRES", "CONNECTIVES", "ENDINGS", "PHRASES", "Genre", "Author", "Chapter", "Story", "Corpus",
           "CorpusConfig", "generate_corpus", "load_corpus", "load_corpus_dataset", "author_style_stats", "STAGES"]

STAGES = ("setup", "trouble", "struggle", "ending")
MAX_STORIES = 10**6  # bounded by design (README): a typo cannot make the generator run for hours
MAX_SENTENCES = 50


@dataclass(frozen=True)
class Genre:
    """A genre: its cast, places, objects, vivid adjectives and four lists of clause templates (one per plot
    stage, in story order). Templates use ``{hero}``, ``{place}`` and ``{thing}``."""

    name: str
    heroes: tuple[str, ...]
    places: tuple[str, ...]
    things: tuple[str, ...]
    vivid: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]


GENRES: dict[str, Genre] = {g.name: g for g in (
    Genre("fantasy", ("Elra", "Tovin", "Maeve"), ("tower", "forest", "castle"), ("sword", "rune", "crown"),
          ("ancient", "enchanted"),
          (("{hero} guarded the {place}", "{hero} found the {thing}"),
           ("a dragon burned the {place}", "a witch stole the {thing}"),
           ("{hero} raised the {thing}", "{hero} fought the beast"),
           ("the realm was saved", "{hero} was crowned"))),
    Genre("scifi", ("Kade", "Nova", "Rix"), ("station", "ship", "colony"), ("laser", "drone", "probe"),
          ("chrome", "quantum"),
          (("{hero} docked at the {place}", "{hero} built the {thing}"),
           ("the {place} lost power", "aliens hacked the {thing}"),
           ("{hero} rerouted the {thing}", "{hero} jumped to warp"),
           ("the crew got home", "{hero} sent a signal"))),
    Genre("mystery", ("Poll", "Hale", "Iris"), ("manor", "harbor", "library"), ("letter", "key", "ledger"),
          ("dusty", "hidden"),
          (("{hero} stayed at the {place}", "{hero} read the {thing}"),
           ("a body lay in the {place}", "the {thing} went missing"),
           ("{hero} traced the {thing}", "{hero} questioned the butler"),
           ("the killer confessed", "{hero} closed the case"))),
    Genre("romance", ("Lena", "Marco", "Ada"), ("cafe", "garden", "ballroom"), ("ring", "rose", "poem"),
          ("tender", "golden"),
          (("{hero} worked at the {place}", "{hero} wrote the {thing}"),
           ("a rival came to the {place}", "{hero} lost the {thing}"),
           ("{hero} sent the {thing}", "{hero} waited in the rain"),
           ("they kissed at last", "{hero} said yes"))),
    Genre("horror", ("Silas", "Wren", "Otto"), ("crypt", "asylum", "cellar"), ("doll", "candle", "mirror"),
          ("rotten", "pale"),
          (("{hero} moved into the {place}", "{hero} bought the {thing}"),
           ("something scratched in the {place}", "the {thing} began to bleed"),
           ("{hero} smashed the {thing}", "{hero} ran from the ghost"),
           ("the screams stopped", "{hero} was gone"))),
    Genre("western", ("Cody", "Belle", "Hank"), ("saloon", "ranch", "canyon"), ("pistol", "horse", "badge"),
          ("dusty", "sunburnt"),
          (("{hero} rode into the {place}", "{hero} won the {thing}"),
           ("bandits robbed the {place}", "an outlaw took the {thing}"),
           ("{hero} drew the {thing}", "{hero} tracked the gang"),
           ("the town was safe", "{hero} rode away"))),
)}

CONNECTIVES = (" and ", ", so ", ", but ", ", then ", " while ")  # function words between clauses
ENDINGS = (".", "!", "...", ";")  # punctuation habits at the end of a sentence
PHRASES = ("Truly, ", "Alas, ", "Of course, ", "Oddly, ", "In truth, ", "At once, ", "Sadly, ", "Lo, ")
AUTHOR_NAMES = ("Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hope", "Ike", "Jo", "Kit", "Lou",
                "Max", "Ned", "Ola", "Pip", "Quin", "Rae", "Sol", "Tam", "Uma", "Vic", "Wes", "Yul")


@dataclass(frozen=True)
class Author:
    """One writer's style: probabilities over :data:`CONNECTIVES` / :data:`ENDINGS`, over 1 … max_clauses clauses per
    sentence, the favourite phrase and how often it is used, the vivid-adjective rate (skill), the genres
    written in."""

    name: str
    connective_p: tuple[float, ...]
    ending_p: tuple[float, ...]
    clauses_p: tuple[float, ...]
    phrase: str
    phrase_p: float
    vivid_rate: float
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Chapter:
    """One chapter: written by ``author``, the ``index``-th of story ``story_id``, telling plot ``stage``;
    ``day`` is the explicit temporal cue (None when the chapter has none)."""

    story_id: int
    index: int
    author: str
    stage: int
    day: int | None
    sentences: tuple[str, ...]
    vivid: int

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass(frozen=True)
class Story:
    """A chain of chapters. ``hero``/``place`` are the premise; ``likes`` and ``score`` (0–10) its popularity;
    ``split`` is ``"train"`` or ``"test"`` (by story, so no test story is ever trained on)."""

    id: int
    genre: str
    hero: str
    place: str
    chapters: tuple[Chapter, ...]
    likes: int
    score: int
    split: str

    @property
    def text(self) -> str:
        return " ".join(c.text for c in self.chapters)

    @property
    def authors(self) -> tuple[str, ...]:
        return tuple(c.author for c in self.chapters)


@dataclass(frozen=True)
class CorpusConfig:
    """The generator's parameters (everything that decides the corpus; its hash names the cache file)."""

    n_stories: int = 600
    n_authors: int = 12
    genres: tuple[str, ...] = ("fantasy", "scifi", "mystery", "romance", "horror", "western")
    chapters: tuple[int, int] = (3, 4)  # min, max chapters per story
    sentences: tuple[int, int] = (1, 2)  # min, max sentences per chapter
    max_clauses: int = 3  # clauses per sentence: 1 .. max_clauses (each author prefers one length)
    explicit_p: float = 0.5  # chance that a chapter carries "On day d,"
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_stories", self.n_stories, 8, MAX_STORIES)
        check_int("n_authors", self.n_authors, 4, len(AUTHOR_NAMES))
        if isinstance(self.genres, str) or not isinstance(self.genres, (tuple, list)):
            raise ValueError(f"genres: expected a tuple of genre names, got {self.genres!r}")
        unknown = [g for g in self.genres if g not in GENRES]
        if len(self.genres) < 3 or unknown or len(set(self.genres)) != len(self.genres):
            raise ValueError(f"genres: expected >= 3 distinct names from {sorted(GENRES)}, got {self.genres!r}")
        for name, lo_min, hi_max in (("chapters", 2, len(STAGES)), ("sentences", 1, MAX_SENTENCES)):
            pair = getattr(self, name)
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in pair)
            if not ok or not lo_min <= pair[0] <= pair[1] <= hi_max:
                raise ValueError(f"{name}: expected two ints {lo_min} <= min <= max <= {hi_max}, got {pair!r}")
        check_int("max_clauses", self.max_clauses, 1, 4)
        for name in ("explicit_p", "test_fraction"):
            check_number(name, getattr(self, name), 0, 1, hi_open=True)
        check_int("seed", self.seed)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Corpus:
    config: CorpusConfig
    authors: dict[str, Author]
    stories: list[Story] = field(default_factory=list)

    def split(self, name: str) -> list[Story]:
        if name not in ("train", "test"):
            raise ValueError(f"name: expected 'train' or 'test', got {name!r}")
        return [s for s in self.stories if s.split == name]

    def story(self, story_id: int) -> Story:
        check_int("story_id", story_id, 0, len(self.stories) - 1)
        return self.stories[story_id]

    def chapter(self, story_id: int, index: int) -> Chapter:
        chapters = self.story(story_id).chapters
        check_int("index", index, 0, len(chapters) - 1)
        return chapters[index]


def _peaked(rng: random.Random, n: int, peak: float) -> tuple[float, ...]:
    """A distribution over n choices with mass ``peak`` on one random choice, the rest spread unevenly."""
    top = rng.randrange(n)
    rest = [rng.random() + 0.1 for _ in range(n - 1)]
    rest = [(1 - peak) * r / sum(rest) for r in rest]
    rest.insert(top, peak)
    return tuple(rest)


def _make_authors(cfg: CorpusConfig, rng: random.Random) -> dict[str, Author]:
    authors = {}
    for i in range(cfg.n_authors):
        clause_mean = rng.randrange(cfg.max_clauses)  # short, medium or long sentences
        clauses = [0.3 / max(1, cfg.max_clauses - 1)] * cfg.max_clauses if cfg.max_clauses > 1 else [0.0]
        clauses[clause_mean] = 0.7 if cfg.max_clauses > 1 else 1.0
        genres = tuple(rng.sample(cfg.genres, 3))
        authors[AUTHOR_NAMES[i]] = Author(
            name=AUTHOR_NAMES[i], connective_p=_peaked(rng, len(CONNECTIVES), 0.75),
            ending_p=_peaked(rng, len(ENDINGS), 0.8), clauses_p=tuple(clauses),
            phrase=PHRASES[i % len(PHRASES)], phrase_p=rng.uniform(0.3, 0.7),
            vivid_rate=rng.uniform(0.0, 0.9), genres=genres)
    return authors


def _sentence(rng: random.Random, genre: Genre, author: Author, stage: int, hero: str, place: str,
              lead: str) -> tuple[str, int]:
    n_clauses = rng.choices(range(1, len(author.clauses_p) + 1), author.clauses_p)[0]
    vivid = 0
    clauses = []
    for _ in range(n_clauses):
        thing = rng.choice(genre.things)
        if rng.random() < author.vivid_rate:
            thing, vivid = f"{rng.choice(genre.vivid)} {thing}", vivid + 1
        clauses.append(rng.choice(genre.stages[stage]).format(hero=hero, place=place, thing=thing))
    body = clauses[0]
    for clause in clauses[1:]:
        body += rng.choices(CONNECTIVES, author.connective_p)[0] + clause
    if rng.random() < author.phrase_p:
        lead = lead + author.phrase
    text = lead + body
    text = text[0].upper() + text[1:]
    return text + rng.choices(ENDINGS, author.ending_p)[0], vivid


def generate_corpus(config: CorpusConfig | None = None) -> Corpus:
    """Generate the corpus of ``config`` (default :class:`CorpusConfig`); deterministic in ``config.seed``."""
    if config is not None and not isinstance(config, CorpusConfig):
        raise ValueError(f"config: expected a CorpusConfig or None, got {type(config).__name__}")
    cfg = config or CorpusConfig()
    rng = random.Random(cfg.seed)
    authors = _make_authors(cfg, rng)
    by_genre = {g: [a for a in authors.values() if g in a.genres] for g in cfg.genres}
    for g, pool in by_genre.items():  # every genre needs >= 2 authors to alternate chapters
        if len(pool) < 2:
            by_genre[g] = list(authors.values())
    raw = []
    for sid in range(cfg.n_stories):
        genre = GENRES[cfg.genres[sid % len(cfg.genres)]]
        hero, place = rng.choice(genre.heroes), rng.choice(genre.places)
        n = rng.randint(*cfg.chapters)
        day = 1
        chapters, prev = [], None
        for j in range(n):
            author = rng.choice([a for a in by_genre[genre.name] if a.name != prev])
            stage = round(j * (len(STAGES) - 1) / (n - 1))
            day += rng.randint(1, 3) if j else 0
            explicit = rng.random() < cfg.explicit_p
            sentences, vivid = [], 0
            for k in range(rng.randint(*cfg.sentences)):
                lead = f"on day {day}, " if explicit and k == 0 else ""
                s, v = _sentence(rng, genre, author, stage, hero, place, lead)
                sentences.append(s)
                vivid += v
            chapters.append(Chapter(sid, j, author.name, stage, day if explicit else None, tuple(sentences), vivid))
            prev = author.name
        n_clauses = sum(len(c.sentences) for c in chapters)
        vivid_rate = sum(c.vivid for c in chapters) / n_clauses
        log_likes = 2 + 1.5 * vivid_rate + 0.25 * n + 0.35 * rng.gauss(0, 1)
        split = "test" if rng.random() < cfg.test_fraction else "train"
        raw.append((sid, genre.name, hero, place, tuple(chapters), log_likes, split))
    lo, hi = min(r[5] for r in raw), max(r[5] for r in raw)
    stories = [Story(sid, g, hero, place, chs, int(round(math.exp(ll))), int(round(10 * (ll - lo) / (hi - lo))), sp)
               for sid, g, hero, place, chs, ll, sp in raw]
    return Corpus(cfg, authors, stories)


def _check_config(config) -> CorpusConfig:
    if config is not None and not isinstance(config, CorpusConfig):
        raise ValueError(f"config: expected a CorpusConfig or None, got {type(config).__name__}")
    return config or CorpusConfig()


def _dataset_path(cfg: CorpusConfig, cache: Path | None) -> Path:
    return (cache or cache_dir()) / f"storywars-{cfg.key()}-{code_key(generate_corpus, _sentence, _make_authors)}"


def _story_features():
    import datasets

    v = datasets.Value
    chapter = {"author": v("string"), "stage": v("int64"), "day": v("int64"),
               "sentences": datasets.List(v("string")), "vivid": v("int64")}
    return datasets.Features({"id": v("int64"), "genre": v("string"), "hero": v("string"), "place": v("string"),
                              "likes": v("int64"), "score": v("int64"), "text": v("string"),
                              "chapters": datasets.List(chapter)})


def _story_row(s: Story) -> dict:
    chapters = [{"author": c.author, "stage": c.stage, "day": c.day, "sentences": list(c.sentences), "vivid": c.vivid}
                for c in s.chapters]
    return {"id": s.id, "genre": s.genre, "hero": s.hero, "place": s.place, "likes": s.likes, "score": s.score,
            "text": s.text, "chapters": chapters}


def _story_from_row(row: dict, split: str) -> Story:
    chapters = tuple(Chapter(row["id"], j, c["author"], c["stage"], c["day"], tuple(c["sentences"]), c["vivid"])
                     for j, c in enumerate(row["chapters"]))
    return Story(row["id"], row["genre"], row["hero"], row["place"], chapters, row["likes"], row["score"], split)


def load_corpus_dataset(config: CorpusConfig | None = None, cache: Path | None = None):
    """The corpus of ``config`` as a ``datasets.DatasetDict`` with the splits ``train`` and ``test`` (by story,
    as :attr:`Story.split` says), one row per story in id order: ``id``, ``genre``, ``hero``, ``place``,
    ``likes``, ``score`` (0–10), ``text`` (the chapters joined) and ``chapters`` (a list of
    ``{author, stage, day, sentences, vivid}``; ``day`` is None when the chapter has no explicit cue).

    Generated once and saved under ``data/cache/storywars-<config hash>-<code hash>/`` (the generator's code is
    part of the key, so an edited generator never reads a stale corpus), with the authors' styles in
    ``authors.json`` beside the splits; a later call only reads it back. ``dd.with_format("torch",
    columns=["score"])`` gives the popularity targets as an int64 tensor.
    """
    import datasets

    cfg = _check_config(config)
    datasets.disable_progress_bars()
    target = _dataset_path(cfg, cache)
    if not target.exists():
        corpus = generate_corpus(cfg)
        features = _story_features()
        dd = datasets.DatasetDict({
            split: datasets.Dataset.from_list([_story_row(s) for s in corpus.split(split)], features=features)
            for split in ("train", "test")})
        authors = json.dumps([dataclasses.asdict(a) for a in corpus.authors.values()])
        target.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(dd, target, files={"authors.json": authors})
    return datasets.load_from_disk(str(target))


def load_corpus(config: CorpusConfig | None = None, cache: Path | None = None) -> Corpus:
    """The corpus of ``config`` as :class:`Corpus` objects, read from :func:`load_corpus_dataset` (its two splits
    and ``authors.json``): equal, field for field, to :func:`generate_corpus` of the same config."""
    cfg = _check_config(config)
    dd = load_corpus_dataset(cfg, cache)
    path = _dataset_path(cfg, cache)
    try:
        authors = {a["name"]: Author(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})
                   for a in json.loads((path / "authors.json").read_text())}
        stories = [_story_from_row(row, split) for split in ("train", "test") for row in dd[split]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cache: {path} is damaged ({type(exc).__name__}); delete it and it will be "
                         f"generated again") from None
    return Corpus(cfg, authors, sorted(stories, key=lambda s: s.id))


def author_style_stats(corpus: Corpus) -> dict[str, dict[str, float]]:
    """Measured style of each author over the corpus (what the generator's parameters produce): clauses
    per sentence, the share of each ending and connective, the favourite-phrase rate, vivid adjectives
    per sentence."""
    if not isinstance(corpus, Corpus):
        raise ValueError(f"corpus: expected a Corpus, got {type(corpus).__name__}")
    stats: dict[str, dict[str, float]] = {}
    for name in corpus.authors:
        sents = [s for st in corpus.stories for c in st.chapters if c.author == name for s in c.sentences]
        vivid = sum(c.vivid for st in corpus.stories for c in st.chapters if c.author == name)
        if not sents:
            continue
        row = {"sentences": float(len(sents)),
               "clauses/sentence": sum(1 + sum(s.count(k) for k in CONNECTIVES) for s in sents) / len(sents)}
        for e in ENDINGS:
            row[f"ends '{e}'"] = sum(s.endswith(e) and not (e == "." and s.endswith("...")) for s in sents) / len(sents)
        row["phrase"] = sum(corpus.authors[name].phrase.strip() in s for s in sents) / len(sents)
        row["vivid/sentence"] = vivid / len(sents)
        stats[name] = row
    return stats
