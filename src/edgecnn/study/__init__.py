"""Hardware-aware search on Optuna: the space over any config key (define-by-run), objectives and constraints
that include estimated hardware cost, and studies in any Optuna storage (SQLite file, PostgreSQL URL).

Optuna does the sampling, pruning, storage and heartbeats; this package only says what a trial is. The trial
itself (config -> hardware estimate -> training) is assembled in ``edgecnn.search_runner``.
"""
