"""ZeroPrompt in miniature (arXiv 2201.06910): a prompted task zoo, rank classification, multitask prompted
pretraining of ``KimiMini`` and zero-shot evaluation on held-out tasks. The GPS topic (arXiv 2210.17041) searches
prompts for the frozen models trained here, scoring them with :func:`rank_classify`.

    from kimi_mini.prompts import task_zoo, splits, render, rank_classify, pretrained_model
    zoo = task_zoo()                                   # name -> Task (generated + real families)
    prompt, options = render(zoo["contains_char:q"], zoo["contains_char:q"].examples[0], 0)
    model = pretrained_model(n_tasks=128)              # trained once, then loaded from data/cache/zeroprompt/
    preds, scores = rank_classify(model, [prompt], [options])
"""

from kimi_mini.prompts.pretrain import (
                                        SIZES,
                                        PretrainConfig,
                                        Pretrained,
                                        answer_only_loss,
                                        checkpoint_path,
                                        pretrain,
                                        pretrained_model,
                                        prompted_batch,
                                        zero_shot_accuracy,
)
from kimi_mini.prompts.rank import encode_pairs, option_logprobs, rank_classify, token_logprobs
from kimi_mini.prompts.tasks import (
                                        ANSWER_SEP,
                                        FAMILIES,
                                        Example,
                                        FamilySpec,
                                        Task,
                                        check_template,
                                        register_family,
                                        render,
                                        template_slots,
)
from kimi_mini.prompts.zoo import HELDOUT_FAMILIES, Splits, nested_training_tasks, splits, task_zoo

__all__ = ["ANSWER_SEP", "FAMILIES", "HELDOUT_FAMILIES", "Example", "FamilySpec", "Splits", "Task", "check_template",
           "nested_training_tasks", "register_family", "render", "splits", "task_zoo", "template_slots",
           "encode_pairs", "option_logprobs", "rank_classify", "token_logprobs", "SIZES", "PretrainConfig",
           "Pretrained", "answer_only_loss", "checkpoint_path", "pretrain", "pretrained_model", "prompted_batch",
           "zero_shot_accuracy"]
