"""Downloaded archives are pinned by sha256 and verified before anything is read from them; cache writers are
atomic and locked; cache keys follow the code (issue 29). No network: a tiny archive is pinned for the test."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile

import pytest

from kimi_mini import data, sources

PIN = ("tinypkg", "1.0", "wheel")
NAME = "tinypkg-1.0-py3-none-any.whl"


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tinypkg/data.txt", "hello\n")
    return buf.getvalue()


@pytest.fixture
def pinned(tmp_path, monkeypatch):
    """A pinned archive already in an isolated cache, as a data build leaves it."""
    monkeypatch.setenv("KIMI_MINI_CACHE", str(tmp_path))
    blob = _wheel()
    monkeypatch.setitem(sources.PINS, PIN, (NAME, hashlib.sha256(blob).hexdigest()))
    archive = tmp_path / "pypi" / "tinypkg-1.0-wheel" / NAME
    archive.parent.mkdir(parents=True)
    archive.write_bytes(blob)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    return archive


def test_a_pinned_archive_is_read(pinned):
    path = sources.package_file("tinypkg", "1.0", "tinypkg/data.txt")
    assert path.read_text() == "hello\n"
    assert sources.list_members("tinypkg", "1.0") == ["tinypkg/data.txt"]


def test_a_tampered_archive_is_refused_before_it_is_read(pinned, monkeypatch):
    blob = bytearray(pinned.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one byte changed
    pinned.write_bytes(bytes(blob))
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("the archive was opened"))
    with pytest.raises(ValueError) as err:
        sources.package_file("tinypkg", "1.0", "tinypkg/data.txt")
    msg = str(err.value)
    assert NAME in msg and "delete" in msg and "\n" not in msg
    assert not (pinned.parent / "files").exists()


def test_a_changed_extracted_copy_is_replaced_by_the_verified_member(pinned):
    path = sources.package_file("tinypkg", "1.0", "tinypkg/data.txt")
    path.write_text("tampered\n")
    assert sources.package_file("tinypkg", "1.0", "tinypkg/data.txt").read_text() == "hello\n"


def test_an_unpinned_package_is_refused():
    with pytest.raises(ValueError, match="package, version"):
        sources.distribution("tinypkg", "9.9")


def test_offline_a_missing_archive_is_one_line_naming_it_and_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("KIMI_MINI_CACHE", str(tmp_path))
    monkeypatch.setitem(sources.PINS, PIN, (NAME, "0" * 64))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "no network\n"))
    with pytest.raises(RuntimeError) as err:
        sources.distribution("tinypkg", "1.0")
    msg = str(err.value)
    assert "tinypkg==1.0" in msg and "make data" in msg and "\n" not in msg
    assert not list((tmp_path / "pypi").rglob("*.whl"))


def test_every_pin_is_a_sha256():
    for (_package, version, kind), (name, sha) in sources.PINS.items():
        assert kind in ("wheel", "sdist") and version in name and len(sha) == 64 and int(sha, 16) >= 0


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "entry.bin"
    with data.atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    with pytest.raises(RuntimeError), data.atomic_path(tmp_path / "other.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["entry.bin"]


def test_code_key_changes_with_the_code():
    def a():
        return 1

    def b():
        return 2

    assert data.code_key(a) == data.code_key(a) != data.code_key(b)


# --------------------------------------------------------------------------------------- code-keyed topic caches
def test_zeroprompt_checkpoint_follows_the_training_code(monkeypatch):
    import importlib

    pre = importlib.import_module("kimi_mini.prompts.pretrain")  # the package exports a pretrain() function
    cfg = pre.PretrainConfig()
    before = pre.checkpoint_path(cfg)
    assert pre.checkpoint_path(cfg) == before  # stable between calls (and processes: the key is a source hash)

    def prompted_batch(tasks, batch_size, generator, max_len):  # an "edit" of the batch builder
        raise AssertionError("never called")

    monkeypatch.setattr(pre, "prompted_batch", prompted_batch)
    assert pre.checkpoint_path(cfg) != before and pre.checkpoint_path(cfg).parent == before.parent


def test_storywars_model_key_follows_the_training_code(monkeypatch):
    from kimi_mini.storywars import train as sw

    args = (sw.TrainSpec(), {"t": []}, "instruct", 3, None)
    before = sw._key(*args)
    assert sw._key(*args) == before

    def collate(encoded, device="cpu"):  # an "edit" of the batch collation
        raise AssertionError("never called")

    monkeypatch.setattr(sw, "collate", collate)
    assert sw._key(*args) != before


def test_storywars_damaged_model_cache_is_one_value_error_naming_the_path(tmp_path):
    from kimi_mini.storywars.corpus import CorpusConfig, generate_corpus
    from kimi_mini.storywars.tasks import Task, make_examples
    from kimi_mini.storywars.train import TrainSpec, cached_model, instruct_renderer

    spec = TrainSpec(d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=768, steps=2, batch_size=2, lr=1e-3,
                     warmup=1)
    corpus = generate_corpus(CorpusConfig(n_stories=24, n_authors=4, seed=5))
    pools = {"t": make_examples(corpus, Task("temporal_inference", "fantasy"), "train", 4)}
    cached_model("x", pools, instruct_renderer, "instruct", spec, cache=tmp_path)
    (path,) = (tmp_path / "storywars").glob("x-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated, as a killed writer of an older format would leave it
    with pytest.raises(ValueError, match="path") as err:
        cached_model("x", pools, instruct_renderer, "instruct", spec, cache=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["empty folder", "garbage params", "no embeddings"])
def test_dmr_damaged_data_cache_is_one_value_error_naming_the_path(tmp_path, damage):
    from kimi_mini.rationale import data as dmr

    folder = tmp_path / "dmr-reviews-damaged"
    folder.mkdir()
    if damage != "empty folder":
        (folder / "params.json").write_text("{not json" if damage == "garbage params" else
                                            '{"target": "movie", "distractors": ["amazon"]}')
    with pytest.raises(ValueError, match="delete it") as err:
        dmr._load(folder)
    assert str(folder) in str(err.value)
