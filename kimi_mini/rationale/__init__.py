"""Selective rationalization: RNP and Distribution Matching for Rationalization (DMR, arXiv 2106.00320).

- :mod:`.data` — the multi-aspect review benchmark built from real human-rated sentences (known rationales);
- :mod:`.cmd` — the Central Moment Discrepancy (loop reference, vectorised, fused Triton kernel);
- :mod:`.models` — generator (straight-through hard selection), predictor, teacher;
- :mod:`.train` — ``train_teacher``, ``train_rnp``, ``train_dmr``, ``evaluate`` (on ``kimi_mini.train.run_steps``);
- :mod:`.metrics` — token precision / recall / F1 / sparsity and an HTML highlighter.
- :mod:`.plots` — a review drawn as a figure, selections boxed against the gold rationale (09's browser).
"""
