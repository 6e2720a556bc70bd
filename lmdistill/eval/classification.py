"""Classification metrics from integer predictions and labels: accuracy, macro-F1, multi-class MCC."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

IntLabels = Sequence[int] | torch.Tensor


def _as_int_lists(predictions: IntLabels, labels: IntLabels) -> tuple[list[int], list[int]]:
    predicted = [int(x) for x in (predictions.flatten().tolist() if isinstance(predictions, torch.Tensor) else predictions)]
    actual = [int(x) for x in (labels.flatten().tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions but {len(actual)} labels")
    if not actual:
        raise ValueError("no predictions to score")
    return predicted, actual


def _confusion(predicted: list[int], actual: list[int]) -> tuple[list[int], list[list[int]]]:
    """Classes (sorted union of labels and predictions) and the matrix C[true][predicted] of counts."""
    classes = sorted(set(predicted) | set(actual))
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for p, a in zip(predicted, actual):
        matrix[index[a]][index[p]] += 1
    return classes, matrix


def accuracy(predictions: IntLabels, labels: IntLabels) -> float:
    """Fraction of predictions equal to their label. Shapes: both (N,) (tensors are flattened)."""
    predicted, actual = _as_int_lists(predictions, labels)
    return sum(p == a for p, a in zip(predicted, actual)) / len(actual)


def macro_f1(predictions: IntLabels, labels: IntLabels) -> float:
    """Unweighted mean over classes of F1_k = 2·TP_k / (2·TP_k + FP_k + FN_k).

    Classes are the union of those seen in labels and predictions; a class with TP = FP = FN = 0 cannot occur,
    and a class never predicted correctly scores 0 (as scikit-learn with zero_division=0). Shapes: both (N,).
    """
    predicted, actual = _as_int_lists(predictions, labels)
    classes, matrix = _confusion(predicted, actual)
    scores = []
    for k in range(len(classes)):
        true_positive = matrix[k][k]
        false_negative = sum(matrix[k]) - true_positive
        false_positive = sum(row[k] for row in matrix) - true_positive
        scores.append(2 * true_positive / (2 * true_positive + false_positive + false_negative))
    return sum(scores) / len(scores)


def matthews_corrcoef(predictions: IntLabels, labels: IntLabels) -> float:
    """Multi-class Matthews correlation (Gorodkin 2004) from the K×K confusion matrix C.

    Shapes: both (N,). With c = trace(C), s = N, t_k = Σ_j C[k][j] (true counts), p_k = Σ_j C[j][k] (predicted):
    MCC = (c·s − Σ_k p_k·t_k) / sqrt((s² − Σ_k p_k²)·(s² − Σ_k t_k²)); 0 when the denominator is 0.
    For two classes this equals (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    predicted, actual = _as_int_lists(predictions, labels)
    classes, matrix = _confusion(predicted, actual)
    size = len(classes)
    correct = sum(matrix[k][k] for k in range(size))
    total = len(actual)
    true_counts = [sum(matrix[k]) for k in range(size)]
    predicted_counts = [sum(matrix[j][k] for j in range(size)) for k in range(size)]
    numerator = correct * total - sum(p * t for p, t in zip(predicted_counts, true_counts))
    denominator_squared = (total**2 - sum(p * p for p in predicted_counts)) * (total**2 - sum(t * t for t in true_counts))
    if denominator_squared == 0:
        return 0.0
    return numerator / math.sqrt(denominator_squared)
