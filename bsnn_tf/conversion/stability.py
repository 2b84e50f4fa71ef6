"""How firm `phases="auto"`'s choice is: the search's choice made again on bootstrap
resamples of its held-out images.

Each resample draws the n held-out images n times with replacement (numpy's
`default_rng(seed).multinomial(n, [1 / n] * n, size=resamples)`: row r holds how
often each image is drawn). On it every measured K's losses and gains are the
drawn images' sums, each K's T* follows the search's own rule on its own grid,
and the (K, T*) with the smallest T* is chosen, ties to the smaller K. Only the
K the search measured take part (a K it stopped before cannot be chosen). The
share of resamples that choose the search's K says how firmly the held-out
images rank the K; the spread of that K's T* over them, how firmly they place T.
A share well below 1 asks for more held-out images.

Example:
    >>> import numpy as np
    >>> right = {(4, "percentile"): ([80, 84], np.ones((2, 100), bool))}
    >>> firm = stability(right, np.ones(100, bool), lambda grid, counts: grid[0],
    ...                  (4, "percentile"), resamples=10)
    >>> firm["share_same_phases"], firm["timesteps_quartiles"]
    (1.0, [80, 80, 80])
"""

import numpy as np

RESAMPLES = 200


def stability(right, ann_right, t_star, chosen, resamples=RESAMPLES, seed=0):
    """The choice on `resamples` bootstrap resamples of the held-out images.

    Args:
        right: {(K, calibration): (grid, (len(grid), n) bool array)}: per grid T, whether
            the SNN gets each held-out image's target.
        ann_right: (n,) bool: whether the ANN gets it.
        t_star: (grid, {T: (losses, gains)}) -> T* or None, the search's rule.
        chosen: the search's (K, calibration).

    Returns:
        {"resamples", "share_same_phases": the share choosing K as the search did,
        "share_converged": the share in which some K has a T*, "timesteps_quartiles":
        the quartiles of the chosen (K, calibration)'s T* over the resamples that choose
        it (None where none does)}.
    """
    count = len(ann_right)
    draws = np.random.default_rng(seed).multinomial(count, np.full(count, 1 / count),
                                                    size=resamples)
    made = choices(right, ann_right, t_star, draws)
    same = [t for key, t in made if key is not None and key[0] == chosen[0]]
    at_chosen = [t for key, t in made if key == tuple(chosen)]
    return {"resamples": resamples,
            "share_same_phases": round(len(same) / resamples, 3),
            "share_converged": round(sum(key is not None for key, _ in made) / resamples, 3),
            "timesteps_quartiles": ([int(q) for q in np.quantile(at_chosen, [0.25, 0.5, 0.75],
                                                                 method="lower")]
                                    if at_chosen else None)}


def choices(right, ann_right, t_star, weights):
    """The search's choice once per row of `weights`: how often each held-out image
    counts (a bootstrap resample's draws, or 0/1 for a subset).

    Args:
        right, ann_right, t_star: as for `stability`.
        weights: (rows, n) int array.

    Returns:
        Per row, ((K, calibration), T*) with the smallest T*, ties to the smaller K;
        (None, None) where no K has a T*.

    Example:
        >>> import numpy as np
        >>> right = {(3, "percentile"): ([60, 63], np.ones((2, 4), bool)),
        ...          (4, "percentile"): ([80, 84], np.ones((2, 4), bool))}
        >>> first = lambda grid, counts: grid[0] if counts[grid[0]] == (0, 0) else None
        >>> choices(right, np.array([True, True, False, False]), first, np.eye(4, dtype=int))
        [((3, 'percentile'), 60), ((3, 'percentile'), 60), (None, None), (None, None)]
    """
    t_stars = {key: _t_stars(grid, rows, ann_right, weights, t_star)
               for key, (grid, rows) in right.items()}
    return [_smallest(t_stars, r) for r in range(len(weights))]


def _t_stars(grid, rows, ann_right, weights, t_star):
    """Per row of `weights`, the T* of one K's grid."""
    losses = weights @ (ann_right & ~rows).T  # (len(weights), len(grid))
    gains = weights @ (rows & ~ann_right).T
    return [t_star(grid, {t: (int(b), int(c)) for t, b, c in zip(grid, lost, gained)})
            for lost, gained in zip(losses, gains)]


def _smallest(t_stars, row):
    """((K, calibration), T*) with the smallest T* on one row, ties to the smaller K;
    (None, None) where no K has one."""
    found = [(t[row], key) for key, t in t_stars.items() if t[row] is not None]
    if not found:
        return None, None
    t, key = min(found, key=lambda item: (item[0], item[1][0]))
    return key, t
