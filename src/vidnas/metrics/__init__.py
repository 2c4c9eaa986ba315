"""Segmentation metrics: a streaming confusion matrix (IoU family, cell-search reward) and temporal consistency."""

from vidnas.metrics.confusion import ConfusionMatrix
from vidnas.metrics.temporal import TemporalConsistency, flicker, vc

__all__ = ["ConfusionMatrix", "TemporalConsistency", "vc", "flicker"]
