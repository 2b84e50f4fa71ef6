"""How many held-out images `phases="auto"` needs (issue 35): its choice on n
held-out images against the K that other images of the same kind rank best.

One kind of images throughout (`--images`): "jpeg", the CIFAR-10 JPEG training
images (MNIST's for lenet5), of which there are enough to hold out 2,000 and test
on 4,000 more; or "lossless", the 1,900 lossless CIFAR-10 test images, 1,400 of
them left for the pool after calibration. Each K of `--phases` is calibrated as
the CLI's search calibrates (percentile, on `--calibration` images; the held-out
images come on top) and simulated once over a pool of `--pool` other images,
`--periods` periods past its first readout: per grid T and image, whether it is
right. Then, `--draws` times, the pool is shuffled; for each n of `--held_out`
the first n images are held out and the search's own rule chooses (K, T) on
them (`stability.choices` with `latency._first_lossless` on `--search_periods`
periods: the smallest T*, ties to the smaller K; where no K converges, the
library's fallback), and the last `--test` images are the test images: each K's
T* on them (`common.t_star`, 0.1 pp) and the test accuracy at the chosen T. Per
n: how often a K converged, how often the chosen K's test T* is within one of its
periods of the best fixed K's (K = 3..6 of `--phases`), how often it is the
test's best K, and what the chosen T loses on the test images.

Usage (from the repository root):
    python benchmarks/held_out_size.py --models akamaster20 --arrays /tmp/hos
    python benchmarks/held_out_size.py --models akamaster20 --arrays /tmp/hos \
        --from_arrays --search_periods 12     # the same simulations, another search grid
    python benchmarks/held_out_size.py --smoke
    python benchmarks/held_out_size.py --report
"""

import argparse
import time

import common
import finetune_study
import numpy as np

import bsnn_tf
from bsnn_tf.conversion import latency, stability

OUTPUT = common.RESULTS_DIR / "held_out_size.json"
FIXED = (3, 4, 5, 6)  # the fixed K


def simulate(name, args):
    """(grid per K, right per K: (len(grid), pool) bool, ann_right: (pool,) bool)."""
    ann, x_test, y_test, x, y = finetune_study.load(name, args.calibration + args.pool,
                                                    args.data_dir)
    if args.images == "lossless":
        x, y = x_test[:args.calibration + args.pool], y_test[:args.calibration + args.pool]
    order = np.random.default_rng(common.SEED).permutation(len(x))
    fit, pool = order[:args.calibration], order[args.calibration:]
    x_fit, x_pool, y_pool = x[fit], x[pool], y[pool]
    ann_right = np.argmax(ann.predict(x_pool, batch_size=256, verbose=0), -1) == y_pool
    grids, right = {}, {}
    for phases in args.phases:
        start = time.perf_counter()
        snn = bsnn_tf.convert(ann, x_fit, phases=phases, verbose=0)
        grid = list(range(snn.first_readout,
                          snn.first_readout + (args.periods + 1) * phases, phases))
        result = bsnn_tf.simulate(snn, x_pool, timesteps=grid[-1], checkpoints=grid,
                                  count_spikes=False, verbose=0)
        grids[phases] = grid
        right[phases] = np.stack([np.argmax(result.outputs_at[t], -1) == y_pool
                                  for t in grid])
        print(f"{name} K={phases}: {len(y_pool)} images to T={grid[-1]} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return grids, right, ann_right


def choose(grids, right, ann_right, held_out, tolerance, periods):
    """The search's (K, T, whether a K converged) on each row of `held_out` (indices of
    n images): the library's own choice (`stability.choices`: `latency._first_lossless`
    per K, the smallest T*, ties to the smaller K); where none converged, its fallback:
    the best score at the end of a grid, ties to the shorter grid."""
    held_out = np.asarray(held_out)
    weights = np.zeros((len(held_out), len(ann_right)), int)
    np.put_along_axis(weights, held_out, 1, axis=1)
    allowed = tolerance * held_out.shape[1] / 100
    searched = {(k, "percentile"): (grid[:periods + 1], right[k][:periods + 1])
                for k, grid in grids.items()}
    made = stability.choices(searched, ann_right,
                             lambda grid, counts: latency._first_lossless(grid, counts, allowed),
                             weights)
    chosen = []
    for rows, (key, t) in zip(held_out, made):
        if key is not None:
            chosen.append((key[0], t, True))
            continue
        _, t, phases = min((-int(np.sum(correct[-1, rows])), grid[-1], k)
                           for (k, _), (grid, correct) in searched.items())
        chosen.append((phases, t, False))
    return chosen


def test(grids, right, ann_right, rows, tolerance):
    """Per K: (T* on the images `rows`, {T: accuracy}), and the ANN's accuracy."""
    ann = float(np.mean(ann_right[rows]))
    curves = {}
    for phases, grid in grids.items():
        accuracy = {t: float(np.mean(row[rows])) for t, row in zip(grid, right[phases])}
        curves[phases] = (common.t_star(accuracy, ann, tolerance / 100), accuracy)
    return curves, ann


def draws(grids, right, ann_right, args):
    """Per n of --held_out, one row per draw: the choice and how it fares on test."""
    rng = np.random.default_rng(common.SEED)
    orders = [rng.permutation(len(ann_right)) for _ in range(args.draws)]
    chosen = {n: choose(grids, right, ann_right, [order[:n] for order in orders],
                        args.tolerance, args.search_periods) for n in args.held_out}
    rows = {n: [] for n in args.held_out}
    for index, order in enumerate(orders):
        curves, ann = test(grids, right, ann_right, order[-args.test:], args.tolerance)
        fixed = {k: t for k, (t, _) in curves.items() if k in FIXED and t is not None}
        best = min(fixed.values(), default=None)
        best_k = min(fixed, key=lambda k: (fixed[k], k)) if fixed else None
        for n in args.held_out:
            phases, t, converged = chosen[n][index]
            test_t = curves[phases][0]
            rows[n].append({
                "phases": phases, "timesteps": t, "converged": converged,
                "test_t_star": test_t, "best_fixed": best, "best_fixed_phases": best_k,
                "within_one_period": bool(test_t is not None and best is not None
                                          and test_t <= best + phases),
                "test_pp": round(100 * (curves[phases][1][t] - ann), 3)})
    return rows


def summary(rows):
    """What one n's draws say (the fallback's choices included)."""
    pp = np.array([r["test_pp"] for r in rows])
    phases, counts = np.unique([r["phases"] for r in rows], return_counts=True)
    return {
        "draws": len(rows), "share_converged": float(np.mean([r["converged"] for r in rows])),
        "share_within_one_period": float(np.mean([r["within_one_period"] for r in rows])),
        "share_test_best_k": float(np.mean([r["phases"] == r["best_fixed_phases"]
                                            for r in rows])),
        "chosen_phases": {int(k): int(c) for k, c in zip(phases, counts)},
        "timesteps_quartiles": [int(q) for q in np.quantile(
            [r["timesteps"] for r in rows], [0.25, 0.5, 0.75], method="lower")],
        "test_pp_quartiles": [float(q) for q in np.quantile(pp, [0.25, 0.5, 0.75])]}


def study(name, args):
    path = f"{args.arrays}_{name}_{args.images}.npz"
    if args.from_arrays:
        saved = np.load(path)
        grids = {k: list(saved[f"grid_{k}"]) for k in args.phases}
        right = {k: saved[f"right_{k}"] for k in args.phases}
        ann_right = saved["ann_right"]
    else:
        grids, right, ann_right = simulate(name, args)
    if args.arrays and not args.from_arrays:
        np.savez_compressed(path, ann_right=ann_right,
                            **{f"grid_{k}": grids[k] for k in grids},
                            **{f"right_{k}": right[k] for k in right})
    per_draw = draws(grids, right, ann_right, args)
    test_best = [(r["best_fixed_phases"], r["best_fixed"])
                 for r in per_draw[args.held_out[0]]]
    ks, counts = np.unique([str(k or "none") for k, _ in test_best], return_counts=True)
    return {"model": name, "pool": len(ann_right), "test_images": args.test,
            "calibration_images": args.calibration, "tolerance": args.tolerance,
            "periods": args.periods, "search_periods": args.search_periods,
            "phases": args.phases,
            "ann_accuracy_pool": float(np.mean(ann_right)),
            "test_best_phases": {str(k): int(c) for k, c in zip(ks, counts)},
            "by_held_out": {str(n): summary(r) for n, r in per_draw.items()},
            **common.run_header()}


def report(path):
    rows = []
    for key, r in common.stored_results(path).items():
        best = ", ".join(f"K={k}: {c}" for k, c in r["test_best_phases"].items())
        for n, s in r["by_held_out"].items():
            rows.append([key, n, f"{s['share_converged']:.0%}",
                         f"{s['share_within_one_period']:.0%}", f"{s['share_test_best_k']:.0%}",
                         ", ".join(f"K={k}: {c}" for k, c in s["chosen_phases"].items()),
                         "/".join(map(str, s["timesteps_quartiles"])),
                         " / ".join(f"{q:+.2f}" for q in s["test_pp_quartiles"]), best])
    print(common.markdown_table(
        ["model", "held out", "a K converged (else the fallback's choice)",
         "within one period of the best fixed K's test T*",
         "chose the test's best K", "K chosen (draws)", "chosen T quartiles",
         "test pp at chosen T, quartiles", "test's best K (draws)"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["akamaster20"])
    parser.add_argument("--phases", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--held_out", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--images", choices=("jpeg", "lossless"), default="jpeg",
                        help="jpeg: JPEG training images (MNIST's for lenet5); lossless: "
                        "the 1,900 lossless CIFAR-10 test images (--pool 1400 at most)")
    parser.add_argument("--calibration", type=int, default=500)
    parser.add_argument("--pool", type=int, default=6000)
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--periods", type=int, default=24,
                        help="periods past each K's first readout simulated (the search "
                        "reads its own LatencySearch.periods of them)")
    parser.add_argument("--tolerance", type=float, default=latency.LatencySearch.tolerance)
    parser.add_argument("--search_periods", type=int, default=latency.LatencySearch.periods,
                        help="periods past each K's first readout that the search reads")
    parser.add_argument("--arrays", help="also save each model's per-image results to "
                        "ARRAYS_<model>_<images>.npz")
    parser.add_argument("--from_arrays", action="store_true",
                        help="no simulation: read them from --arrays (same --images, --pool, "
                        "--phases)")
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--smoke", action="store_true",
                        help="akamaster20, pool 300, K 3 and 4, 5 draws")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        common.apply_smoke(parser, args, dict(pool=300, test=150, held_out=[100, 150],
                                              phases=[3, 4], draws=5, periods=9,
                                              calibration=100))
    if args.from_arrays and not args.arrays:
        parser.error("--from_arrays reads the files --arrays names: give --arrays.")
    if max(args.held_out) + args.test > args.pool:
        parser.error(f"--pool {args.pool} cannot hold {max(args.held_out)} held-out and "
                     f"--test {args.test} test images apart: raise --pool.")

    def run(args):
        for name in args.models:
            key = (f"{common.device_label()}, {name}, {args.images}, pool {args.pool}"
                   + (f", search {args.search_periods} periods"
                      if args.search_periods != latency.LatencySearch.periods else "")
                   + (" (smoke)" if args.smoke else ""))
            common.update_json(args.output, key, study(name, args))

    common.run_or_report(args, run, report)


if __name__ == "__main__":
    main()
