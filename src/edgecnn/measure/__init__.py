"""Measurements: accuracy reports, latency/throughput on runtimes, size on disk."""
from edgecnn.measure.accuracy import (
                                      ClassificationReport,
                                      classification_report,
                                      mcnemar_p,
                                      paired_comparison,
                                      plot_confusion,
)
from edgecnn.measure.latency import LatencyResult, torch_latency
from edgecnn.measure.size import file_size, human_bytes

__all__ = ["ClassificationReport", "classification_report", "mcnemar_p", "paired_comparison", "plot_confusion",
           "LatencyResult", "torch_latency", "file_size", "human_bytes"]
