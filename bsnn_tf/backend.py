"""The few things that differ between Keras backends: a time scan and compilation."""

import keras
from keras import ops


def time_scan(step, carry, xs, length):
    """Runs `carry, y = step(carry, x_t)` over the leading axis of `xs`.

    Like `jax.lax.scan`, but `y` may differ in structure from `carry`
    (`keras.ops.scan` on TensorFlow requires them to match). Returns
    (final carry, time-major stacked y).
    """
    if keras.backend.backend() == "jax":
        return ops.scan(step, carry, xs, length=length)
    first = keras.tree.map_structure(lambda x: x[0], xs)
    probe_carry, probe_y = step(carry, first)
    del probe_carry
    ys = keras.tree.map_structure(
        lambda y: ops.zeros((length,) + tuple(ops.shape(y)), y.dtype), probe_y
    )

    def body(i, loop_vars):
        carry, ys = loop_vars
        x_i = keras.tree.map_structure(lambda x: x[i], xs)
        carry, y = step(carry, x_i)
        ys = keras.tree.map_structure(
            lambda acc, y_i: ops.slice_update(acc, (i,) + (0,) * len(ops.shape(y_i)), y_i[None]),
            ys,
            y,
        )
        return carry, ys

    return ops.fori_loop(0, length, body, (carry, ys))


def compile_function(fn, variables, jit_compile="auto"):
    """Compiles `fn(*args)` that reads Keras `variables`.

    JAX: `jax.jit`, with the variables' current values passed in through a
    `StatelessScope` so they are arguments of the compiled program, not
    constants baked into it. TensorFlow: `tf.function`, XLA-compiled if
    `jit_compile` is True; "auto" uses XLA when a GPU is present and plain
    graph mode on a CPU, where TensorFlow's own (oneDNN) convolutions run about
    10x faster than XLA's (benchmarks/sim_speed.py). Other backends run `fn`
    eagerly.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_logical_devices("GPU"))
        return tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=True)
    if backend == "jax":
        import jax

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        compiled = jax.jit(stateless)
        return lambda *args: compiled([v.value for v in variables], *args)
    return fn
