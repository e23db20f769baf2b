"""Variants: one trained model in each precision the run asks for, as its deployable file.

precisions (the precision registry: a config -> handler per precision, like torchao's), measuring (build a
variant and measure it in its own runtime), hardware (its estimate columns on the run's targets), lowbit_sweep
(the low-bit QAT sweep and its warm-start schedule). The recipes themselves (casts, INT8 PTQ/QAT, power-of-two,
Brevitas low-bit QAT, pruning) live in edgecnn.compress.
"""
