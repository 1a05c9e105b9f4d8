"""StoryWars in miniature (Du & Chilton, ACL 2023, arXiv 2305.08152): a collaborative-story generator with
ground truth for all 12 task types, the paper's metrics, and InstructStory vs single-task vs no-instruction
KimiMini models in the fully-supervised, few-shot and zero-shot regimes.

    from kimi_mini.storywars.corpus import load_corpus
    from kimi_mini.storywars.tasks import Task, make_examples, render
    corpus = load_corpus()                                           # generated once, cached under data/cache/
    ex = make_examples(corpus, Task("temporal_inference", "western"), "train", 1)[0]
    prompt, target = render(ex)                                      # instruction + input -> " yes\\n"
"""
