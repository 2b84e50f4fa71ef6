"""convert(phases="auto"): the (K, T) chosen is the one with the smallest T at which the
held-out accuracy stays within the tolerance, held to an independent brute force
(`bsnn_tf.evaluate` at each K on the same images, T* computed here); the early stop; the
record surviving a save; bad arguments; convert.py --phases auto."""

import json
import types

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import data, runs
from bsnn_tf.conversion import FineTuning, LatencySearch
from bsnn_tf.conversion.held_out import split_held_out
from conftest import dense_net, images, residual_net
from test_cli import run_convert


def _held_out_rows(count, settings):
    """The held-out slice as documented: the first held_out * n of numpy's permutation."""
    held = int(round(settings.held_out * count))
    order = np.random.default_rng(settings.seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def _brute_force(ann, x, targets, settings, allowed_images, searched):
    """{K: (first readout, {T: accuracy}, T*)}: each K converted on its own and, where
    `searched`, simulated at every period of its grid; T* the smallest T from which, at
    every later grid T, the images the SNN loses against the ANN (the ANN right, the SNN
    wrong) less those it gains are at most `allowed_images` + sqrt(losses + gains), and at
    T itself at most `allowed_images`. A grid
    holds `settings.periods` periods past the first readout; then, in descending K, one
    without a T* is measured again up to the last grid T that beats the best T* so far
    (ties to the smaller K)."""
    fit, held = _held_out_rows(len(x), settings)
    ann_right = np.argmax(ann.predict(x[held], verbose=0), -1) == targets[held]
    snns = {k: bsnn_tf.convert(ann, x[fit], phases=k, verbose=0) for k in settings.phases}

    def measure(k, end):
        snn = snns[k]
        grid = list(range(snn.first_readout, end + 1, k))
        outputs = bsnn_tf.simulate(snn, x[held], timesteps=grid[-1], checkpoints=grid,
                                   count_spikes=False, verbose=0).outputs_at
        right = {t: np.argmax(outputs[t], -1) == targets[held] for t in grid}
        rights[k] = right
        counted = {t: _losses_and_gains(right[t], ann_right) for t in grid}
        counts.update({(k, t): pair for t, pair in counted.items()})
        curve = {t: float(np.mean(right[t])) for t in grid}
        return snn.first_readout, curve, _t_star(counted, allowed_images)

    counts = {}  # (K, T) -> (losses, gains)
    rights = {}  # K -> {T: per held-out image, whether the SNN gets its target}

    found = {k: (snns[k].first_readout, None, None) for k in settings.phases}
    for k in sorted(searched):  # only a searched K's first readout matters otherwise
        found[k] = measure(k, snns[k].first_readout + settings.periods * k)
    for k in sorted(searched, reverse=True) if settings.extend else ():
        first, curve, t_star = found[k]
        best = min(((t, j) for j, (_, _, t) in found.items() if t is not None), default=None)
        if t_star is None and best is not None:
            last = best[0] if k < best[1] else best[0] - 1
            end = first + (last - first) // k * k
            if end > max(curve):
                found[k] = measure(k, end)
    return found, counts, _resampled(rights, ann_right, settings, allowed_images)


def _losses_and_gains(snn_right, ann_right, weights=None):
    """(images the ANN gets right and the SNN not, the reverse), each image counted
    `weights` times (default once)."""
    weights = np.ones(len(ann_right), int) if weights is None else weights
    return (int(np.sum(weights[ann_right & ~snn_right])),
            int(np.sum(weights[snn_right & ~ann_right])))


def _t_star(counts, allowed_images):
    """The smallest T of `counts` ({T: (losses, gains)}) with losses - gains at most
    `allowed_images` from which, at every later T, it is at most `allowed_images` +
    sqrt(losses + gains); None if there is none."""
    grid = sorted(counts)
    within = {t: b - c <= allowed_images + np.sqrt(b + c) for t, (b, c) in counts.items()}
    return min((t for t in grid if counts[t][0] - counts[t][1] <= allowed_images
                and all(within[u] for u in grid if u >= t)), default=None)


def _resampled(rights, ann_right, settings, allowed_images, resamples=200):
    """The choice on each bootstrap resample of the held-out images (row r of numpy's
    `default_rng(seed).multinomial(n, [1 / n] * n, size=200)`: how often each image is
    drawn), made by the rule above over the measured K: [(K, T*) or None]."""
    count = len(ann_right)
    draws = np.random.default_rng(settings.seed).multinomial(count, [1 / count] * count,
                                                             size=resamples)
    choices = []
    for weights in draws:
        t_stars = {k: _t_star({t: _losses_and_gains(right[t], ann_right, weights)
                               for t in right}, allowed_images) for k, right in rights.items()}
        choices.append(min(((t, k) for k, t in t_stars.items() if t is not None),
                           default=None))
    return [None if c is None else (c[1], c[0]) for c in choices]


def _searched(snn):
    return {entry["phases"] for entry in snn.latency_search["searched"]}


def _check_against(snn, brute_force):
    found, counts, resampled = brute_force
    record = snn.latency_search
    searched = {entry["phases"]: entry for entry in record["searched"]}
    for k, entry in searched.items():
        first, curve, t_star = found[k]
        assert entry["first_readout"] == first
        assert entry["t_star"] == t_star, k
        # The first readout is the twin's, the rest a simulation: both match the brute force.
        np.testing.assert_allclose([a for _, a in entry["curve"]], list(curve.values()),
                                   atol=1e-9)
    lossless = {k: t for k, (_, _, t) in found.items() if t is not None and k in searched}
    best_t = min(lossless.values())
    best_k = min(k for k, t in lossless.items() if t == best_t)
    assert (snn.phases, snn.timesteps) == (best_k, best_t)
    losses, gains = counts[best_k, best_t]
    held_out = record["held_out_images"]
    same = [t for choice in resampled if choice and choice[0] == best_k for t in [choice[1]]]
    assert record["chosen"] == {
        "phases": best_k, "timesteps": best_t, "calibration": "percentile", "converged": True,
        "losses": losses, "gains": gains,
        "loss_pp": round(100 * (losses - gains) / held_out, 3),
        "standard_error_pp": round(100 * np.sqrt(losses + gains) / held_out, 3),
        "resampled": {
            "resamples": 200, "share_same_phases": round(len(same) / 200, 3),
            "share_converged": round(sum(c is not None for c in resampled) / 200, 3),
            "timesteps_quartiles": [int(q) for q in np.quantile(same, [0.25, 0.5, 0.75],
                                                                method="lower")]}}
    # Stopped early exactly where a larger K's first readout cannot beat the best T.
    unsearched = [k for k in found if k not in searched]
    assert record["stopped_before"] == (unsearched[0] if unsearched else None)
    for k in unsearched:
        assert found[k][0] >= best_t


@pytest.fixture(scope="module")
def demo():
    """The demo MNIST CNN, 200 labelled test images (100 held out), K = 2..4."""
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT)
    x, y = data.load("mnist", "test", limit=200)
    settings = LatencySearch(phases=(2, 3, 4), periods=2, tolerance=1.0)
    snn = bsnn_tf.convert(ann, x, phases="auto", calibration_labels=y, latency=settings,
                          verbose=0)
    return ann, x, y, settings, snn


@pytest.fixture(scope="module")
def residual():
    """A small random residual net; no labels (agreement with the ANN); K = 3..6."""
    ann = residual_net(seed=1, blocks=2)
    x = images(240, (8, 8, 2), seed=1)
    settings = LatencySearch(phases=(3, 4, 5, 6), periods=4, tolerance=1.0)
    snn = bsnn_tf.convert(ann, x, phases="auto", latency=settings, verbose=0)
    return ann, x, settings, snn


def test_demo_cnn_chooses_the_smallest_lossless_t(demo):
    ann, x, y, settings, snn = demo
    record = snn.latency_search
    assert record["criterion"] == "accuracy"
    assert record["held_out_images"] == 100 and record["calibration_images"] == 100
    assert record["tolerance_images"] == 1  # 1 pp of 100 images
    _check_against(snn, _brute_force(ann, x, y, settings, 1, _searched(snn)))


def test_residual_net_chooses_the_smallest_lossless_t_by_agreement(residual):
    ann, x, settings, snn = residual
    record = snn.latency_search
    assert record["criterion"] == "agreement with the ANN"
    assert record["reference_accuracy"] == 1.0
    targets = np.argmax(ann.predict(x, verbose=0), -1)
    allowed = settings.tolerance * 120 / 100
    _check_against(snn, _brute_force(ann, x, targets, settings, allowed, _searched(snn)))
    assert len(record["searched"]) >= 2  # more than one K compared


def test_a_tolerance_under_one_image_allows_no_net_loss_at_the_chosen_t():
    """0.5 pp of 120 held-out images is 0.6 of an image: at T* the SNN may lose no more
    images than it gains (not one more, as a tolerance rounded up to an image would)."""
    ann = residual_net(seed=1, blocks=2)
    x = images(240, (8, 8, 2), seed=1)
    settings = LatencySearch(phases=(3, 4, 5, 6), periods=4, tolerance=0.5)
    snn = bsnn_tf.convert(ann, x, phases="auto", latency=settings, verbose=0)
    record = snn.latency_search
    assert record["tolerance_images"] == pytest.approx(0.6)
    targets = np.argmax(ann.predict(x, verbose=0), -1)
    _check_against(snn, _brute_force(ann, x, targets, settings, 0.6, _searched(snn)))
    assert record["chosen"]["losses"] <= record["chosen"]["gains"]


def test_a_small_k_is_measured_past_its_periods_where_a_larger_k_leaves_room():
    """With no period past each first readout, a small K is rarely lossless at once; it is
    measured again up to below the best T*, and wins where it converges there."""
    ann = residual_net(seed=1, blocks=2)
    x = images(240, (8, 8, 2), seed=1)
    settings = LatencySearch(phases=(2, 3, 4, 5, 6, 7, 8), periods=0, tolerance=1.0,
                             extend=True)
    snn = bsnn_tf.convert(ann, x, phases="auto", latency=settings, verbose=0)
    extended = [e for e in snn.latency_search["searched"] if e.get("extended")]
    assert extended and all(len(e["curve"]) > 1 for e in extended)
    assert snn.phases in {e["phases"] for e in extended}  # a small K won past its periods
    targets = np.argmax(ann.predict(x, verbose=0), -1)
    _check_against(snn, _brute_force(ann, x, targets, settings, 1.0 * 120 / 100,
                                     _searched(snn)))


def test_by_default_no_k_is_measured_past_its_periods():
    """Without `extend`, each K's grid ends `periods` past its first readout, and the choice
    is the brute force's over those grids alone."""
    ann = residual_net(seed=1, blocks=2)
    x = images(240, (8, 8, 2), seed=1)
    settings = LatencySearch(phases=(2, 3, 4, 5, 6, 7, 8), periods=1, tolerance=1.0)
    snn = bsnn_tf.convert(ann, x, phases="auto", latency=settings, verbose=0)
    record = snn.latency_search
    assert record["extend"] is False
    for entry in record["searched"]:
        assert "extended" not in entry
        assert entry["curve"][-1][0] == entry["first_readout"] + settings.periods * entry["phases"]
    targets = np.argmax(ann.predict(x, verbose=0), -1)
    _check_against(snn, _brute_force(ann, x, targets, settings, 1.0 * 120 / 100,
                                     _searched(snn)))


def test_the_search_stops_where_a_larger_k_cannot_win():
    """K = 2 is lossless at its first readout on the demo CNN (D = 2, T = 6): K = 3's
    first readout, 9, cannot beat it, so nothing past K = 2 is converted."""
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT)
    x, y = data.load("mnist", "test", limit=200)
    settings = LatencySearch(phases=(2, 3, 4, 5, 6, 7, 8), periods=1, tolerance=5.0)
    snn = bsnn_tf.convert(ann, x, phases="auto", calibration_labels=y, latency=settings,
                          verbose=0)
    record = snn.latency_search
    assert [entry["phases"] for entry in record["searched"]] == [2]
    assert record["stopped_before"] == 3
    fit, held = _held_out_rows(len(x), settings)
    twin = bsnn_tf.convert(ann, x[fit], phases=2, verbose=0)
    accuracy = bsnn_tf.evaluate(twin, x[held], y[held], [6, 8], verbose=0)
    ann_accuracy = np.mean(np.argmax(ann.predict(x[held], verbose=0), -1) == y[held])
    assert min(accuracy.values()) >= ann_accuracy - 0.05  # so K = 2 wins at T = 6
    assert (snn.phases, snn.timesteps) == (2, 6)


def test_the_record_survives_a_save(demo, tmp_path):
    snn = demo[-1]
    snn.save(tmp_path / "auto.keras")
    loaded = keras.models.load_model(tmp_path / "auto.keras")
    assert json.loads(json.dumps(loaded.latency_search)) == \
        json.loads(json.dumps(snn.latency_search))
    assert (loaded.phases, loaded.timesteps) == (snn.phases, snn.timesteps)


def test_finetuning_only_where_it_can_pay():
    """calibration="finetune": the first pass at the start calibration; then at most two
    fine-tunes, of the best K and the K below it, and only where their first readout is
    below the best T; the choice is the smallest T over every curve."""
    ann = dense_net(seed=3)
    x = images(420, (6,), seed=3)
    settings = LatencySearch(phases=(2, 3, 4, 5), periods=3, tolerance=3.0, held_out=0.3)
    snn = bsnn_tf.convert(ann, x, phases="auto", calibration="finetune", latency=settings,
                          finetuning=FineTuning(epochs=1, start="percentile"), verbose=0)
    record = snn.latency_search
    first = [e for e in record["searched"] if e["calibration"] == "percentile"]
    tuned = [e for e in record["searched"] if e["calibration"] == "finetune"]
    assert len(tuned) <= 2 and [e["phases"] for e in tuned] == record["finetuned"]
    lossless = [e for e in first if e["t_star"] is not None]
    best = min(lossless, key=lambda e: (e["t_star"], e["phases"]))
    for entry in tuned:
        assert entry["phases"] in (best["phases"], best["phases"] - 1)
        assert entry["first_readout"] < best["t_star"]
    everything = [e for e in record["searched"] if e["t_star"] is not None]
    chosen = min(everything, key=lambda e: (e["t_star"], e["phases"]))
    assert (snn.phases, snn.timesteps) == (chosen["phases"], chosen["t_star"])
    assert record["chosen"]["calibration"] == chosen["calibration"]
    # The noise stated is that of the chosen calibration's curve at the chosen T.
    assert [snn.timesteps, record["chosen"]["losses"], record["chosen"]["gains"]] in \
        chosen["losses_gains"]


def test_without_a_lossless_k_the_best_at_the_end_is_chosen_with_a_warning():
    ann = dense_net(seed=3)
    x = images(300, (6,), seed=3)
    settings = LatencySearch(phases=(1, 2), periods=1, tolerance=0.1)
    with pytest.warns(UserWarning, match=r"no K in \[1, 2\] kept the held-out accuracy"):
        snn = bsnn_tf.convert(ann, x, phases="auto", latency=settings, verbose=0)
    record = snn.latency_search
    assert all(entry["t_star"] is None for entry in record["searched"])
    last = max(record["searched"], key=lambda e: (e["curve"][-1][1], -e["curve"][-1][0]))
    assert record["chosen"]["converged"] is False
    assert (snn.phases, snn.timesteps) == (last["phases"], last["curve"][-1][0])
    losses, gains = last["losses_gains"][-1][1:]
    assert (record["chosen"]["losses"], record["chosen"]["gains"]) == (losses, gains)


@pytest.mark.parametrize("arguments, error, message", [
    (dict(tolerance=0), ValueError, r"tolerance=0 is out of range.*\(0, 100\)"),
    (dict(tolerance=100), ValueError, r"tolerance=100 is out of range"),
    (dict(tolerance="0.1"), TypeError, r"tolerance must be a number"),
    (dict(method="rate"), ValueError, r"phases='auto' searches .* method='rate' has none"),
    (dict(latency=LatencySearch(phases=(4, 3))), ValueError, r"distinct K in ascending"),
    (dict(latency=LatencySearch(phases=(2, 30))), ValueError, r"phases=30 is out of range"),
    (dict(latency=LatencySearch(held_out=1.0)), ValueError, r"held_out must be a fraction"),
    (dict(latency=LatencySearch(extend="yes")), TypeError, r"extend must be True or False"),
    (dict(latency=0.5), TypeError, r"latency must be a bsnn_tf.conversion.LatencySearch"),
    (dict(count=150), ValueError, r"holds out 50% of the 150 calibration images.*at least "
                                  r"100 held out.*Pass at least 199 images"),
    (dict(count=400, calibration="finetune"), ValueError,
     r"at least 100 held out .* and 256 left to calibrate on \(calibration='finetune'\)"),
    (dict(labels=np.zeros((300, 4))), ValueError, r"labels have shape \(300, 4\)"),
    (dict(phases=4, tolerance=0.5), ValueError, r"settings of phases='auto'"),
    (dict(count=(300, 5)), ValueError, r"calibration data has shape \(300, 5\), but the "
                                       r"model expects \(N, 6\)"),
])
def test_bad_arguments_fail_before_any_work(arguments, error, message):
    ann = dense_net(seed=0)
    arguments = {"phases": "auto", "count": 300, **arguments}
    count = arguments.pop("count")
    x = images(count, (6,)) if isinstance(count, int) else images(count[0], count[1:])
    labels = arguments.pop("labels", None)
    with pytest.raises(error, match=message):
        bsnn_tf.convert(ann, x, calibration_labels=labels, verbose=0, **arguments)


REFUSED = [
    (["--phases=auto", "--timesteps=16"], "leave --timesteps and --checkpoints out"),
    (["--phases=auto", "--methods=bsnn,rate"], "rate does not have; run it with --methods=bsnn"),
    (["--phases=auto", "--calibration_size=150"], "--calibration_size of at least 200"),
    (["--phases=auto", "--calibration=finetune", "--calibration_size=500"],
     "it needs at least 256"),
    (["--phases=four"], "--phases takes an integer K (1..24) or auto"),
    (["--phases=auto", "--auto_tolerance=0"], "--auto_tolerance=0.0 is out of range"),
]


def test_convert_py_refuses_what_auto_cannot_do(tmp_path):
    outcomes = run_convert([argv + [f"--output_dir={tmp_path / str(i)}"]
                            for i, (argv, _) in enumerate(REFUSED)], cwd=tmp_path)
    for i, ((argv, message), outcome) in enumerate(zip(REFUSED, outcomes)):
        assert outcome["code"] != 0 and message in outcome["stderr"], (argv, outcome["stderr"])
        assert not (tmp_path / str(i)).exists()


@pytest.mark.parametrize("arguments, held_out, calibrating", [
    ({}, runs.config.AUTO_HELD_OUT, runs.config.CALIBRATION_IMAGES),  # drawn on top
    ({"calibration_size": 600}, 300, 300),  # at most half of a given size
    ({"calibration": "finetune"}, runs.config.AUTO_HELD_OUT,
     runs.config.FINETUNE_IMAGES - runs.config.AUTO_HELD_OUT),
])
def test_convert_py_holds_out_its_images_on_top_of_the_calibration(arguments, held_out,
                                                                  calibrating):
    config = runs.RunConfig(phases="auto", **arguments)
    split = split_held_out(np.zeros((config.calibration_images, 1)), None, config.latency,
                           finetuning=config.calibration == "finetune")
    assert (len(split.x_held), len(split.x_fit)) == (held_out, calibrating)
    assert runs.config.AUTO_HELD_OUT == 1000  # 0.1 pp is one image


def test_a_run_measures_up_to_the_t_that_phases_auto_chose():
    # LatencySearch.periods (12) reaches past the run's default EXTRA_PERIODS (8).
    snn = types.SimpleNamespace(method="bsnn", first_readout=20, phases=4,
                                latency_search={"chosen": {"timesteps": 20 + 12 * 4}})
    assert runs.default_timesteps([snn], "cifar10") == 68
    snn.latency_search = None
    assert runs.default_timesteps([snn], "cifar10") == 20 + runs.EXTRA_PERIODS * 4


def test_convert_py_phases_auto_records_the_search(tmp_path):
    outcome = run_convert([["--phases=auto", "--auto_tolerance=1", "--calibration_size=240",
                            "--limit=40",
                            "--statistics_images=8", f"--output_dir={tmp_path / 'run'}"]],
                          cwd=tmp_path)[0]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    record = results["methods"]["bsnn"]["latency_search"]
    assert record["criterion"] == "accuracy"  # the CLI has the labels
    assert record["tolerance"] == 1.0 and record["tolerance_images"] == 1.2
    assert record["held_out_images"] == 120 and record["calibration_images"] == 120
    chosen = record["chosen"]
    assert results["flags"]["phases"] == "auto"
    # The run measures the chosen K from its first readout on.
    assert results["methods"]["bsnn"]["first_readout"] == (results["methods"]["bsnn"]["depth"]
                                                            + 1) * chosen["phases"]
    assert chosen["timesteps"] in results["timesteps"]
    assert (f"--phases auto chose K = {chosen['phases']}, T = {chosen['timesteps']} "
            in outcome["stdout"])
    net_pp = 100 * (chosen["gains"] - chosen["losses"]) / 120  # "+0.00", never "-0.00"
    assert (f"on 120 held-out images it loses {chosen['losses']} and gains {chosen['gains']} "
            f"against the ANN, {net_pp:+.2f} +- {chosen['standard_error_pp']:.2f} pp"
            in outcome["stdout"])
    resampled = chosen["resampled"]
    assert (f"{resampled['share_same_phases']:.0%} of 200 resamples of them choose "
            f"K = {chosen['phases']}" in outcome["stdout"])
