"""Kimi K2's post-training in miniature: agentic data synthesis (:mod:`.tools`, :mod:`.synthesis`) and RL (:mod:`.rl`).

Paper: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), §3.1 (SFT data synthesis) and §3.2 (RL,
with the policy objective of *Kimi k1.5: Scaling Reinforcement Learning with LLMs*, arXiv 2501.12599).
"""
