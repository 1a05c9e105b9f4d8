"""Stories drawn as figures, for notebook 08 (StoryWars, Du & Chilton, ACL 2023, arXiv 2305.08152).

:func:`draw_chapters` writes a story's chapters onto an axis, one colour per author; :func:`story_view_figure`
adds below them what one task type makes of the story (instruction, input and label, from
:func:`kimi_mini.storywars.tasks.story_view`), as a matplotlib figure that
:func:`kimi_mini.notebooks.interactive_figure` can redraw in place and papermill/CI keep as a static copy.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt

from kimi_mini.storywars.corpus import Corpus, Story
from kimi_mini.storywars.tasks import HELD_OUT, TASK_TYPES, render, story_view

__all__ = ["draw_chapters", "story_view_figure"]


def draw_chapters(ax, story: Story, colours: dict[str, tuple], *, y: float = 0.97, width: int = 110,
                  fontsize: float = 8.0, line: float = 0.045, gap: float = 0.03) -> float:
    """Write ``story``'s chapters on ``ax`` from height ``y`` down (axes coordinates), each wrapped at ``width``
    characters, prefixed by its number and author and coloured by ``colours[author]``; ``line`` is the height of
    one text line and ``gap`` the space between chapters, both in axes units. Returns the height below the last."""
    for ch in story.chapters:
        lines = textwrap.wrap(f"ch.{ch.index + 1} [{ch.author}] {ch.text}", width)
        ax.text(0.0, y, "\n".join(lines), color=colours[ch.author], va="top", fontsize=fontsize, family="monospace")
        y -= gap + line * len(lines)
    return y


def story_view_figure(corpus: Corpus, story_id: int, task_type: str, *, width: int = 110, max_lines: int = 14):
    """A figure of story ``story_id`` (its chapters coloured by author, one colour per author of the corpus) and,
    below a rule, what ``task_type`` makes of it: the rendered prompt (instruction + input, at most ``max_lines``
    wrapped lines) and the label the model is trained or scored on."""
    s = corpus.story(story_id)
    ex = story_view(corpus, story_id, task_type)
    prompt, target = render(ex)
    colours = dict(zip(sorted(corpus.authors), plt.cm.tab20.colors, strict=False))
    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.axis("off")
    y = draw_chapters(ax, s, colours, width=width) - 0.03
    ax.axhline(y + 0.015, color="grey", lw=0.5)
    held = ", held out" if task_type in HELD_OUT else ""
    view = [f"{task_type} ({TASK_TYPES[task_type].kind}{held}) sees:"]
    view += [w for line in prompt.split("\n") for w in (textwrap.wrap(line, width) or [""])][:max_lines]
    view.append(f"label:{target.rstrip()}  ({len(ex.options)} options)")
    ax.text(0.0, y, "\n".join(view), va="top", fontsize=7.5, family="monospace")
    ax.set_title(f"story {s.id} · {s.genre} · {s.likes} likes (score {s.score}/10) · authors "
                 f"{', '.join(dict.fromkeys(s.authors))}", fontsize=9)
    return fig
