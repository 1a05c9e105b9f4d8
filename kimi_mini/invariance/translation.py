"""Language-independent translation in miniature: two made-up source languages → English, with an adversary
that removes the source language from the encoder states.

Xie et al., "Controllable Invariance through Adversarial Feature Learning" (NeurIPS 2017, arXiv 1705.11122),
Section 4.2: one multilingual encoder–decoder translates French and German into English; a discriminator
predicts the source language s from the encoder states and the encoder plays against it with the same
minimax as the fairness task, min_{E,Dec} max_D  −log q(y | x, s) + γ · log q_D(s | h). Reported: the
adversarial multilingual model beats bilingual models trained on each pair alone.

No parallel French/German–English corpus ships offline, so the two source languages are made from *real*
English sentences (VADER's 23,701 rated sentences, :func:`kimi_mini.realdata.vader_sentences`) by two
deterministic rewrites, each a word-order rule plus a vocabulary substitution; words of ≤ 2 letters and
punctuation are left alone (like names and cognates shared across real languages):

- language ``"rev"``: reverse the word order; every longer word is spelt backwards ("movie" → "eivom");
- language ``"pig"``: swap neighbouring word pairs; every longer word goes to pig latin ("movie" → "oviemay").

``vocabulary="dialects"`` (what notebook 10 uses) makes the two languages dialects: both reverse the word order and
spell every longer word backwards; only 20 frequent function words differ ("the" → "eht" in ``rev``, "hetay" in
``pig``), so an encoder *can* map both languages to the same states.

The model: a bidirectional GRU encoder over source tokens plus a language embedding (s enters E), a GRU
decoder fed the shifted English target (teacher forcing) with dot-product attention over the encoder
states; the discriminator is an MLP on each encoder state. Token accuracy on held-out sentences is the score.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_number
from kimi_mini.train import run_steps

__all__ = ["LANGUAGES", "VOCABULARIES", "rewrite", "TranslationData", "load_translation", "Seq2Seq",
           "train_translation", "token_accuracy", "encoder_states"]

LANGUAGES = ("rev", "pig")
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,!?]")


VOCABULARIES = ("own", "shared", "dialects")
# "dialects": the function words whose form tells the two languages apart (≥ 3 letters: shorter words are shared)
FUNCTION_WORDS = frozenset({"the", "and", "for", "that", "this", "with", "but", "was", "are", "have", "not", "you",
                            "just", "all", "like", "what", "his", "her", "they", "from"})


def _substitute(word: str, language: str, vocabulary: str = "own") -> str:
    if len(word) <= 2 or not word[0].isalpha() or word in SPECIALS:
        return word
    if vocabulary == "dialects" and language == "pig" and word in FUNCTION_WORDS:
        return word[1:] + word[0] + "ay"  # the one place the two dialects differ
    if vocabulary in ("shared", "dialects") or language == "rev":  # both languages spell the word backwards
        return word[::-1]
    return word[1:] + word[0] + "ay"


def rewrite(words: list[str], language: str, vocabulary: str = "own") -> list[str]:
    """English ``words`` → the source language ``language`` (``"rev"`` or ``"pig"``). ``vocabulary="own"``: each
    language has its own word substitution (they share only words of ≤ 2 letters); ``"shared"``: both use the
    same one (reversed spelling) and differ only in word order — like related languages sharing most of their
    surface vocabulary; ``"dialects"``: both reverse the word order and spell words backwards, and differ only in
    the forms of a few function words (:data:`FUNCTION_WORDS`: reversed in ``"rev"``, pig latin in ``"pig"``) —
    two dialects an encoder can map to the same states by learning the same vector for each pair of forms."""
    if isinstance(words, (str, bytes)) or not isinstance(words, (list, tuple)) or \
            not all(isinstance(w, str) for w in words):
        raise ValueError(f"words: expected a list of word strings, got {words!r:.80}")
    if language not in LANGUAGES:
        raise ValueError(f"language: expected one of {LANGUAGES}, got {language!r}")
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary: expected one of {VOCABULARIES}, got {vocabulary!r}")
    if language == "rev" or vocabulary == "dialects":
        order = words[::-1]
    else:
        order = [w for i in range(0, len(words), 2) for w in words[i:i + 2][::-1]]
    return [_substitute(w, language, vocabulary) for w in order]


@dataclass
class TranslationData:
    """Padded id tensors: ``src`` ``[N, S]``, ``tgt`` ``[N, T]`` (English + <eos>), ``lang`` int64 ``[N]``."""

    src: Tensor
    tgt: Tensor
    lang: Tensor
    src_vocab: list[str]
    tgt_vocab: list[str]

    def __len__(self) -> int:
        return len(self.src)

    def subset(self, language: str) -> TranslationData:
        if language not in LANGUAGES:
            raise ValueError(f"language: expected one of {LANGUAGES}, got {language!r}")
        keep = self.lang == LANGUAGES.index(language)
        return TranslationData(self.src[keep], self.tgt[keep], self.lang[keep], self.src_vocab, self.tgt_vocab)

    def example(self, i: int) -> tuple[str, str]:
        src = " ".join(self.src_vocab[t] for t in self.src[i].tolist() if t != PAD)
        tgt = " ".join(self.tgt_vocab[t] for t in self.tgt[i].tolist() if t not in (PAD, EOS))
        return src, tgt


@functools.cache
def _sentences(vocab_size: int, max_len: int) -> tuple[tuple[str, ...], ...]:
    from kimi_mini.realdata import VADER_DOMAINS, vader_sentences

    toks = [_TOKEN.findall(t.lower())[:max_len] for d in VADER_DOMAINS for t, _ in vader_sentences(d)]
    toks = [t for t in toks if len(t) >= 4]
    vocab = {w for w, _ in Counter(w for t in toks for w in t).most_common(vocab_size)}
    kept = [[w if w in vocab else "<unk>" for w in t] for t in toks if sum(w not in vocab for w in t) <= 1]
    return tuple(tuple(t) for t in kept)


def load_translation(per_language: int = 2000, test_per_language: int = 400, *, vocab_size: int = 800,
                     max_len: int = 10, seed: int = 0, vocabulary: str = "own"
                     ) -> tuple[TranslationData, TranslationData]:
    """(train, test): ``per_language`` / ``test_per_language`` sentences in each source language. The two
    languages get *disjoint* English sentences (like separate fr–en and de–en corpora); ``vocabulary`` as in
    :func:`rewrite`."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary: expected one of {VOCABULARIES}, got {vocabulary!r}")
    for name, v in (("per_language", per_language), ("test_per_language", test_per_language),
                    ("vocab_size", vocab_size), ("max_len", max_len)):
        check_int(name, v, 1, 10**6)
    sents = list(_sentences(vocab_size, max_len))
    need = 2 * (per_language + test_per_language)
    if need > len(sents):
        raise ValueError(f"per_language, test_per_language: need {need} sentences, only {len(sents)} available")
    order = torch.randperm(len(sents), generator=torch.Generator().manual_seed(seed)).tolist()
    tgt_words = sorted({w for s in sents for w in s} - set(SPECIALS))
    tgt_vocab = [*SPECIALS, *tgt_words]
    src_words = sorted({w for s in sents for lang in LANGUAGES for w in rewrite(list(s), lang, vocabulary)}
                       - set(SPECIALS))
    src_vocab = [*SPECIALS, *src_words]
    t_id, s_id = {w: i for i, w in enumerate(tgt_vocab)}, {w: i for i, w in enumerate(src_vocab)}
    n = per_language + test_per_language
    splits = {"train": ([], [], []), "test": ([], [], [])}
    for li, lang in enumerate(LANGUAGES):
        chunk = [sents[i] for i in order[li * n:(li + 1) * n]]
        for j, s in enumerate(chunk):
            src, tgt, langs = splits["train" if j < per_language else "test"]
            src.append([s_id[w] for w in rewrite(list(s), lang, vocabulary)])
            tgt.append([t_id[w] for w in s] + [EOS])
            langs.append(li)
    out = []
    for src, tgt, langs in splits.values():
        pad = lambda rows: nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True)  # noqa: E731
        out.append(TranslationData(pad(src), pad(tgt), torch.tensor(langs), src_vocab, tgt_vocab))
    return out[0], out[1]


class Seq2Seq(nn.Module):
    """Bi-GRU encoder (token + language embedding), attentive GRU decoder, per-state language discriminator."""

    def __init__(self, src_vocab: int, tgt_vocab: int, n_langs: int = 2, d: int = 64):
        super().__init__()
        if d % 2 or d < 2:
            raise ValueError(f"d: expected an even integer >= 2, got {d!r}")
        self.src_emb, self.lang_emb = nn.Embedding(src_vocab, d, padding_idx=PAD), nn.Embedding(n_langs, d)
        # s enters E at zero: the encoder starts language-blind and learns to use s where it helps. A random
        # N(0, 1) init would mark every state with a per-language offset that the adversary needs hundreds of
        # steps to undo, and a linear probe reads even a small leftover offset.
        nn.init.zeros_(self.lang_emb.weight)
        self.encoder = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.tgt_emb = nn.Embedding(tgt_vocab, d, padding_idx=PAD)
        self.decoder = nn.GRU(d, d, batch_first=True)
        self.out = nn.Linear(2 * d, tgt_vocab)
        self.discriminator = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_langs))

    def encode(self, src: Tensor, lang: Tensor) -> Tensor:
        """Encoder states h ``[B, S, d]`` of ``src`` ``[B, S]`` in language ``lang`` ``[B]``."""
        return self.encoder(self.src_emb(src) + self.lang_emb(lang)[:, None])[0]

    def decode(self, h: Tensor, src: Tensor, tgt: Tensor) -> Tensor:
        """Logits ``[B, T, V]`` for ``tgt`` ``[B, T]`` given the states, teacher-forced (input <bos> + tgt[:-1])."""
        mask = src != PAD  # [B, S]
        h0 = ((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))[None]  # [1, B, d]
        inp = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)
        dec, _ = self.decoder(self.tgt_emb(inp), h0.contiguous())  # [B, T, d]
        scores = (dec @ h.transpose(1, 2)).masked_fill(~mask[:, None], float("-inf"))  # [B, T, S]
        context = scores.softmax(-1) @ h  # [B, T, d]
        return self.out(torch.cat([dec, context], dim=-1))


def _lang_loss(model: Seq2Seq, h: Tensor, src: Tensor, lang: Tensor) -> tuple[Tensor, Tensor]:
    """−log q_D(s | h_t) averaged over the real (non-pad) encoder states, and D's accuracy on them."""
    mask = src != PAD
    logits = model.discriminator(h[mask])  # [n_states, n_langs]
    target = lang[:, None].expand_as(src)[mask]
    return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()


def train_translation(data: TranslationData, *, gamma: float = 0.0, adversary: bool = False, steps: int = 300,
                      batch_size: int = 64, d: int = 64, lr: float = 3e-3, k: int = 1, seed: int = 0,
                      d_lr: float | None = None, d_warmup: int = 0,
                      device: str | torch.device = "cpu", progress: bool = False) -> tuple[Seq2Seq, list[dict]]:
    """Train on ``data`` (one or both languages) for ``steps`` (E, Dec) steps; with ``adversary`` each is
    preceded by ``k`` discriminator steps and E, Dec minimise CE(y) − γ·CE(s); without it D is not trained
    (``d_loss``/``d_acc`` are NaN; a probe measures the states afterwards). ``d_lr``: D's Adam learning rate
    (None: ``lr``); ``d_warmup``: with ``adversary``, that many steps of D alone on the states of the frozen,
    freshly initialised encoder before the game starts (so the encoder's first steps play against a D that can
    already read something). Returns the model (eval mode) and its records."""
    check_number("gamma", gamma, 0)
    check_number("lr", lr, 0, lo_open=True)
    check_int("steps", steps, 1, 10**7)
    check_int("batch_size", batch_size, 1, 1 << 20)
    check_int("k", k, 1, 1000)
    if d_lr is not None:
        check_number("d_lr", d_lr, 0, lo_open=True)
    check_int("d_warmup", d_warmup, 0, 10**7)
    if isinstance(d, bool) or not isinstance(d, int) or d < 2 or d % 2 or d > 1 << 14:
        raise ValueError(f"d: expected an even integer in [2, 16384], got {d!r}")
    if len(data) < 1:
        raise ValueError("data: expected at least one sentence")
    torch.manual_seed(seed)
    model = Seq2Seq(len(data.src_vocab), len(data.tgt_vocab), len(LANGUAGES), d).to(device)
    src_all, tgt_all, lang_all = data.src.to(device), data.tgt.to(device), data.lang.to(device)
    d_params = list(model.discriminator.parameters())
    ed_params = [p for n, p in model.named_parameters() if not n.startswith("discriminator")]
    opt_ed = torch.optim.Adam(ed_params, lr=lr)
    opt_d = torch.optim.Adam(d_params, lr=lr if d_lr is None else d_lr)
    g = float(gamma) if adversary else 0.0

    def d_step(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(data), (batch_size,), generator=gen).to(device)
        with torch.no_grad():
            h = model.encode(src_all[idx], lang_all[idx])
        d_loss, d_acc = _lang_loss(model, h, src_all[idx], lang_all[idx])
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        return d_loss, d_acc

    if adversary and d_warmup:  # D alone on the frozen initial encoder, before the game starts
        gen = torch.Generator().manual_seed(seed + 7_919)
        for _ in range(d_warmup):
            d_step(gen)

    def step_fn(step: int, gen: torch.Generator) -> dict:
        d_loss = d_acc = torch.tensor(float("nan"))
        for _ in range(k if adversary else 0):
            d_loss, d_acc = d_step(gen)
        idx = torch.randint(0, len(data), (batch_size,), generator=gen).to(device)
        src, tgt, lang = src_all[idx], tgt_all[idx], lang_all[idx]
        h = model.encode(src, lang)
        y_loss = F.cross_entropy(model.decode(h, src, tgt).flatten(0, 1), tgt.flatten(), ignore_index=PAD)
        loss = y_loss - g * _lang_loss(model, h, src, lang)[0] if g else y_loss
        opt_ed.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ed_params, 1.0)
        opt_ed.step()
        return {"loss": loss.item(), "y_loss": y_loss.item(), "d_loss": d_loss.item(), "d_acc": d_acc.item()}

    history = run_steps(step_fn, steps, seed=seed, progress=progress, desc="translate", postfix=("y_loss", "d_acc"))
    model.eval()
    return model, history


@torch.no_grad()
def token_accuracy(model: Seq2Seq, data: TranslationData) -> float:
    """Teacher-forced accuracy of the next English token over all real target tokens (incl. <eos>)."""
    device = next(model.parameters()).device
    src, tgt = data.src.to(device), data.tgt.to(device)
    pred = model.decode(model.encode(src, data.lang.to(device)), src, tgt).argmax(-1)
    mask = tgt != PAD
    return float((pred[mask] == tgt[mask]).float().mean())


@torch.no_grad()
def encoder_states(model: Seq2Seq, data: TranslationData) -> Tensor:
    """Mean-pooled encoder states ``[N, d]`` on the CPU (what the language probe reads)."""
    device = next(model.parameters()).device
    src = data.src.to(device)
    h = model.encode(src, data.lang.to(device))
    mask = (src != PAD)[..., None]
    return ((h * mask).sum(1) / mask.sum(1)).cpu()
