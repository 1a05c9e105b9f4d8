"""StoryWars in miniature (kimi_mini.storywars): generator ground truth, disjoint splits, metrics, batching."""

import itertools
import random
import statistics

import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import f1_score

from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.storywars.corpus import (
    CONNECTIVES,
    CorpusConfig,
    author_style_stats,
    generate_corpus,
    load_corpus,
    load_corpus_dataset,
)
from kimi_mini.storywars.evaluate import option_logprobs, score_type
from kimi_mini.storywars.metrics import boundaries_from_masses, boundary_similarity, macro_f1, rouge_l, spearman
from kimi_mini.storywars.tasks import (
    GENERATION,
    HELD_OUT,
    TASK_TYPES,
    UNDERSTANDING,
    Task,
    ground_truth,
    make_examples,
    render,
    story_view,
    task_splits,
)
from kimi_mini.storywars.train import answer_only_loss, collate, encode_example

SMALL = CorpusConfig(n_stories=120, n_authors=8, seed=3)


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(SMALL)


# ------------------------------------------------------------------------------------------ corpus
def test_corpus_is_deterministic_and_cached(corpus, tmp_path):
    again = generate_corpus(SMALL)
    assert [s.text for s in again.stories] == [s.text for s in corpus.stories]
    other = generate_corpus(CorpusConfig(n_stories=120, n_authors=8, seed=4))
    assert [s.text for s in other.stories] != [s.text for s in corpus.stories]
    first = load_corpus(SMALL, cache=tmp_path)
    assert [p.name for p in tmp_path.glob("storywars-*/authors.json")]
    second = load_corpus(SMALL, cache=tmp_path)  # read back from the saved DatasetDict
    assert second.stories == first.stories and second.authors == first.authors
    assert second.stories == corpus.stories and second.authors == corpus.authors and second.config == SMALL


def test_corpus_dataset_splits_rows_and_torch_format(corpus, tmp_path):
    dd = load_corpus_dataset(SMALL, cache=tmp_path)
    assert set(dd) == {"train", "test"}
    for split in ("train", "test"):
        stories = corpus.split(split)
        assert dd[split].num_rows == len(stories) > 0
        assert list(dd[split]["id"]) == [s.id for s in stories]
    row, story = dd["test"][3], corpus.split("test")[3]
    assert (row["genre"], row["hero"], row["place"], row["likes"], row["score"], row["text"]) == (
        story.genre, story.hero, story.place, story.likes, story.score, story.text)
    assert [c["author"] for c in row["chapters"]] == list(story.authors)
    assert [c["day"] for c in row["chapters"]] == [c.day for c in story.chapters]  # None where no explicit cue
    scores = dd["train"].with_format("torch", columns=["score"])[:]["score"]
    assert scores.dtype == torch.int64 and scores.tolist() == [s.score for s in corpus.split("train")]
    cached = load_corpus_dataset(SMALL, cache=tmp_path)  # read back, not generated again
    assert cached["train"].cache_files and list(cached["train"]["text"]) == list(dd["train"]["text"])


def test_story_structure(corpus):
    lo, hi = SMALL.chapters
    for s in corpus.stories:
        assert lo <= len(s.chapters) <= hi
        assert all(a != b for a, b in zip(s.authors, s.authors[1:], strict=False)), "consecutive chapters by one author"
        stages = [c.stage for c in s.chapters]
        assert stages == sorted(stages) and stages[0] == 0 and stages[-1] == 3
        days = [c.day for c in s.chapters if c.day is not None]
        assert days == sorted(set(days)), "explicit day cues must grow along the story"
        for c in s.chapters:
            assert (c.day is not None) == c.sentences[0].startswith(f"On day {c.day},")
            assert s.genre in corpus.authors[c.author].genres or len(
                [a for a in corpus.authors.values() if s.genre in a.genres]) < 2
        assert 0 <= s.score <= 10
    scores = [s.score for s in corpus.stories]
    assert min(scores) == 0 and max(scores) == 10


def test_popularity_follows_quality(corpus):
    # likes grow with vivid adjectives per sentence (the quality feature) beyond the noise
    rate = [sum(c.vivid for c in s.chapters) / sum(len(c.sentences) for c in s.chapters) for s in corpus.stories]
    rho = spearmanr(rate, [s.likes for s in corpus.stories]).statistic
    assert rho > 0.4


def test_author_styles_are_measurable(corpus):
    stats = author_style_stats(corpus)
    for name, row in stats.items():
        a = corpus.authors[name]
        favourite = max(range(4), key=lambda k: a.ending_p[k])
        measured = max(("'.'", "'!'", "'...'", "';'"), key=lambda e: row[f"ends {e}"])
        assert measured == f"'{['.', '!', '...', ';'][favourite]}'", name
        assert 1 <= row["clauses/sentence"] <= SMALL.max_clauses
    assert len(CONNECTIVES) == 5


def test_corpus_rejects_bad_config():
    with pytest.raises(ValueError, match="genres"):
        CorpusConfig(genres=("fantasy", "cyberpunk", "horror"))
    with pytest.raises(ValueError, match="chapters"):
        CorpusConfig(chapters=(1, 3))
    with pytest.raises(ValueError, match="n_stories"):
        CorpusConfig(n_stories=2)


# ------------------------------------------------------------------------------------------- tasks
def test_twelve_task_types():
    assert len(UNDERSTANDING) == 7 and len(GENERATION) == 5
    assert set(TASK_TYPES.names()) == set(UNDERSTANDING + GENERATION + HELD_OUT)  # + our two held-out types
    for name in UNDERSTANDING + GENERATION:
        assert "{genre}" in TASK_TYPES.get(name).instruction


@pytest.mark.parametrize("type_name", UNDERSTANDING + GENERATION + HELD_OUT)
def test_ground_truth_recomputed_from_structure(corpus, type_name):
    for genre in SMALL.genres[:3]:
        examples = make_examples(corpus, Task(type_name, genre), "train", 25, seed=1)
        for ex in examples:
            assert ex.answer in ex.options and len(set(ex.options)) == len(ex.options)
            assert ground_truth(corpus, ex) == ex.answer
        assert make_examples(corpus, Task(type_name, genre), "train", 25, seed=1) == examples


def test_held_out_labels_cannot_be_read_without_the_instruction(corpus):
    # chapter_a/b_genre: the label is the named chapter's genre; the other chapter's genre tells nothing, and over
    # the tasks of every genre but the last, a predictor blind to the asked genre gets P(yes | chapter genre) = 1/2
    genres = SMALL.genres[:-1]  # the zero-shot genres of the type-level split (regime_tasks)
    assert SMALL.genres[-1] not in genres
    for ttype, key, other in (("chapter_a_genre", "a", "b"), ("chapter_b_genre", "b", "a")):
        exs = [e for g in genres for e in make_examples(corpus, Task(ttype, g), "test", 300, seed=2)]
        assert 0.44 < sum(e.answer == "yes" for e in exs) / len(exs) < 0.56
        for g in genres:
            named = [e for e in exs if corpus.story(e.meta[key][0]).genre == g]
            assert 0.4 < sum(e.answer == "yes" for e in named) / len(named) < 0.6, (ttype, g)
        assert all(corpus.story(e.meta[key][0]).genre == e.genre for e in exs if e.answer == "yes")
        assert not any(corpus.story(e.meta[key][0]).genre == SMALL.genres[-1] for e in exs)
        same = [corpus.story(e.meta[other][0]).genre == e.genre for e in exs]
        p_yes = statistics.fmean(f for f, e in zip(same, exs, strict=True) if e.answer == "yes")
        p_no = statistics.fmean(f for f, e in zip(same, exs, strict=True) if e.answer == "no")
        assert abs(p_yes - p_no) < 0.08, (ttype, p_yes, p_no)
    for ttype in HELD_OUT:
        assert "{genre}" in TASK_TYPES.get(ttype).instruction and ttype not in UNDERSTANDING + GENERATION


@pytest.mark.parametrize("type_name", UNDERSTANDING + GENERATION + HELD_OUT)
def test_story_view_reads_the_story(corpus, type_name):
    ex = story_view(corpus, 7, type_name)
    assert ground_truth(corpus, ex) == ex.answer and ex.genre == corpus.story(7).genre
    assert 7 in {ex.meta.get("story"), ex.meta.get("a", (None,))[0], ex.meta.get("b", (None,))[0]}
    with pytest.raises(ValueError, match="type_name"):
        story_view(corpus, 7, "poetry")


def test_story_view_figure_shows_the_chapters_and_the_tasks_label(corpus):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kimi_mini.storywars.plots import story_view_figure

    fig = story_view_figure(corpus, 7, "temporal_inference")
    texts = [t.get_text() for t in fig.axes[0].texts]
    story, ex = corpus.story(7), story_view(corpus, 7, "temporal_inference")
    shown = " ".join(" ".join(t.split()) for t in texts)
    assert all(" ".join(ch.text.split()) in shown for ch in story.chapters)
    assert len(texts) == len(story.chapters) + 1 and f"label: {ex.answer}" in texts[-1]
    assert str(story.id) in fig.axes[0].get_title()
    plt.close(fig)


def test_ground_truth_catches_a_wrong_label(corpus):
    ex = make_examples(corpus, Task("temporal_inference", "horror"), "train", 1)[0]
    flipped = type(ex)(ex.task, ex.type, ex.genre, ex.input, ex.options, "no" if ex.answer == "yes" else "yes",
                       ex.meta)
    assert ground_truth(corpus, flipped) != flipped.answer


@pytest.mark.parametrize("type_name", ["genre_classification", "authorship_verification", "connectivity_inference",
                                       "temporal_inference"])
def test_binary_labels_are_balanced(corpus, type_name):
    answers = [ex.answer for ex in make_examples(corpus, Task(type_name, "fantasy"), "train", 200)]
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_examples_come_from_their_split_and_genre(corpus):
    test_ids = {s.id for s in corpus.split("test")}
    for ex in make_examples(corpus, Task("next_chapter_generation", "western"), "test", 30):
        assert ex.meta["story"] in test_ids and corpus.story(ex.meta["story"]).genre == "western"
    train_ids = {s.id for s in corpus.split("train")}
    assert train_ids.isdisjoint(test_ids) and train_ids | test_ids == set(range(len(corpus.stories)))


def test_splits_are_disjoint_and_cover_every_type():
    types = UNDERSTANDING + GENERATION
    splits = task_splits(types, SMALL.genres)
    names = {k: {t.name for t in v} for k, v in splits.items()}
    for a, b in itertools.combinations(names, 2):
        assert names[a].isdisjoint(names[b]), (a, b)
    assert sum(map(len, names.values())) == len(types) * len(SMALL.genres)
    for t in types:
        for regime in splits:
            assert any(task.type == t for task in splits[regime]), (t, regime)
    with pytest.raises(ValueError, match="task type"):
        task_splits(("not_a_type",), SMALL.genres)


def test_render_instruction_vs_task_id(corpus):
    ex = make_examples(corpus, Task("authorship_verification", "mystery"), "train", 1)[0]
    prompt, target = render(ex)
    assert prompt.startswith("Did one author write both mystery chapters") and ex.input in prompt
    assert target == f" {ex.answer}\n"
    bare, _ = render(ex, instruction=False, task_id=7)
    assert bare.startswith("<task 07>\n") and "author" not in bare.split("\n")[0]
    with pytest.raises(ValueError, match="task_id"):
        render(ex, instruction=False)


# ----------------------------------------------------------------------------------------- metrics
def test_boundary_similarity_hand_cases():
    # Fournier (2013)'s worked cases, segmentations as segment sizes
    b = boundaries_from_masses
    assert boundary_similarity(b([2, 3, 6]), b([5, 6])) == pytest.approx(0.5)  # one full miss
    assert boundary_similarity(b([2, 3, 6]), b([2, 3, 3, 3])) == pytest.approx(2 / 3)  # one extra boundary
    assert boundary_similarity(b([2, 3, 6]), b([2, 2, 7])) == pytest.approx(0.75)  # a near miss costs 1/2
    assert boundary_similarity(b([2, 3, 6]), b([1, 1, 3, 1, 5])) == pytest.approx(0.5)  # clustered extras
    assert boundary_similarity([3, 7], [3, 7]) == 1.0 and boundary_similarity([], []) == 1.0
    assert boundary_similarity([3], []) == 0.0
    assert boundary_similarity([4], [6], n_t=3) == pytest.approx(1 - (2 / 3))  # near miss of span 2
    with pytest.raises(ValueError, match="reference"):
        boundary_similarity([5, 2], [2])
    with pytest.raises(ValueError, match="n_t"):
        boundary_similarity([2], [2], n_t=1)


def test_spearman_matches_scipy_with_ties():
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.randint(0, 5) for _ in range(15)]
        y = [rng.random() + 0.3 * v for v in x]
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="x, y"):
        spearman([1, 2], [1])


def test_macro_f1_matches_sklearn():
    rng = random.Random(1)
    for _ in range(20):
        gold = [rng.choice("abc") for _ in range(30)]
        pred = [rng.choice("abcd") for _ in range(30)]
        assert macro_f1(gold, pred) == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_rouge_l_hand_cases():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS("a b c d", "a c e") = "a c": P = 2/4, R = 2/3 → F = 4/7
    assert rouge_l("a b c d", "a c e") == pytest.approx(4 / 7)
    assert rouge_l("x y", "a b") == 0.0 and rouge_l("", "a") == 0.0
    assert rouge_l("The Cat!", "the cat") == 1.0


def test_score_type_segmentation_and_scoring(corpus):
    exs = make_examples(corpus, Task("story_segmentation", "fantasy"), "test", 5)
    assert score_type("story_segmentation", exs, [ex.answer for ex in exs]) == pytest.approx(100.0)
    sc = make_examples(corpus, Task("story_scoring", "fantasy"), "test", 20)
    gold = [int(ex.answer) for ex in sc]
    assert score_type("story_scoring", sc, [-g for g in gold]) == pytest.approx(-100 if len(set(gold)) > 1 else 0)


# -------------------------------------------------------------------------------- batching/scoring
def test_answer_only_batches_mask_the_prompt():
    enc = [encode_example("Q: hi\nAnswer:", " yes\n", 64), encode_example("Q: longer one\nAnswer:", " no\n", 64)]
    x, y = collate(enc)
    for i, (ids, n_prompt) in enumerate(enc):
        scored = (y[i] != -100).nonzero().flatten().tolist()
        assert scored == list(range(n_prompt - 1, len(ids) - 1))
        assert bytes(y[i, scored].tolist()).decode() == (" yes\n", " no\n")[i]
    long_ids, n = encode_example("x" * 100, " yes\n", 32)
    assert len(long_ids) == 32 and n == 27


def test_option_logprobs_equal_a_direct_sum():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64)).eval()
    prompts, options = ["Is it? ", "Another prompt\nAnswer:"], [("yes", "no"), ("a", "bb", "ccc")]
    got = option_logprobs(model, prompts, options, batch_size=2)
    for p, opts, scores in zip(prompts, options, got, strict=True):
        for o, s in zip(opts, scores, strict=True):
            ids = list(p.encode()) + list(f" {o}\n".encode())
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids]))[0][0], -1)
            direct = sum(float(logp[t - 1, ids[t]]) for t in range(len(p.encode()), len(ids)))
            assert float(s) == pytest.approx(direct, abs=1e-4)
    means = option_logprobs(model, prompts[:1], options[:1], reduction="mean")[0]
    assert float(means[0]) == pytest.approx(float(got[0][0]) / 5, abs=1e-5)


def test_answer_only_loss_ignores_prompt_tokens():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64))
    x, y = collate([encode_example("abc\nAnswer:", " yes\n", 64)])
    loss = answer_only_loss(model, x, y).detach()
    assert float(loss) != pytest.approx(float(model(x, x.roll(-1, 1))[1].detach()), abs=1e-3)
    logits = model(x)[0][0].detach()
    scored = (y[0] != -100).nonzero().flatten()
    manual = torch.nn.functional.cross_entropy(logits[scored], y[0, scored])
    assert float(loss) == pytest.approx(float(manual), abs=1e-6)
