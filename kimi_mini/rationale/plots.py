"""A review drawn as a figure, for the rationale browser of notebook 09 (RNP vs DMR, arXiv 2106.00320).

:func:`draw_review` lays a review's tokens out as wrapped text, one block per model: tokens the model's
generator selected on a yellow box, gold-rationale tokens underlined in green (both = a correct pick) —
the same marks as :func:`kimi_mini.rationale.metrics.highlight`, in a matplotlib figure so that
:func:`kimi_mini.notebooks.interactive_figure` can redraw it in place and papermill/CI keep a static copy.
"""

from __future__ import annotations

import torch

__all__ = ["draw_review"]

_SELECTED, _GOLD = "#ffe066", "#2b8a3e"


def _flags(name: str, v, n: int) -> list[bool]:
    if isinstance(v, (str, bytes)) or not (torch.is_tensor(v) or isinstance(v, (list, tuple))):
        raise ValueError(f"{name}: expected a list or 1-D tensor of per-token booleans, got {type(v).__name__}")
    out = [bool(x) for x in (v.tolist() if torch.is_tensor(v) else v)]
    if len(out) < n:
        raise ValueError(f"{name}: expected at least {n} entries (one per token), got {len(out)}")
    return out[:n]


def draw_review(tokens: list[str], selections: dict[str, object], gold, *, title: str = "", width: int = 80):
    """A figure with one block per entry of ``selections`` (model name → per-token booleans, e.g. a row of
    ``evaluate(...)["z"]``), each the review's ``tokens`` wrapped at ``width`` characters, selected tokens
    boxed in yellow and ``gold`` tokens underlined in green. Each block's heading counts its selected and
    correctly selected tokens. Returns the ``Figure`` (not shown)."""
    import matplotlib.pyplot as plt

    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens: expected a non-empty list of strings")
    if not isinstance(selections, dict) or not selections:
        raise ValueError("selections: expected a non-empty dict {model name: per-token booleans}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 10:
        raise ValueError(f"width: expected an int ≥ 10, got {width!r}")
    n = len(tokens)
    gol = _flags("gold", gold, n)
    sels = {str(k): _flags(f"selections[{k!r}]", v, n) for k, v in selections.items()}
    lines, line, used = [], [], 0  # wrap once: every block has the same layout
    for i, t in enumerate(tokens):
        if line and used + len(t) + 1 > width:
            lines.append(line)
            line, used = [], 0
        line.append(i)
        used += len(t) + 1
    lines.append(line)
    rows = len(sels) * (len(lines) + 1.4)
    fig, ax = plt.subplots(figsize=(0.085 * width + 0.4, 0.3 * rows + 0.5))
    ax.set(xlim=(0, width), ylim=(rows, 0))
    ax.axis("off")
    y = 0.0
    for name, sel in sels.items():
        hits = sum(s and g for s, g in zip(sel, gol, strict=True))
        ax.text(0, y + 0.5, f"{name}: {sum(sel)} tokens selected, {hits} of them gold ({sum(gol)} gold tokens)",
                fontsize=9, fontweight="bold", va="center")
        y += 1.2
        for ln in lines:
            x = 0.0
            for i in ln:
                w = len(tokens[i])
                if sel[i]:
                    ax.add_patch(plt.Rectangle((x - 0.15, y + 0.05), w + 0.3, 0.8, color=_SELECTED, lw=0))
                if gol[i]:
                    ax.plot([x, x + w], [y + 0.92, y + 0.92], color=_GOLD, lw=2, solid_capstyle="butt")
                ax.text(x, y + 0.48, tokens[i], family="monospace", fontsize=9, va="center")
                x += w + 1
            y += 1.0
        y += 0.2
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig
