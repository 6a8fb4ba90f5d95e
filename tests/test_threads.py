"""Thread set-up (components/common/threads.py): the CPU count, the user's environment, and the search's
fits observed running under the chosen limits. Speed is the benchmark's business
(benchmarks/thread_benchmark.py); nothing here is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info

from components.common import threads
from components.train.core import search
from components.train.search import Candidate, candidates_for

REPO = Path(__file__).resolve().parent.parent


def openmp_threads() -> int:
    return next(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")


# ---------------------------------------------------------------------------------------------- the count
def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_cgroup_quota_v2_and_v1(tmp_path, files, quota):
    assert threads.cgroup_cpu_quota(cgroup(tmp_path, files)) == quota


def test_available_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    four = {0, 1, 2, 3}
    assert threads.available_cpus(cgroup(tmp_path / "a", {"cpu.max": "150000 100000"}), four) == 2
    assert threads.available_cpus(cgroup(tmp_path / "b", {"cpu.max": "800000 100000"}), four) == 4
    assert threads.available_cpus(cgroup(tmp_path / "c", {"cpu.max": "max 100000"}), {5}) == 1
    assert threads.available_cpus(cgroup(tmp_path / "d", {"cpu.max": "10000 100000"}), four) == 1
    assert threads.available_cpus(tmp_path / "none", four) == 4
    assert threads.available_cpus() == min(
        len(os.sched_getaffinity(0)), int(np.ceil(threads.cgroup_cpu_quota() or 1e9))
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("3", 3), ("4,2", 4), ("", None), ("abc", None), ("0", None)]
)
def test_user_threads_from_omp_num_threads(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads.user_threads() == expected
    assert threads.fit_threads() == (expected or 1)


def test_limit_holds_openmp_in_the_calling_thread_and_restores_it():
    before = openmp_threads()
    with threads.limit(1):
        assert openmp_threads() == 1
    assert openmp_threads() == before


def run_python(code: str, **env: str) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout + out.stderr


def test_no_process_wide_wait_policy_and_the_users_wins():
    """Importing the stages leaves libgomp's wait policy alone (no global switch); a user's setting is what
    libgomp takes."""
    code = "import components.train.core, components.serving.kernels, sklearn.ensemble, os; print('policy', os.environ.get('OMP_WAIT_POLICY'))"
    out = run_python(code)
    assert "policy None" in out and "GOMP_SPINCOUNT = '300000'" in out  # libgomp's own default
    out = run_python(code, OMP_WAIT_POLICY="PASSIVE")
    assert "policy PASSIVE" in out and "OMP_WAIT_POLICY = 'PASSIVE'" in out and "GOMP_SPINCOUNT = '0'" in out


# ------------------------------------------------------------------------------- the search, observed
class ThreadProbe(HistGradientBoostingClassifier):
    """Histogram gradient boosting that writes down, at the start of each fit, its process and the OpenMP
    and BLAS thread limits it runs under."""

    def __init__(self, record_dir: str = "", max_iter: int = 5, random_state=None):
        super().__init__(max_iter=max_iter, random_state=random_state, early_stopping=False)
        self.record_dir = record_dir

    def fit(self, X, y, **kwargs):
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        info = threadpool_info()
        record = {
            "pid": os.getpid(),
            "openmp": sorted({i["num_threads"] for i in info if i["user_api"] == "openmp"}),
            "blas": sorted({i["num_threads"] for i in info if i["user_api"] == "blas"}),
            "effective": _openmp_effective_n_threads(),  # what the fit passes to its OpenMP loops
        }
        Path(self.record_dir, f"{uuid.uuid4().hex}.json").write_text(json.dumps(record))
        return super().fit(X, y, **kwargs)


def probe_search(record_dir: Path, cv_folds: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    probe = Candidate(
        "probe",
        "sklearn",
        lambda seed, **p: ThreadProbe(str(record_dir), random_state=seed, **p),
        {"max_iter": [4, 5]},
    )
    trials, _ = search(
        x,
        y,
        task="classification",
        candidates=[probe],
        max_trials=2,
        max_seconds=600,
        cv_folds=cv_folds,
        seed=0,
    )
    assert len(trials) == 2
    return [json.loads(p.read_text()) for p in record_dir.glob("*.json")]


def test_search_fits_run_on_one_thread_in_this_process(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = openmp_threads()
    assert before > 1 or len(os.sched_getaffinity(0)) == 1  # else the check below proves nothing
    records = probe_search(tmp_path)
    assert len(records) == 6  # 2 trials x 3 folds
    assert {r["pid"] for r in records} == {os.getpid()}
    assert all(r["openmp"] == [1] and r["effective"] == 1 and r["blas"] == [1] for r in records), records
    assert openmp_threads() == before  # the limit ends with the search


def test_search_follows_the_users_omp_num_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # not this machine's default, so the limit must set it
    records = probe_search(tmp_path)
    assert len(records) == 6
    assert all(r["openmp"] == [3] and r["effective"] == 3 for r in records), records


def test_xgboost_candidates_take_the_openmp_limit_not_a_fixed_count():
    for task in ("classification", "regression"):
        xgb = next(c for c in candidates_for(task) if c.name == "xgboost").make(0)
        assert (
            xgb.get_params()["n_jobs"] is None
        )  # XGBoost then uses omp_get_max_threads() of the fit's thread


# ------------------------------------------------------------------------------------------- serving
def test_serving_kernels_predict_large_batches_on_fit_threads_bit_for_bit(monkeypatch):
    """The kernels' thread count is explicit (the server calls them from its thread pool, where a limit
    set elsewhere would not hold): one by default, the user's OMP_NUM_THREADS if set; the answers do not
    depend on it."""
    from xgboost import XGBClassifier

    from components.serving.kernels import SMALL_BATCH, estimator_kernel

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    big = x[: SMALL_BATCH * 3]
    models = [
        HistGradientBoostingClassifier(max_iter=10, early_stopping=False, random_state=0).fit(x, y),
        XGBClassifier(n_estimators=10, n_jobs=None, random_state=0).fit(x, y),
    ]
    for model in models:
        expected = model.predict_proba(big)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        one, _ = estimator_kernel(model, "classification")
        if isinstance(model, XGBClassifier):
            assert json.loads(model.get_booster().save_config())["learner"]["generic_param"]["nthread"] == "1"
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        two, _ = estimator_kernel(model, "classification")
        if isinstance(model, XGBClassifier):
            assert json.loads(model.get_booster().save_config())["learner"]["generic_param"]["nthread"] == "2"
        assert np.array_equal(one(big), expected) and np.array_equal(two(big), expected)


def test_serving_hgb_kernel_passes_its_thread_count_to_the_predictors(monkeypatch):
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    from components.serving.kernels import SMALL_BATCH, estimator_kernel

    seen = []
    original = TreePredictor.predict
    monkeypatch.setattr(
        TreePredictor,
        "predict",
        lambda self, X, bitsets, f_idx_map, n_threads: (
            seen.append(n_threads) or original(self, X, bitsets, f_idx_map, n_threads)
        ),
    )
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    model = HistGradientBoostingClassifier(max_iter=3, early_stopping=False).fit(x, (x[:, 0] > 0).astype(int))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    estimator_kernel(model, "classification")[0](x[: SMALL_BATCH + 1])
    assert set(seen) == {1}
    seen.clear()
    estimator_kernel(model, "classification", threads=2)[0](x[: SMALL_BATCH + 1])
    assert set(seen) == {2}
