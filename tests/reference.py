"""Independent, plain-numpy, step-by-step reference simulator for the spiking
networks described in docs/DESIGN.md (after Li, Zhao & Zeng 2022).

It is written from the specification only (it does not import or mirror the
bsnn_tf library) and is deliberately slow and obvious: one Python loop over the
time steps, and within each step one pass over the nodes in topological order.
Everything is float64.

Network description: see ``simulate_reference``.

Conventions (all from DESIGN.md):
  t = 0..T-1, period p = t // K, phase k = t % K, S(t) = 2**-(1 + k),
  Q(v) = clip(floor(v * 2**K) / 2**K, 0, 1 - 2**-K).
"""
from typing import NamedTuple

import numpy as np


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def phase_weight(t, K):
    """S(t) = 2**-(1 + t % K)."""
    return 2.0 ** -(1 + (t % K))


def quantise(v, K):
    """Q(v) = clip(floor(v * 2**K) / 2**K, 0, 1 - 2**-K)."""
    v = np.asarray(v, dtype=np.float64)
    return np.clip(np.floor(v * 2.0 ** K) / 2.0 ** K, 0.0, 1.0 - 2.0 ** -K)


def spike_code_bit(x, K, k):
    """Bit k (k = 0 is the most significant bit, weight 1/2) of Q(x)."""
    levels = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** K)
    levels = np.clip(levels, 0, 2 ** K - 1).astype(np.int64)
    return ((levels >> (K - 1 - k)) & 1).astype(np.float64)


def _axis_geometry(n, window, stride, padding):
    """Output length and (pad_before, pad_after) along one spatial axis, with the
    TensorFlow/Keras rules ('same': out = ceil(n / stride), the extra pad cell
    goes after, i.e. at the bottom / right)."""
    if padding == "valid":
        out = (n - window) // stride + 1
        if out <= 0:
            raise ValueError(f"window {window} larger than input {n} with 'valid' padding")
        return out, 0, 0
    if padding == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + window - n, 0)
        return out, total // 2, total - total // 2
    raise ValueError(f"unknown padding {padding!r}")


def _geometry(v_shape, window, strides, padding):
    """(out_h, out_w, ((top, bottom), (left, right))) for an (N, H, W, C) input."""
    _, H, W, _ = v_shape
    oh, top, bottom = _axis_geometry(H, window[0], strides[0], padding)
    ow, left, right = _axis_geometry(W, window[1], strides[1], padding)
    return oh, ow, ((top, bottom), (left, right))


def _pad_hw(v, pads, value=0.0):
    (top, bottom), (left, right) = pads
    return np.pad(v, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


# --------------------------------------------------------------------------
# Linear ops (ANN semantics, applied to the value emitted at one step)
# --------------------------------------------------------------------------

def conv2d(v, kernel, strides, padding):
    """Plain 2-D convolution (cross-correlation, as in Keras), no bias."""
    kh, kw, cin, cout = kernel.shape
    assert v.ndim == 4 and v.shape[-1] == cin, (v.shape, kernel.shape)
    sh, sw = strides
    oh, ow, pads = _geometry(v.shape, (kh, kw), strides, padding)
    out = np.zeros((v.shape[0], oh, ow, cout))
    if not v.any():                      # a silent input gives a zero output
        return out
    vp = _pad_hw(v, pads)
    for i in range(oh):
        for j in range(ow):
            patch = vp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]      # (N, kh, kw, cin)
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
    return out


def depthwise_conv2d(v, kernel, strides, padding):
    """Depthwise 2-D convolution: output channel c * m + j reads input channel c only."""
    kh, kw, cin, mult = kernel.shape
    assert v.ndim == 4 and v.shape[-1] == cin, (v.shape, kernel.shape)
    sh, sw = strides
    oh, ow, pads = _geometry(v.shape, (kh, kw), strides, padding)
    out = np.zeros((v.shape[0], oh, ow, cin * mult))
    vp = _pad_hw(v, pads)
    for i in range(oh):
        for j in range(ow):
            patch = vp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]      # (N, kh, kw, cin)
            per_channel = np.einsum("nhwc,hwcm->ncm", patch, kernel)
            out[:, i, j, :] = per_channel.reshape(v.shape[0], cin * mult)
    return out


def dense(v, kernel):
    assert v.ndim == 2 and v.shape[1] == kernel.shape[0], (v.shape, kernel.shape)
    return v @ kernel


def avgpool(v, pool_size, strides, padding):
    """Average pooling; with 'same' padding the padded cells are excluded from
    the average (Keras semantics)."""
    ph, pw = pool_size
    sh, sw = strides
    oh, ow, pads = _geometry(v.shape, pool_size, strides, padding)
    vp = _pad_hw(v, pads)
    real = _pad_hw(np.ones((1,) + v.shape[1:3] + (1,)), pads)   # 1 on real cells, 0 on padding
    out = np.zeros((v.shape[0], oh, ow, v.shape[3]))
    for i in range(oh):
        for j in range(ow):
            window = vp[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :]
            count = real[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :].sum()
            out[:, i, j, :] = window.sum(axis=(1, 2)) / count
    return out


def global_avgpool(v, keepdims=False):
    assert v.ndim == 4
    return v.mean(axis=(1, 2), keepdims=keepdims)


def crop(v, cropping):
    (top, bottom), (left, right) = cropping
    return v[:, top:v.shape[1] - bottom, left:v.shape[2] - right, :]


def upsample(v, size):
    """Nearest-neighbour upsampling: every unit repeated size[0] x size[1] times."""
    return np.repeat(np.repeat(v, size[0], axis=1), size[1], axis=2)


def flatten(v):
    return v.reshape(v.shape[0], -1)      # row-major (H, W, C)


def zeropad(v, padding):
    return _pad_hw(v, padding)


# --------------------------------------------------------------------------
# Spiking max gate
# --------------------------------------------------------------------------

def max_gate_select(cum, cur, pool_size, strides, padding):
    """For every pooling window pick the unit with the largest cumulative value
    `cum`; ties go to the larger current value `cur`, then to the first unit of
    the window in row-major order.  Padding cells are silent units (cum 0,
    cur 0).  Returns the winner's `cur` for every output position/channel."""
    ph, pw = pool_size
    sh, sw = strides
    oh, ow, pads = _geometry(cum.shape, pool_size, strides, padding)
    cum_p = _pad_hw(cum, pads)
    cur_p = _pad_hw(cur, pads)
    N, C = cum.shape[0], cum.shape[3]
    out = np.zeros((N, oh, ow, C))
    for i in range(oh):
        for j in range(ow):
            # (N, ph*pw, C), window cells in row-major order
            wc = cum_p[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :].reshape(N, ph * pw, C)
            wv = cur_p[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :].reshape(N, ph * pw, C)
            best_cum = wc.max(axis=1, keepdims=True)
            candidate = wc == best_cum
            best_cur = np.where(candidate, wv, -np.inf).max(axis=1, keepdims=True)
            candidate &= wv == best_cur
            winner = np.argmax(candidate, axis=1)               # first True (row-major)
            out[:, i, j, :] = np.take_along_axis(wv, winner[:, None, :], axis=1)[:, 0, :]
    return out


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------

class Step(NamedTuple):
    """Step t of a run of `method` with K phases: its period p, phase k and spike weight s."""

    t: int
    method: str
    K: int

    @property
    def p(self):
        return self.t // self.K

    @property
    def k(self):
        return self.t % self.K

    @property
    def s(self):
        return phase_weight(self.t, self.K)

    @property
    def last_phase(self):
        return self.k == self.K - 1

    @property
    def readout_phases(self):
        return 1 if self.method == "rate" else self.K      # rate coding has no phases


def simulate_reference(net: dict, x: np.ndarray, timesteps: int, silence_from=None) -> dict:
    """Simulate `net` on the batch `x` for `timesteps` steps.

    net = {"method": "bsnn" | "phase" | "rate", "phases": K,
           "input_encoding": "real" | "spike",
           "nodes": [ {"name", "op", "inputs", ...op fields}, ... ]}   (topological order)

    x: (N, *input_shape) float.  Returns a dict with
      'logits':  (N, T, classes), logits[:, t-1] = logits(T=t) (DESIGN.md readout),
      'outputs': {neuron node: (N, T, *unit_shape)} value emitted at every step
                 (0 or the spike weight: S(t) for bsnn/phase, 1 for rate),
      'spikes':  {neuron node: (N,)} number of (unit, step) emissions,
      'gates':   {maxpool node: (N, T, *unit_shape)} what each max gate emitted.
    Neuron nodes: {"op": "neuron", "inputs": [one], "bias": array broadcastable
    to the unit shape, "start": start period (bias gating, bsnn), "initial":
    membrane potential at rest (default 0; both neurons of a BIF unit)}.
    silence_from: {neuron node: step} from which that neuron's emissions are
    dropped (to probe which spikes reach the logits; `schedule_windows`).
    """
    method = net["method"]
    if method not in ("bsnn", "phase", "rate"):
        raise ValueError(f"unknown method {method!r}")
    K = int(net["phases"])                      # phases of the spike code / of BSNN and phase IF
    encoding = net["input_encoding"]
    if encoding not in ("real", "spike"):
        raise ValueError(f"unknown input encoding {encoding!r}")
    nodes = net["nodes"]
    assert nodes[0]["op"] == "input" and nodes[-1]["op"] == "readout"
    x = np.asarray(x, dtype=np.float64)
    N, T = x.shape[0], int(timesteps)

    state = {n["name"]: {} for n in nodes}      # per-node persistent state
    recorded = {"neuron": {}, "maxpool": {}, "readout": {}}   # per-step records per node
    for t in range(T):
        step = Step(t, method, K)
        value = {}                              # what every node emits at this step
        for node in nodes:
            name, op = node["name"], node["op"]
            ins = [value[i] for i in node["inputs"]]
            if op == "input":
                out = _input(x, encoding, step)
            elif op in STATELESS:
                out = STATELESS[op](node, ins)
            elif op in STATEFUL:
                out, record = STATEFUL[op](node, ins, state[name], step)
                if t >= (silence_from or {}).get(name, T):
                    out = record = np.zeros_like(out)
                if name not in recorded[op]:
                    recorded[op][name] = np.zeros((N, T) + record.shape[1:])
                recorded[op][name][:, t] = record
            else:
                raise ValueError(f"unknown op {op!r} (node {name!r})")
            value[name] = out

    outputs = recorded["neuron"]
    (logits,) = recorded["readout"].values()
    spikes = {name: (o != 0).reshape(N, -1).sum(axis=1) for name, o in outputs.items()}
    return {"logits": logits, "outputs": outputs, "spikes": spikes, "gates": recorded["maxpool"]}


def _input(x, encoding, step):
    """What the input layer emits at `step`."""
    if encoding == "spike":
        return step.s * spike_code_bit(x, step.K, step.k)
    if step.method == "bsnn":
        return x * (1.0 if step.k == 0 else 0.0)
    if step.method == "phase":
        return x * step.s
    return x.copy()  # rate


def _f64(array):
    return np.asarray(array, np.float64)


def _add(ins):
    assert len(ins) >= 2
    out = ins[0].copy()
    for v in ins[1:]:
        out = out + v
    return out


def _concat(ins):
    assert len(ins) >= 2
    return np.concatenate(ins, axis=-1)


# Ops without state: (node, inputs) -> output.
STATELESS = {
    "conv2d": lambda node, ins: conv2d(ins[0], _f64(node["kernel"]), tuple(node["strides"]),
                                       node["padding"]),
    "depthwise": lambda node, ins: depthwise_conv2d(ins[0], _f64(node["kernel"]),
                                                    tuple(node["strides"]), node["padding"]),
    "dense": lambda node, ins: dense(ins[0], _f64(node["kernel"])),
    "avgpool": lambda node, ins: avgpool(ins[0], tuple(node["pool_size"]),
                                         tuple(node["strides"]), node["padding"]),
    "gap": lambda node, ins: global_avgpool(ins[0], node.get("keepdims", False)),
    "flatten": lambda node, ins: flatten(ins[0]),
    "zeropad": lambda node, ins: zeropad(ins[0], node["padding"]),
    "crop": lambda node, ins: crop(ins[0], node["cropping"]),
    "upsample": lambda node, ins: upsample(ins[0], node["size"]),
    "reshape": lambda node, ins: ins[0].reshape((ins[0].shape[0],) + tuple(node["target_shape"])),
    "add": lambda node, ins: _add(ins),
    "concat": lambda node, ins: _concat(ins),
    "scale": lambda node, ins: ins[0] * _f64(node["scale"]),
}


# --------------------------------------------------------------------------
# Reading a synapse layer: the op it is, keyed by its class's name
# --------------------------------------------------------------------------
# Written here from the Keras layers' own attributes, not taken from the library's
# op table, so that the oracle does not share the code it checks. Only duck-typed
# attribute reads: this module imports nothing of Keras or bsnn_tf.

def _weights64(layer):
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


def _pool_fields(layer):
    return {"pool_size": tuple(layer.pool_size), "strides": tuple(layer.strides),
            "padding": layer.padding}


def _int_pairs(values):
    return tuple(tuple(int(v) for v in axis) for axis in values)


SYNAPSE_OPS = {
    "Conv2D": lambda layer: {"op": "conv2d", "kernel": _weights64(layer)[0],
                             "strides": tuple(layer.strides), "padding": layer.padding},
    "DepthwiseConv2D": lambda layer: {"op": "depthwise", "kernel": _weights64(layer)[0],
                                      "strides": tuple(layer.strides),
                                      "padding": layer.padding},
    "Dense": lambda layer: {"op": "dense", "kernel": _weights64(layer)[0]},
    "ChannelAffine": lambda layer: {"op": "scale", "scale": _weights64(layer)[0]},
    "AveragePooling2D": lambda layer: {"op": "avgpool", **_pool_fields(layer)},
    "GlobalAveragePooling2D": lambda layer: {"op": "gap", "keepdims": layer.keepdims},
    "Flatten": lambda layer: {"op": "flatten"},
    "Reshape": lambda layer: {"op": "reshape", "target_shape": tuple(layer.target_shape)},
    "ZeroPadding2D": lambda layer: {"op": "zeropad", "padding": _int_pairs(layer.padding)},
    "Cropping2D": lambda layer: {"op": "crop", "cropping": _int_pairs(layer.cropping)},
    "UpSampling2D": lambda layer: {"op": "upsample", "size": tuple(layer.size)},
    "Add": lambda layer: {"op": "add"},
    "Concatenate": lambda layer: {"op": "concat"},
}


def synapse_op(layer):
    """The node description of a synapse layer (an op of `STATELESS`), by its class."""
    for cls in type(layer).__mro__:
        if cls.__name__ in SYNAPSE_OPS:
            return SYNAPSE_OPS[cls.__name__](layer)
    raise KeyError(f"no reference op for {type(layer).__name__}")


def _maxpool(node, ins, st, step):
    """The max gate: (output, output recorded as the gate's)."""
    v = ins[0]
    pool, strides, padding = tuple(node["pool_size"]), tuple(node["strides"]), node["padding"]
    if not st:
        st["cum"] = np.zeros_like(v)
        st["buffer"] = np.zeros_like(v)
    if step.method != "bsnn":
        st["cum"] += v
        out = max_gate_select(st["cum"], v, pool, strides, padding)
        return out, out
    # hold the window's input for the whole period; at the last phase pass on the
    # winner's period total
    st["buffer"] += v
    if step.last_phase:
        st["cum"] += st["buffer"]
        out = max_gate_select(st["cum"], st["buffer"], pool, strides, padding)
        st["buffer"][...] = 0.0
    else:
        oh, ow, _ = _geometry(v.shape, pool, strides, padding)
        out = np.zeros((v.shape[0], oh, ow, v.shape[3]))
    return out, out


def _neuron(node, ins, st, step):
    """One step of a neuron: (output, output recorded as the neuron's)."""
    assert len(ins) == 1, "a neuron node has exactly one input"
    bias = _f64(node.get("bias", 0.0))
    start = int(node.get("start", 0))
    if step.method == "bsnn":
        drive = 1.0 if (step.k == 0 and step.p >= start) else 0.0
    elif step.method == "phase":
        drive = step.s
    else:
        drive = 1.0
    current = ins[0] + bias * drive
    rest = float(node.get("initial", 0.0))     # membrane at rest
    if step.method == "bsnn":
        out = _bistable(st, current, rest, step)
    else:  # phase: IF with threshold S(t); rate: IF with threshold 1; both soft reset
        threshold = step.s if step.method == "phase" else 1.0
        if not st:
            st["V"] = np.full_like(current, rest)
        st["V"] = st["V"] + current
        fire = st["V"] >= threshold
        st["V"] = st["V"] - fire * threshold
        out = fire * threshold
    return out, out


def _bistable(st, current, rest, step):
    """The BIF unit's pair: one spikes (phase-IF rule, no input), the other integrates."""
    if not st:
        st["A"] = np.full_like(current, rest)
        st["B"] = np.full_like(current, rest)
    # A spikes in even periods, B in odd ones (both start at V = 0,
    # so the parity is not observable in the unit's output)
    spiking, integrating = ("A", "B") if step.p % 2 == 0 else ("B", "A")
    fire = st[spiking] >= step.s
    st[spiking] = st[spiking] - fire * step.s
    st[integrating] = st[integrating] + current
    return fire * step.s


def _readout(node, ins, st, step):
    """The readout: (its input, passed on; the logits of T = t + 1)."""
    assert len(ins) == 1, "the readout has exactly one input"
    v = ins[0]
    assert v.ndim == 2, "the readout's input must be a vector of logits"
    bias = _f64(node.get("bias", 0.0))
    start_steps = int(node.get("start", 0)) * step.readout_phases
    if not st:
        st["acc"] = np.zeros_like(v)
    if step.t >= start_steps:
        st["acc"] = st["acc"] + v
    eff = (step.t + 1 - start_steps) / step.readout_phases      # logits(T = t + 1)
    logits = np.broadcast_to(bias, v.shape) if eff <= 0 else st["acc"] / eff + bias
    return v, logits


# Ops with state: (node, inputs, its state, step) -> (output, what is recorded per step).
STATEFUL = {"maxpool": _maxpool, "neuron": _neuron, "readout": _readout}


# --------------------------------------------------------------------------
# Conveniences for tests
# --------------------------------------------------------------------------

def period_values(out, K):
    """(N, T, ...) per-step emissions -> (N, T // K, ...) per-period totals y(p)."""
    N, T = out.shape[:2]
    P = T // K
    return out[:, :P * K].reshape((N, P, K) + out.shape[2:]).sum(axis=2)


# --------------------------------------------------------------------------
# The schedule a run that reads the logits at T only needs (light cone)
# --------------------------------------------------------------------------

def schedule_windows(net: dict, timesteps: int) -> dict:
    """{neuron node: (first step, end step)}: the steps whose spikes can still reach
    the logits at T, from the node's start to the readout's horizon.

    From the specification: a BSNN neuron with start period s is at rest before
    period s (its input's first spikes and its bias arrive in s; a membrane at
    rest of at least one level, 2**-K, emits from period 0, so then it starts at
    0). It emits in period p + 1 what it integrated in period p, while every other
    node passes its input on in the same step; the readout counts the periods
    before E = ceil(T / K). So a neuron's spikes in period p reach the readout in
    period p + h, h the fewest neurons after it on a path to the readout (in a
    synchronized net, the spiking depth D minus its own depth), and matter only
    before period E - h. The baselines' neurons emit in the step they integrate
    and start at step 0: their window is the whole run.
    """
    K, T, nodes = int(net["phases"]), int(timesteps), net["nodes"]
    neurons = [n for n in nodes if n["op"] == "neuron"]
    if net["method"] != "bsnn":
        return {n["name"]: (0, T) for n in neurons}
    after = {nodes[-1]["name"]: 0}  # neurons crossed from a node's output to the readout
    for node in reversed(nodes[:-1]):
        consumers = [c for c in nodes if node["name"] in c["inputs"]]
        after[node["name"]] = min(after[c["name"]] + (c["op"] == "neuron") for c in consumers)
    horizon = -(-T // K)
    windows = {}
    for node in neurons:
        rest = float(node.get("initial", 0.0))
        first = 0 if rest >= 2.0 ** -K else int(node.get("start", 0))
        end = min((horizon - after[node["name"]]) * K, T)
        windows[node["name"]] = (min(first * K, T), max(end, min(first * K, T)))
    return windows


def spikes_in_windows(outputs: dict, windows: dict) -> dict:
    """{neuron node: (N,)} emissions of `simulate_reference`'s 'outputs' inside each
    node's (first step, end step) window."""
    return {name: (outputs[name][:, first:end] != 0).reshape(len(outputs[name]), -1).sum(axis=1)
            for name, (first, end) in windows.items()}
