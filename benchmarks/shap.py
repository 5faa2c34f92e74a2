"""SHAP speed: our exact TreeSHAP against shap's TreeExplainer on a fixed LightGBM ranker.

The model: LightGBM lambdarank, 200 trees of 31 leaves, on 30 features of 200,000 rows drawn
by numpy's default generator seeded 0 (10 normal, 10 lognormal like scores and counts, 5 small
integers like ranks, 5 normal with 10% missing), in groups of 50 rows (one user's candidates),
labelled 0 to 3 by a score that mixes the features and their interactions. shap's
TreeExplainer (path-dependent, the default without background data) hands a LightGBM booster
to LightGBM's own contributions, so it runs LightGBM's TreeSHAP in C++ over OpenMP threads.

Both explain the same rows (all of them), each in its own process with the same number of
threads (`--threads`, default every core: OMP_NUM_THREADS for LightGBM, numba's threads for
ours), alternating, three times each; the figure is the median. Building shap's explainer and
parsing the model for ours happen before the clock starts (they are printed apart), and shap's
additivity check is off. `user_ms` is one user's list of 10 rows explained on demand as the
user inspector does it, with the parsed model cached: the median over 200 lists.

    python benchmarks/shap.py            # the size the issue names
    python benchmarks/shap.py --small    # about a minute: 10,000 rows, the same model shape

The last line is `RESULT rows_per_s=<ours> ratio_vs_shap=<ours / shap's rows per second>
max_abs_diff=<largest |ours - shap's| over every value and the expected value>
user_ms=<one list of 10>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402

FULL, SMALL = 200_000, 10_000
FEATURES, TREES, LEAVES, GROUP = 30, 200, 31, 50
REPEATS = 3
USER_ROWS, USER_LISTS = 10, 200


def fixed_rows(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The features and graded labels of the benchmark (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    x[:, 10:20] = rng.lognormal(size=(rows, 10))
    x[:, 20:25] = rng.integers(0, 20, size=(rows, 5))
    x[:, 25:30][rng.random((rows, 5)) < 0.1] = np.nan
    z = np.nan_to_num(x)
    score = (
        z @ rng.normal(size=FEATURES) / np.sqrt(FEATURES)
        + np.sin(2 * z[:, 0] * z[:, 1]) + np.log1p(z[:, 10] * z[:, 11])
        - 0.3 * (z[:, 20] % 3) + np.tanh(z[:, 2] - z[:, 3] * z[:, 4])
        + (z[:, 25] > 0.5) * z[:, 26]
        + rng.normal(scale=0.3, size=rows)
        + rng.normal(scale=0.5, size=rows // GROUP).repeat(GROUP)  # each user's own level
    )
    labels = np.digitize(score, np.quantile(score, [0.6, 0.85, 0.95]))
    return x, labels


def fixed_model(rows: int, folder: Path) -> tuple[Path, Path]:
    """The benchmark's model (as LightGBM text) and rows (.npy), made once under `folder`."""
    model, data = folder / f"shap_model_{rows}.txt", folder / f"shap_rows_{rows}.npy"
    if not model.exists():
        import lightgbm as lgb

        folder.mkdir(parents=True, exist_ok=True)
        x, labels = fixed_rows(rows)
        params = {"objective": "lambdarank", "num_leaves": LEAVES, "seed": 0,
                  "deterministic": True, "force_row_wise": True, "num_threads": 1,
                  "verbosity": -1}
        dataset = lgb.Dataset(x, label=labels, group=np.full(rows // GROUP, GROUP))
        lgb.train(params, dataset, num_boost_round=TREES).save_model(model)
        np.save(data, x)
    return model, data


def child(method: str, model: str, data: str, out: str) -> None:
    """Explain every row with `method`, save the values to `out`, print JSON with the time."""
    import lightgbm as lgb

    booster = lgb.Booster(model_file=model)
    x = np.load(data)
    started = time.perf_counter()
    if method == "shap":
        import shap

        explainer = shap.TreeExplainer(booster)
        prepare = time.perf_counter() - started
        started = time.perf_counter()
        values = explainer.shap_values(x, check_additivity=False)
        seconds = time.perf_counter() - started
        values = np.column_stack([values, np.full(len(x), explainer.expected_value)])
        extra = {}
    else:
        from recsys.stages import treeshap

        text = booster.model_to_string()
        started = time.perf_counter()
        explainer = treeshap.from_model_string(text)
        prepare = time.perf_counter() - started
        explainer.contributions(x[:USER_ROWS])  # compile (or load the cache) before the clock
        started = time.perf_counter()
        values = explainer.contributions(x)
        seconds = time.perf_counter() - started
        extra = {"user_ms": _user_ms(explainer, x)}
    np.save(out, values)
    print(json.dumps({"seconds": seconds, "prepare_s": prepare, **extra}))


def _user_ms(explainer, x: np.ndarray) -> float:
    """Median milliseconds to explain one list of USER_ROWS rows, over USER_LISTS lists."""
    times = []
    for k in range(USER_LISTS):
        rows = x[k * USER_ROWS:(k + 1) * USER_ROWS]
        started = time.perf_counter()
        explainer.contributions(rows)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def in_child(threads: int, *args: str) -> dict:
    """Run `child(*args)` in a fresh process limited to `threads` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                          capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10,000 rows, about a minute")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both methods (default: every core)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    rows = SMALL if args.small else FULL
    folder = Path(tempfile.gettempdir()) / "recsys-bench"
    started = time.perf_counter()
    model, data = fixed_model(rows, folder)
    print(f"model: lambdarank, {TREES} trees of {LEAVES} leaves, {FEATURES} features, "
          f"{rows:,} rows ({time.perf_counter() - started:.1f} s to fit or load); "
          f"{args.threads} thread(s)")

    results: dict[str, list[dict]] = {"shap": [], "ours": []}
    outputs = {m: str(folder / f"shap_values_{m}_{rows}.npy") for m in results}
    for _ in range(REPEATS):
        for method in results:
            results[method].append(
                in_child(args.threads, method, str(model), str(data), outputs[method]))

    speed = {m: rows / statistics.median(r["seconds"] for r in runs)
             for m, runs in results.items()}
    for method, runs in results.items():
        print(f"{method:>5}: {speed[method]:9,.0f} rows/s (median of {REPEATS}); "
              f"explainer ready in {statistics.median(r['prepare_s'] for r in runs):.2f} s")
    diff = float(np.abs(np.load(outputs["ours"]) - np.load(outputs["shap"])).max())
    user_ms = statistics.median(r["user_ms"] for r in results["ours"])
    print(f"one list of {USER_ROWS}: {user_ms:.2f} ms (parsed model cached)")
    ratio = speed["ours"] / speed["shap"]
    print(f"RESULT rows_per_s={speed['ours']:.0f} ratio_vs_shap={ratio:.2f}"
          f" max_abs_diff={diff:.2e} user_ms={user_ms:.2f}")


if __name__ == "__main__":
    main()
