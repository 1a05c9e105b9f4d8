"""Multimodal fusion: early, late, tensor (TFN), low-rank (LMF) and polynomial fusion.

Paper: *Multimodal Polynomial Fusion for Detecting Driver Distraction* (Du, Raman, Black, Morency,
Eskenazi; INTERSPEECH 2018, arXiv 1810.10565), with the operators it builds on, TFN (arXiv 1707.07250)
and LMF (arXiv 1806.00064). Equations in :mod:`kimi_mini.fusion.ops`; data (real smartwatch sensors and
a three-modality driver simulator) in :mod:`kimi_mini.fusion.data`; the notebook's experiment grid in
:mod:`kimi_mini.fusion.experiment`; the fused Triton kernel in :mod:`kimi_mini.kernels.fusion`. Three
modules because the data (windowing, subject splits, the simulator), the operators and the experiment
grid are separate concerns that together exceed one readable file.
"""

from kimi_mini.fusion.data import (
    SIM_MODALITIES,
    WATCH_MODALITIES,
    driver_simulator,
    standardize,
    subject_split,
    watch_dataset,
    watch_splits,
    watch_windows,
)
from kimi_mini.fusion.experiment import (
    Split,
    cell_values,
    paired_gap,
    paired_gaps,
    run_grid,
    simulator_task,
    summarize,
    watch_task,
)
from kimi_mini.fusion.ops import (
    FUSIONS,
    EarlyFusion,
    FusionClassifier,
    LateFusion,
    LowRankFusion,
    PolynomialFusion,
    TensorFusion,
    accuracy,
    fit_fusion,
    n_params,
    polynomial_fusion,
    svm_baseline,
    tensor_fusion,
)

__all__ = ["SIM_MODALITIES", "WATCH_MODALITIES", "driver_simulator", "standardize", "subject_split",
           "watch_dataset", "watch_splits", "watch_windows", "FUSIONS", "EarlyFusion", "FusionClassifier", "LateFusion",
           "LowRankFusion",
           "PolynomialFusion", "TensorFusion", "accuracy", "fit_fusion", "n_params", "polynomial_fusion",
           "svm_baseline", "tensor_fusion", "Split", "cell_values", "paired_gap", "paired_gaps", "run_grid",
           "simulator_task", "summarize",
           "watch_task"]
