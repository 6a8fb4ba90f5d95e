"""kfp-tabular: KFP v2 components for tabular ML.

Each stage is a folder holding a plain-Python ``core`` (no KFP) and a thin ``component`` (the
``@dsl.component`` shell that converts artifacts to paths and calls the core).

No process-wide OpenMP setting is made here: a global wait policy made histogram gradient boosting
either about 15x slower on a quiet machine (``OMP_WAIT_POLICY=PASSIVE``) or up to 30x slower on a
contended one (libgomp's default spinning). Instead the work is sized where it runs
(``components.common.threads``: the search's folds in parallel processes with one thread each);
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` and ``OMP_NUM_THREADS`` set by the user are honoured.
"""
