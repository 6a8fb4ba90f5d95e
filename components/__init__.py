"""kfp-tabular: KFP v2 components for tabular ML.

Each stage is a folder holding a plain-Python ``core`` (no KFP) and a thin ``component`` (the
``@dsl.component`` shell that converts artifacts to paths and calls the core).
"""

import os

# OpenMP (libgomp, used by scikit-learn's histogram gradient boosting and by XGBoost) spin-waits by
# default. When the CPU is shared (a busy Kubernetes node, parallel tasks), that spinning starves the
# threads doing the work: one 3-fold CV of HistGradientBoosting on 6,500 rows took 206 s instead of
# 6.5 s on a loaded 2-core machine (docs/benchmarks.md). libgomp reads this when it is loaded, so it
# is set here, before any stage imports scikit-learn or XGBoost. A value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
