"""Byte tokenizer and the stdlib corpus."""

import math

import pytest
import torch

from kimi_mini.data import ByteTokenizer, TokenData, is_validation_file, load_corpus, stdlib_files, unigram_entropy

TEXTS = ["", "hello", "naïve café — ∑ λx. x² 🚀🧪", "tabs\tand\nnewlines\r\n", "中文字符と日本語",
         "\x00\x7f\u0080\uffff"]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_byte_tokenizer_round_trips_exactly(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids, errors="strict") == text


def test_tokenizer_errors():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="text"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="text"):
        tok.encode("\ud800")  # a lone surrogate is not UTF-8 text
    with pytest.raises(ValueError, match="ids"):
        tok.decode([256])
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # a cut multi-byte sequence shows, not crashes


def test_stdlib_file_list_is_sorted_and_split_by_file():
    files = stdlib_files()
    assert files == sorted(files) and len(files) > 500
    assert not any("/test/" in f or f.startswith("test/") or "site-packages" in f for f in files)
    val = [f for f in files if is_validation_file(f)]
    assert 0.05 < len(val) / len(files) < 0.15


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_corpus_is_real_python_and_deterministic(corpus):
    assert len(corpus.train) > 5_000_000 and len(corpus.val) > 300_000
    text = bytes(corpus.val[:20000].tolist()).decode("utf-8", errors="replace")
    assert "def " in text and "import" in text
    again = load_corpus()  # from the cache: identical tokens
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)


def test_dataset_is_a_hf_datasetdict_with_disjoint_files():
    from kimi_mini.data import load_stdlib_dataset

    dd = load_stdlib_dataset()
    assert set(dd) == {"train", "validation"}
    train, val = set(dd["train"]["path"]), set(dd["validation"]["path"])
    assert train and val and not (train & val)
    assert all(is_validation_file(p) for p in val)


def test_corpus_dataset_has_named_splits_of_torch_byte_tokens():
    from kimi_mini.data import load_corpus_dataset, load_stdlib_dataset

    text, dd = load_stdlib_dataset(), load_corpus_dataset()
    assert set(dd) == {"train", "val"}
    for split, text_split in (("train", "train"), ("val", "validation")):
        assert dd[split]["path"][:] == text[text_split]["path"][:]  # one row per file, same order
    row = dd["val"][3]
    assert isinstance(row["input_ids"], torch.Tensor) and row["input_ids"].dtype == torch.uint8
    assert bytes(row["input_ids"].tolist()) == text["validation"][3]["text"].encode("utf-8")
    assert row["path"] == text["validation"][3]["path"]  # the other columns come along, unformatted
    again = load_corpus_dataset()  # the map is fingerprinted: read back from the same cache file, not rebuilt
    assert again["train"].cache_files == dd["train"].cache_files
    assert again["train"]._fingerprint == dd["train"]._fingerprint


def test_load_corpus_joins_the_files_with_a_blank_line_as_before(corpus):
    from kimi_mini.data import load_stdlib_dataset

    text = load_stdlib_dataset()
    for tokens, split in ((corpus.train, "train"), (corpus.val, "validation")):
        joined = "\n\n".join(text[split]["text"]).encode("utf-8")
        assert tokens.dtype == torch.uint8
        assert torch.equal(tokens, torch.frombuffer(bytearray(joined), dtype=torch.uint8))


def test_get_batch_targets_are_inputs_shifted_by_one(corpus):
    g = torch.Generator().manual_seed(0)
    x, y = corpus.get_batch("train", 4, 32, g)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="split"):
        corpus.get_batch("test", 4, 32)
    small = TokenData(torch.zeros(10, dtype=torch.uint8), torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="seq_len"):
        small.get_batch("val", 1, 32)


def test_unigram_entropy():
    assert unigram_entropy(torch.tensor([3, 3, 3])) == 0.0
    assert math.isclose(unigram_entropy(torch.tensor([0, 1, 2, 3])), math.log(4))
    with pytest.raises(ValueError, match="tokens"):
        unigram_entropy(torch.tensor([], dtype=torch.long))


def test_vader_dataset_has_one_named_split_per_domain_equal_to_the_raw_file():
    from kimi_mini import realdata

    dd = realdata.vader_dataset()
    assert list(dd) == ["movie", "amazon", "nyt", "tweet"]
    assert [dd[k].num_rows for k in dd] == [10605, 3708, 5190, 4200]
    raw = realdata._vader_member("tweets_GroundTruth.txt").splitlines()[0].split("\t")  # id, mean rating, sentence
    assert dd["tweet"][0] == {"text": raw[2].strip(), "rating": float(raw[1])}
    ratings = dd["movie"].with_format("torch")[:]["rating"]  # datasets' torch format casts float64 to float32
    assert ratings.dtype == torch.float32 and -4 <= float(ratings.min()) < 0 < float(ratings.max()) <= 4
    assert torch.equal(ratings, torch.tensor(dd["movie"]["rating"][:], dtype=torch.float32))
    assert realdata.vader_sentences("nyt")[7] == (dd["nyt"][7]["text"], dd["nyt"][7]["rating"])
