"""The estimators: the Estimator base and registry (base), DPU (dpu), dataflow with FINN's formulas and folding
(dataflow, finn_formulas, folding), systolic arrays (systolic), the host CPU (cpu), energy, and the error bars
every estimate quotes (error_bars, read from validation_summary.json, which hw.validation writes).

Nothing here imports hw.validation: the estimators run without the published figures they were checked on.
"""
