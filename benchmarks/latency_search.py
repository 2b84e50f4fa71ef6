"""`phases="auto"` against every fixed K, on test images it never saw (issue 35).

For each model: `bsnn_tf.convert(ann, x, phases="auto", calibration_labels=y)` on
2 x `--held_out` images (half calibrate, half are held out; the library's
defaults otherwise), timed; then, on test images disjoint from them, T* (the
first T from which accuracy stays within 0.1 pp of the ANN's) of each fixed K in
`--phases`, calibrated on the same images as the search's (`held_out.split_held_out`),
and of the K the search chose (that SNN itself). The search's own T is checked
on the test images too, and the synaptic operations and energy per image at it
are counted on the run's schedule (`--statistics_images` test images).
`--yardstick` runs no search: it says how firmly the test images rank the fixed K
(each K's T* on each half of them and on `--resamples` bootstrap resamples).

Images (`--images`): "lossless" (default): the search on the first
2 x `--held_out` of the 1,900 lossless CIFAR-10 test images, T* on the rest;
"jpeg": the search on JPEG training images, T* on `--limit` JPEG test images.
Held-out and test images must be of one kind: on the JPEG copy akamaster's
ResNet-20 scores 74.8% (test) and 87.7% (training images), and its SNN, calibrated
on JPEG training images, stays 2-3 pp below it on JPEG test images at every K.

Models: akamaster20 (weights in ../shared/data), akamaster32/44/56 (their .th
files in $BSNN_AKAMASTER_DIR, default /tmp/akamaster, fetched from
akamaster/pytorch_resnet_cifar10), ours20 (pretrained/cifar10_resnet20.keras).
Results are merged into benchmarks/results/latency_search.json.

Usage (from the repository root; time the search with nothing else running):
    python benchmarks/latency_search.py --models akamaster20 akamaster56
    python benchmarks/latency_search.py --models akamaster56 --search_only   # alone
    python benchmarks/latency_search.py --models akamaster20 --yardstick     # no search
    python benchmarks/latency_search.py --smoke
    python benchmarks/latency_search.py --report
"""

import argparse
import time

import common
import finetune_study
import numpy as np

import bsnn_tf
from bsnn_tf import data, metrics
from bsnn_tf.conversion import held_out, latency
from bsnn_tf.models import thirdparty

OUTPUT = common.RESULTS_DIR / "latency_search.json"


def images(name, args):
    """(ann, the search's images and labels, the test images and labels) of `--images`."""
    ann, x_test, y_test, x_train, y_train = finetune_study.load(name, 2 * args.held_out,
                                                                args.data_dir)
    if args.images == "lossless":  # search on the first 2 x held_out, test on the rest
        split = 2 * args.held_out
        x_train, y_train = x_test[:split], y_test[:split]
        x_test, y_test = x_test[split:], y_test[split:]
    else:  # the JPEG test images: the held-out images' kind
        test = data.find("cifar10", "test", args.data_dir)
        x_test, y_test = thirdparty.cifar10_akamaster_preprocess(
            test.pixels(range(args.limit))), test.labels[:args.limit]
    return ann, x_train, y_train, x_test[:args.limit], y_test[:args.limit]


def study(name, args):
    ann, x_train, y_train, x_test, y_test = images(name, args)
    ann_accuracy = float(np.mean(np.argmax(ann.predict(x_test, batch_size=256, verbose=0),
                                           -1) == y_test))
    settings = latency.LatencySearch(tolerance=args.tolerance, held_out=0.5,
                                     extend=args.extend)
    start = time.perf_counter()
    snn = bsnn_tf.convert(ann, x_train, phases="auto", calibration_labels=y_train,
                          calibration=args.calibration, latency=settings, verbose=0)
    search_seconds = time.perf_counter() - start
    record = snn.latency_search
    chosen_k, chosen_t = snn.phases, snn.timesteps
    print(f"{name}: ANN {ann_accuracy:.2%} on {len(y_test)} test images; auto chose "
          f"K={chosen_k}, T={chosen_t} in {search_seconds:.0f} s", flush=True)
    if args.search_only:
        return {"model": name, "depth": snn.depth, "held_out_images": record["held_out_images"],
                "search_seconds": round(search_seconds, 1), "search": record,
                "chosen": {"phases": chosen_k, "timesteps": chosen_t}, **common.run_header()}
    split = held_out.split_held_out(x_train, y_train, settings, args.calibration == "finetune")
    fixed = {}
    for phases in sorted(set(args.phases) | {chosen_k}):
        snn_k = snn if phases == chosen_k else fixed_k(ann, split, phases, args.calibration)
        fixed[phases] = curve(snn_k, x_test, y_test, ann_accuracy, args.periods)
        print(f"  K={phases}: first readout {fixed[phases]['first_readout']}, "
              f"T* {fixed[phases]['t_star']}", flush=True)
    at_chosen = bsnn_tf.simulate(snn, x_test, timesteps=chosen_t, count_spikes=False,
                                 verbose=0).accuracy(y_test, chosen_t)
    counted = bsnn_tf.simulate(snn, x_test[:args.statistics_images], timesteps=chosen_t,
                               verbose=0)
    energy = metrics.energy(snn, counted)
    operations = sum(metrics.synaptic_operations(snn, counted).values())
    best = min((row["t_star"] for k, row in fixed.items() if k in args.phases
                and row["t_star"] is not None), default=None)
    return {
        "model": name, "depth": snn.depth, "ann_accuracy": ann_accuracy,
        "test_images": len(y_test), "held_out_images": record["held_out_images"],
        "calibration_images": record["calibration_images"], "tolerance": args.tolerance,
        "calibration": args.calibration,
        "search_seconds": round(search_seconds, 1), "search": record,
        "chosen": {"phases": chosen_k, "timesteps": chosen_t,
                   "test_accuracy_at_timesteps": at_chosen,
                   "test_t_star": fixed[chosen_k]["t_star"]},
        "fixed": {str(k): row for k, row in fixed.items()},
        "best_fixed_t_star": best,
        "energy_at_chosen": {"images": args.statistics_images,
                             "synops_per_mac": operations / sum(metrics.ann_macs(snn).values()),
                             "snn_per_ann": energy["snn_per_ann"],
                             "snn_pj": energy["snn_pj"], "ann_pj": energy["ann_pj"],
                             "count_window": counted.count_window},
        **common.run_header()}


def fixed_k(ann, split, phases, calibration):
    """The SNN at K = `phases`, calibrated on the search's calibrating images."""
    labels = {"calibration_labels": split.y_fit} if calibration == "finetune" else {}
    return bsnn_tf.convert(ann, split.x_fit, phases=phases, calibration=calibration,
                           verbose=0, **labels)


def yardstick(name, args):
    """How firmly the test images rank the fixed K: each K's T* on the test images, on
    each half of them, and on `--resamples` bootstrap resamples of them (the ANN scored
    on the same resample), calibrated as the search's K are."""
    ann, x_train, y_train, x_test, y_test = images(name, args)
    ann_right = np.argmax(ann.predict(x_test, batch_size=256, verbose=0), -1) == y_test
    settings = latency.LatencySearch(tolerance=args.tolerance, held_out=0.5)
    split = held_out.split_held_out(x_train, y_train, settings, args.calibration == "finetune")
    rng = np.random.default_rng(common.SEED)
    count = len(y_test)
    weights = {"all": np.ones((1, count)),
               "halves": np.stack([np.arange(count) < count // 2,
                                   np.arange(count) >= count // 2]).astype(float),
               "resamples": rng.multinomial(count, np.full(count, 1 / count),
                                            size=args.resamples).astype(float)}
    t_stars = {}
    for phases in args.phases:
        snn = fixed_k(ann, split, phases, args.calibration)
        grid = list(range(snn.first_readout,
                          snn.first_readout + (args.periods + 1) * phases, phases))
        result = bsnn_tf.simulate(snn, x_test, timesteps=grid[-1], checkpoints=grid,
                                  count_spikes=False, verbose=0)
        right = np.stack([np.argmax(result.outputs_at[t], -1) == y_test for t in grid])
        t_stars[phases] = {kind: _t_stars(w, right, ann_right, grid, args.tolerance)
                           for kind, w in weights.items()}
        accuracy = {t: float(np.mean(row)) for t, row in zip(grid, right)}
        if t_stars[phases]["all"][0] != common.t_star(accuracy, float(np.mean(ann_right)),
                                                      args.tolerance / 100):
            raise AssertionError(f"K={phases}: the resampling's T* on all test images "
                                 "differs from common.t_star's")
        print(f"  K={phases}: T* {t_stars[phases]['all'][0]} (halves "
              f"{t_stars[phases]['halves']})", flush=True)
    return {"model": name, "test_images": count, "calibration": args.calibration,
            "tolerance": args.tolerance, "resamples": args.resamples,
            "fixed": {str(k): {"t_star": row["all"][0], "halves": row["halves"],
                               **_spread(row["resamples"])} for k, row in t_stars.items()},
            "best": _ranks({k: row["resamples"] for k, row in t_stars.items()}),
            **common.run_header()}


def _t_stars(weights, right, ann_right, grid, tolerance):
    """T* (None: not within the grid) on each weighting of the test images (rows of
    `weights`): the first grid T from which the SNN's weighted accuracy stays within
    `tolerance` pp of the ANN's; `right` is (grid, images)."""
    snn = weights @ right.T.astype(float) / weights.sum(1, keepdims=True)
    ann = weights @ ann_right.astype(float) / weights.sum(1)
    within = snn >= ann[:, None] - tolerance / 100 - 1e-9
    holds = np.flip(np.cumprod(np.flip(within, 1), 1), 1).astype(bool)  # within to the end
    return [grid[int(np.argmax(row))] if row[-1] else None for row in holds]


def _spread(t_stars):
    """Quartiles of T* over the resamples (None as after the grid) and the share with one."""
    found = np.array([t if t is not None else np.inf for t in t_stars])
    quartiles = [None if np.isinf(q) else float(q)
                 for q in np.quantile(found, [0.25, 0.5, 0.75], method="lower")]
    return {"quartiles": quartiles, "share_with_t_star": float(np.mean(np.isfinite(found)))}


def _ranks(t_stars):
    """Per K, the share of resamples in which it has the smallest T* (ties to the smaller
    K) and the share in which its T* is within one of its periods of the smallest."""
    phases = sorted(t_stars)
    found = np.array([[t if t is not None else np.inf for t in t_stars[k]] for k in phases])
    best = found.min(0)
    winner = np.argmin(found, 0)
    has = np.isfinite(best)
    return {str(k): {"share_best": float(np.mean(has & (winner == i))),
                     "share_within_one_period": float(np.mean(
                         has & (found[i] <= best + k)))}
            for i, k in enumerate(phases)} | {"share_none": float(np.mean(~has))}


def curve(snn, x_test, y_test, ann_accuracy, periods):
    """The test accuracy at each period from the first readout, and T*."""
    grid = list(range(snn.first_readout, snn.first_readout + (periods + 1) * snn.phases,
                      snn.phases))
    result = bsnn_tf.simulate(snn, x_test, timesteps=grid[-1], checkpoints=grid,
                              count_spikes=False, verbose=0)
    accuracy = {t: result.accuracy(y_test, t) for t in grid}
    return {"first_readout": snn.first_readout, "accuracy": accuracy,
            "t_star": common.t_star(accuracy, ann_accuracy)}


def report(path):
    results = common.stored_results(path)
    rows = []
    for key, r in results.items():
        if "fixed" not in r or "search" not in r:
            continue
        fixed = {int(k): row["t_star"] for k, row in r["fixed"].items()}
        chosen = r["chosen"]
        rows.append([key, r["depth"] + 1, *[fixed.get(k, "-") or "none" for k in (3, 4, 5, 6)],
                     f"K={chosen['phases']}, T={chosen['timesteps']}",
                     chosen["test_t_star"] or "none",
                     f"{100 * (chosen['test_accuracy_at_timesteps'] - r['ann_accuracy']):+.2f}",
                     r["search_seconds"],
                     f"{r['energy_at_chosen']['synops_per_mac']:.2f}",
                     f"{r['energy_at_chosen']['snn_per_ann']:.3f}"])
    if rows:
        print(common.markdown_table(
            ["model", "layers", "T* K=3", "T* K=4", "T* K=5", "T* K=6", "auto's choice",
             "auto's T* (test)", "test pp at auto's T", "search (s)",
             "synops / MAC at auto's T", "energy SNN / ANN"], rows))
    searches = [[key, r["held_out_images"], f"K={r['chosen']['phases']}, "
                 f"T={r['chosen']['timesteps']}", r["search_seconds"],
                 ", ".join(f"K={e['phases']}: {e['t_star']}" + (" (extended)" if e.get(
                     "extended") else "") for e in r["search"]["searched"]),
                 _firmness(r["search"]["chosen"].get("resampled"))]
                for key, r in results.items() if "fixed" not in r]
    if searches:
        print()
        print(common.markdown_table(["search only", "held out", "choice", "seconds",
                                     "held-out T* per K", "resamples choosing K: share, "
                                     "T quartiles"], searches))
    yardsticks = [[key, f"K={k}", row["t_star"] or "none",
                   " / ".join(str(t or "none") for t in row["halves"]),
                   " / ".join(str(int(q)) if q else "none" for q in row["quartiles"]),
                   f"{r['best'][k]['share_best']:.0%}",
                   f"{r['best'][k]['share_within_one_period']:.0%}"]
                  for key, r in results.items() if "search" not in r and "fixed" in r
                  for k, row in r["fixed"].items()]
    if yardsticks:
        print()
        print(common.markdown_table(
            ["yardstick", "K", "test T*", "T* on each half", "T* quartiles, resampled",
             "best on resamples", "within one period of the best"], yardsticks))


def _firmness(resampled):
    if resampled is None:  # recorded before the search resampled its choice
        return "-"
    quartiles = resampled["timesteps_quartiles"]
    return (f"{resampled['share_same_phases']:.0%}, "
            + ("/".join(map(str, quartiles)) if quartiles else "none"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["akamaster20"])
    parser.add_argument("--phases", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--held_out", type=int, default=500,
                        help="held-out images; as many again calibrate")
    parser.add_argument("--tolerance", type=float, default=latency.LatencySearch.tolerance)
    parser.add_argument("--images", choices=("lossless", "jpeg"), default="lossless",
                        help="lossless: the search on the first 2 x held_out lossless test "
                        "images, T* on the others; jpeg: the search on JPEG training images, "
                        "T* on JPEG test images")
    parser.add_argument("--limit", type=int, default=1900, help="test images, at most")
    parser.add_argument("--periods", type=int, default=24,
                        help="periods past each K's first readout measured on the test images")
    parser.add_argument("--statistics_images", type=int, default=64)
    parser.add_argument("--search_only", action="store_true",
                        help="time the search alone (key suffix ' search')")
    parser.add_argument("--calibration", choices=("percentile", "finetune"),
                        default="percentile", help="of the search and of every fixed K "
                        "(key suffix ' finetune')")
    parser.add_argument("--yardstick", action="store_true",
                        help="no search: each fixed K's test T* on the test images, their "
                        "halves and --resamples bootstrap resamples (key suffix ' yardstick')")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--extend", action="store_true",
                        help="LatencySearch(extend=True) (key suffix ' extend')")
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--smoke", action="store_true",
                        help="akamaster20, 100 held out, 32 test images, K 3 and 4")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        common.apply_smoke(parser, args, dict(held_out=100, limit=32, periods=2,
                                              statistics_images=8, phases=[3, 4]))

    def run(args):
        for name in args.models:
            entry = (yardstick if args.yardstick else study)(name, args)
            key = (f"{common.device_label()}, {name}, {args.images}"
                   + (" search" if args.search_only else "")
                   + (" yardstick" if args.yardstick else "")
                   + (" extend" if args.extend else "")
                   + (" finetune" if args.calibration == "finetune" else "")
                   + (f" {args.held_out} held out" if args.held_out != 500 else "")
                   + (" (smoke)" if args.smoke else ""))
            common.update_json(args.output, key, entry)

    common.run_or_report(args, run, report)


if __name__ == "__main__":
    main()
