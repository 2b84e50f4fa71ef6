"""The few things that differ between Keras backends: a time scan, compilation, devices.

Data parallelism reuses each backend's own engine: `keras.distribution.DataParallel`
on JAX (one program over a device mesh, the batch axis sharded) and
`tf.distribute.MirroredStrategy` on TensorFlow (one replica per device, each
running a slice of the batch). `distribution_scope` hands it to the Keras
engine (fit, evaluate, predict); `devices` gives the simulation the same over
its own compiled functions.
"""

import contextlib
import functools
import logging

import keras
import numpy as np
from keras import ops

DISTRIBUTED_BACKENDS = ("jax", "tensorflow")


def time_scan(step, carry, xs, length):
    """Runs `carry, y = step(carry, x_t)` over the leading axis of `xs`.

    Like `jax.lax.scan`, but `y` may differ in structure from `carry`
    (`keras.ops.scan` on TensorFlow requires them to match). Returns
    (final carry, time-major stacked y). On TensorFlow the outputs go into
    TensorArrays, written once each: a preallocated buffer updated in the loop
    is copied at every step and allocated before the loop starts.
    """
    if keras.backend.backend() == "jax":
        return ops.scan(step, carry, xs, length=length)
    if keras.backend.backend() != "tensorflow":
        outputs = []
        for i in range(length):
            carry, y = step(carry, keras.tree.map_structure(lambda x: x[i], xs))
            outputs.append(y)
        return carry, keras.tree.map_structure(lambda *ys: ops.stack(ys), *outputs)
    import tensorflow as tf

    _, probe_y = step(carry, keras.tree.map_structure(lambda x: x[0], xs))  # shapes only
    arrays = keras.tree.map_structure(
        lambda y: tf.TensorArray(y.dtype, size=length, element_shape=y.shape), probe_y)

    def body(i, carry, arrays):
        carry, y = step(carry, keras.tree.map_structure(lambda x: x[i], xs))
        arrays = keras.tree.map_structure(lambda array, y_i: array.write(i, y_i), arrays, y)
        return i + 1, carry, arrays

    _, carry, arrays = tf.while_loop(lambda i, *_: i < length, body, (0, carry, arrays))
    return carry, keras.tree.map_structure(lambda array: array.stack(), arrays)


def population_count(n):
    """The set bits of each element of the int32 tensor `n`, as int32.

    One native op on TensorFlow and JAX (spike counting runs it on every
    neuron output: a third of the SWAR count's cost on a TensorFlow CPU);
    elsewhere the SWAR count, a dozen integer ops.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.cast(tf.raw_ops.PopulationCount(x=n), "int32")
    if keras.backend.backend() == "jax":
        import jax

        return jax.lax.population_count(n)
    n = n - ops.bitwise_and(ops.right_shift(n, 1), 0x55555555)
    n = ops.bitwise_and(n, 0x33333333) + ops.bitwise_and(ops.right_shift(n, 2), 0x33333333)
    n = ops.bitwise_and(n + ops.right_shift(n, 4), 0x0F0F0F0F)
    return ops.right_shift(n * 0x01010101, 24)


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
        _drop_retracing_warnings(fn)
        return tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=True)
    if backend == "jax":
        return _jax_jit(fn, variables, lambda: [v.value for v in variables])
    return fn


class _ExpectedTracing(logging.Filter):
    """Drops TensorFlow's retracing warning for functions that are traced once each, on
    purpose (the simulation compiles one function per skewed chunk, from one closure)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def filter(self, record):
        message = record.getMessage()
        return "retracing" not in message or not any(n in message for n in self.names)


_EXPECTED_TRACING = _ExpectedTracing()


def _drop_retracing_warnings(fn):
    _EXPECTED_TRACING.names.add(getattr(fn, "__qualname__", ""))
    logger = logging.getLogger("tensorflow")
    if _EXPECTED_TRACING not in logger.filters:
        logger.addFilter(_EXPECTED_TRACING)


def _jax_jit(fn, variables, values):
    """`jax.jit(fn)`, reading `variables` as the arguments `values()` of the compiled program."""
    import jax

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    compiled = jax.jit(stateless)
    return lambda *args: compiled(values(), *args)


def distribution_scope(distribute):
    """A scope in which Keras models are built for data parallelism over all local devices.

    Models built (or loaded, or cloned) in it split every batch of `fit`,
    `evaluate` and `predict` over the devices; run those in the scope too.
    TensorFlow: a `MirroredStrategy` scope; JAX: a `DataParallel` scope.
    A no-op scope when `distribute` is False.

    Example:
        >>> with distribution_scope(True):
        ...     model = keras.models.load_model("model.keras")
        ...     logits = model.predict(x, batch_size=128, verbose=0)  # 64 a device on 2 devices
    """
    if not distribute:
        return contextlib.nullcontext()
    return _data_parallel().scope()


def devices(distribute):
    """Where the simulation runs: the default device, or (`distribute`) all local devices.

    The returned object compiles functions and moves batch-major trees (every
    leaf has the batch on axis 0) to and from its devices; see `OneDevice`.
    """
    return _data_parallel() if distribute else OneDevice()


class OneDevice:
    """Runs compiled functions on the default device, a whole batch at a time.

    The interface of the data-parallel `devices`: `count` devices, batches
    must be a multiple of it; `put` places a batch-major tree of inputs;
    `compile` compiles `fn(*args)`, which takes and returns batch-major trees
    as put (plus scalars); `to_numpy` gathers a result into numpy arrays.
    """

    count = 1
    distribution = None  # a keras.distribution.Distribution or tf.distribute.Strategy

    def scope(self):
        """The scope in which to build, load or call models for this placement."""
        return contextlib.nullcontext() if self.distribution is None else self.distribution.scope()

    def put(self, tree):
        return tree

    def compile(self, fn, variables, jit_compile="auto"):
        return compile_function(fn, variables, jit_compile)

    def to_numpy(self, tree):
        return keras.tree.map_structure(ops.convert_to_numpy, tree)


class _JaxDataParallel(OneDevice):
    """`keras.distribution.DataParallel` over all local devices: jit programs with sharded batches.

    Inputs are sharded on the batch axis (`NamedSharding(mesh, PartitionSpec("batch"))`),
    variables are replicated, and every output of a compiled function is
    constrained to the batch sharding, so a state carried between calls stays
    split over the devices.
    """

    def __init__(self):
        self.distribution = keras.distribution.DataParallel()
        self.count = self.distribution.num_model_replicas

    def put(self, tree):
        return keras.tree.map_structure(self._shard, tree)

    def _shard(self, x):
        return keras.distribution.distribute_tensor(
            x, self.distribution.get_data_layout(x.shape))

    def compile(self, fn, variables, jit_compile="auto"):
        layouts = [self.distribution.get_variable_layout(v) for v in variables]
        return _jax_jit(lambda *args: self.put(fn(*args)), variables,
                        _replicated_values(variables, layouts))


def _replicated_values(variables, layouts):
    """A function giving the variables' values placed by `layouts` (copied once per assignment)."""
    cache = {"values": [], "placed": []}

    def values():
        current = [v.value for v in variables]
        if len(current) != len(cache["values"]) or any(
                a is not b for a, b in zip(current, cache["values"])):
            cache["values"] = current
            cache["placed"] = [keras.distribution.distribute_tensor(value, layout)
                               for value, layout in zip(current, layouts)]
        return cache["placed"]

    return values


class _MirroredReplicas(OneDevice):
    """`tf.distribute.MirroredStrategy` over all local devices: one replica per device.

    `put` gives every replica its contiguous slice of the batch (a tree of
    `PerReplica` values); compiled functions run once per replica with
    `strategy.run`, on their slices, and return per-replica trees, so a state
    carried between calls stays on its devices; `to_numpy` concatenates the
    replicas' slices in order. Variables stay where they are (read by every
    replica).
    """

    def __init__(self):
        import tensorflow as tf

        self.distribution = tf.distribute.MirroredStrategy()
        self.count = self.distribution.num_replicas_in_sync

    def put(self, tree):
        import tensorflow as tf

        def replica_slice(context):
            index = context.replica_id_in_sync_group
            with tf.device(self.distribution.extended.worker_devices[index]):
                return tf.nest.map_structure(lambda x: tf.identity(_part(x, index, self.count)),
                                             tree)

        return self.distribution.experimental_distribute_values_from_function(replica_slice)

    def compile(self, fn, variables, jit_compile="auto"):
        compiled = compile_function(fn, variables, jit_compile)
        return lambda *args: self.distribution.run(compiled, args=args)

    def to_numpy(self, tree):
        import tensorflow as tf

        return tf.nest.map_structure(
            lambda value: np.concatenate([ops.convert_to_numpy(part) for part in
                                          self.distribution.experimental_local_results(value)]),
            tree)


def _part(x, index, parts):
    """The `index`-th of `parts` equal slices of `x` along axis 0."""
    size = len(x) // parts
    return x[index * size:(index + 1) * size]


@functools.cache
def _data_parallel():
    """The process's data-parallel devices (one object, so compiled functions are reused)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _JaxDataParallel()
    if backend == "tensorflow":
        return _MirroredReplicas()
    raise ValueError(f"Data parallelism is not supported on the {backend} backend "
                     f"(only on {' and '.join(DISTRIBUTED_BACKENDS)}).")
