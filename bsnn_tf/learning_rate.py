"""The learning-rate schedule of training and fine-tuning: linear warm-up, then cosine decay.

`train.py`'s SGD (`bsnn_tf.runs.recipe`) and the finetune stage's Adam
(`bsnn_tf.conversion.finetune`) both follow `warmup_cosine`.

Example:
    >>> schedule = warmup_cosine(0.1, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(step)), 4) for step in (0, 5, 10, 55, 100)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
"""

import keras


def warmup_cosine(peak, total_steps, warmup_steps=0):
    """A learning rate that rises linearly from 0 to `peak` over `warmup_steps`, then falls
    along the cosine to 0 at `total_steps` (at least one step of decay); without a
    warm-up it starts at `peak`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`, saved with the optimizer by name.

    Example:
        >>> schedule = warmup_cosine(0.1, total_steps=100)
        >>> round(float(schedule(0)), 6), round(float(schedule(50)), 6)
        (0.1, 0.05)
    """
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak, decay_steps=max(total_steps - warmup_steps, 1),
        alpha=0.0, warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)
