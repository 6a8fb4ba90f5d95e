"""How many threads the numeric libraries get, per piece of work (issue 17; docs/benchmarks.md, "Thread
set-ups").

Histogram gradient boosting and XGBoost run on OpenMP (libgomp). Between parallel regions libgomp's idle
threads spin (300,000 pauses by default, about 9 ms on this project's machines) before they sleep. On a
quiet machine that spinning is what makes many small parallel regions fast; when the CPUs are shared (a
busy Kubernetes node, a CPU limit below the node's cores, parallel tasks) a spinning thread burns the
time slice its partner needs, and one fit can take 30x longer. A process-wide wait policy only trades
one case for the other (``OMP_WAIT_POLICY=PASSIVE``: about 10-15x slower when quiet, from the cost of
waking sleeping threads; the default: up to 30x slower when contended), so this module sets no global
policy. Instead every fit and prediction runs on one thread (``fit_threads()``): no OpenMP barrier to
wait at, so nothing to spin on or to wake, in either case. Running the search's folds in parallel
processes (one thread each) was measured too and lost on this project's machines: starting the worker
processes costs more than the folds gain (docs/benchmarks.md).

- ``fit_threads()``: threads for one fit or prediction: the user's ``OMP_NUM_THREADS``, else 1;
- ``limit(n)``: a context manager holding OpenMP and BLAS to ``n`` threads in the calling thread;
- ``available_cpus()``: the CPUs this process can really use (its affinity mask capped by the cgroup CPU
  quota, which is what a Kubernetes CPU limit sets), for the logs and for anyone sizing work by it.

The user's environment wins: ``OMP_NUM_THREADS`` sets the threads per fit and prediction;
``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` are left to libgomp, which reads them itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
DESCRIPTION = (
    "shipped (components/common/threads.py): one thread per fit and per large-batch prediction, "
    "through the product's own code (train.core.search, serving kernels)"
)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (quota / period), or None without a quota.

    cgroup v2: ``<root>/cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``; cgroup v1:
    ``<root>/cpu/cpu.cfs_quota_us`` (-1: none) and ``<root>/cpu/cpu.cfs_period_us``. Inside a container the
    cgroup namespace makes these the container's own files (the places joblib and XGBoost read too).
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(root: Path = CGROUP_ROOT, affinity: set[int] | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0) if affinity is None else affinity)
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def user_threads() -> int | None:
    """The user's ``OMP_NUM_THREADS`` (its first level, as libgomp reads ``4,2``), or None if unset or not a
    positive number."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def fit_threads() -> int:
    """Threads for one fit or one prediction: the user's ``OMP_NUM_THREADS``, else 1."""
    return user_threads() or 1


@contextmanager
def limit(threads: int) -> Iterator[None]:
    """OpenMP and BLAS held to ``threads`` threads in the calling thread (threadpoolctl). OpenMP's limit is
    per thread: work handed to other threads or processes needs its own."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield
