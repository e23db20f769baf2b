"""Validation of the estimators on published measurements: the figures and their sources (published.yaml,
published), the networks rebuilt at their published sizes (networks, reference_nets), DPU calibration on one
board (calibrate) and the held-out error per class (heldout). `python -m edgecnn.hw.validation` reruns it."""
