"""Independent, plain-numpy, step-by-step reference simulator for the spiking
networks described in docs/DESIGN.md (and ../shared/design/BSNN-SPEC.md).

It is written from the specification only (it does not import or mirror the
bsnn_tf library) and is deliberately slow and obvious: one Python loop over the
time steps, and within each step one pass over the nodes in topological order.
Everything is float64.

Network description: see ``simulate_reference``.

Conventions (all from DESIGN.md):
  t = 0..T-1, period p = t // K, phase k = t % K, S(t) = 2**-(1 + k),
  Q(v) = clip(floor(v * 2**K) / 2**K, 0, 1 - 2**-K).
"""
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

def simulate_reference(net: dict, x: np.ndarray, timesteps: int) -> dict:
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
    """
    method = net["method"]
    if method not in ("bsnn", "phase", "rate"):
        raise ValueError(f"unknown method {method!r}")
    K = int(net["phases"])                      # phases of the spike code / of BSNN and phase IF
    K_readout = 1 if method == "rate" else K    # rate coding has no phases
    encoding = net["input_encoding"]
    if encoding not in ("real", "spike"):
        raise ValueError(f"unknown input encoding {encoding!r}")
    nodes = net["nodes"]
    assert nodes[0]["op"] == "input" and nodes[-1]["op"] == "readout"
    x = np.asarray(x, dtype=np.float64)
    N, T = x.shape[0], int(timesteps)

    state = {n["name"]: {} for n in nodes}      # per-node persistent state
    outputs, gates = {}, {}
    logits = None

    for t in range(T):
        p, k = divmod(t, K)
        s = phase_weight(t, K)
        last_phase = k == K - 1
        value = {}                              # what every node emits at this step

        for node in nodes:
            name, op = node["name"], node["op"]
            ins = [value[i] for i in node["inputs"]]
            st = state[name]

            if op == "input":
                if encoding == "spike":
                    out = s * spike_code_bit(x, K, k)
                elif method == "bsnn":
                    out = x * (1.0 if k == 0 else 0.0)
                elif method == "phase":
                    out = x * s
                else:  # rate
                    out = x.copy()

            elif op == "conv2d":
                out = conv2d(ins[0], np.asarray(node["kernel"], np.float64),
                             tuple(node["strides"]), node["padding"])
            elif op == "depthwise":
                out = depthwise_conv2d(ins[0], np.asarray(node["kernel"], np.float64),
                                       tuple(node["strides"]), node["padding"])
            elif op == "dense":
                out = dense(ins[0], np.asarray(node["kernel"], np.float64))
            elif op == "avgpool":
                out = avgpool(ins[0], tuple(node["pool_size"]), tuple(node["strides"]),
                              node["padding"])
            elif op == "gap":
                out = global_avgpool(ins[0], node.get("keepdims", False))
            elif op == "flatten":
                out = flatten(ins[0])
            elif op == "zeropad":
                out = zeropad(ins[0], node["padding"])
            elif op == "crop":
                out = crop(ins[0], node["cropping"])
            elif op == "upsample":
                out = upsample(ins[0], node["size"])
            elif op == "reshape":
                out = ins[0].reshape((ins[0].shape[0],) + tuple(node["target_shape"]))
            elif op == "add":
                assert len(ins) >= 2
                out = ins[0].copy()
                for v in ins[1:]:
                    out = out + v
            elif op == "concat":
                assert len(ins) >= 2
                out = np.concatenate(ins, axis=-1)
            elif op == "scale":
                out = ins[0] * np.asarray(node["scale"], np.float64)

            elif op == "maxpool":
                v = ins[0]
                pool, strides, padding = (tuple(node["pool_size"]), tuple(node["strides"]),
                                          node["padding"])
                if not st:
                    st["cum"] = np.zeros_like(v)
                    st["buffer"] = np.zeros_like(v)
                if method == "bsnn":
                    # hold the window's input for the whole period; at the last
                    # phase pass on the winner's period total
                    st["buffer"] += v
                    if last_phase:
                        st["cum"] += st["buffer"]
                        out = max_gate_select(st["cum"], st["buffer"], pool, strides, padding)
                        st["buffer"][...] = 0.0
                    else:
                        oh, ow, _ = _geometry(v.shape, pool, strides, padding)
                        out = np.zeros((N, oh, ow, v.shape[3]))
                else:
                    st["cum"] += v
                    out = max_gate_select(st["cum"], v, pool, strides, padding)
                if name not in gates:
                    gates[name] = np.zeros((N, T) + out.shape[1:])
                gates[name][:, t] = out

            elif op == "neuron":
                assert len(ins) == 1, "a neuron node has exactly one input"
                syn = ins[0]
                bias = np.asarray(node.get("bias", 0.0), np.float64)
                start = int(node.get("start", 0))
                if method == "bsnn":
                    drive = 1.0 if (k == 0 and p >= start) else 0.0
                elif method == "phase":
                    drive = s
                else:
                    drive = 1.0
                current = syn + bias * drive
                rest = float(node.get("initial", 0.0))     # membrane at rest
                if method == "bsnn":
                    if not st:
                        st["A"] = np.full_like(current, rest)
                        st["B"] = np.full_like(current, rest)
                    # A spikes in even periods, B in odd ones (both start at V = 0,
                    # so the parity is not observable in the unit's output)
                    spiking, integrating = ("A", "B") if p % 2 == 0 else ("B", "A")
                    # spike-stage neuron: phase-IF rule, no input
                    fire = st[spiking] >= s
                    st[spiking] = st[spiking] - fire * s
                    out = fire * s
                    # non-spike-stage neuron: integrates the current
                    st[integrating] = st[integrating] + current
                elif method == "phase":
                    if not st:
                        st["V"] = np.full_like(current, rest)
                    st["V"] = st["V"] + current
                    fire = st["V"] >= s
                    st["V"] = st["V"] - fire * s
                    out = fire * s
                else:  # rate: IF with soft reset, threshold 1
                    if not st:
                        st["V"] = np.full_like(current, rest)
                    st["V"] = st["V"] + current
                    fire = st["V"] >= 1.0
                    st["V"] = st["V"] - fire * 1.0
                    out = fire * 1.0
                if name not in outputs:
                    outputs[name] = np.zeros((N, T) + out.shape[1:])
                outputs[name][:, t] = out

            elif op == "readout":
                assert len(ins) == 1, "the readout has exactly one input"
                v = ins[0]
                assert v.ndim == 2, "the readout's input must be a vector of logits"
                bias = np.asarray(node.get("bias", 0.0), np.float64)
                start_steps = int(node.get("start", 0)) * K_readout
                if not st:
                    st["acc"] = np.zeros_like(v)
                    logits = np.zeros((N, T, v.shape[1]))
                if t >= start_steps:
                    st["acc"] = st["acc"] + v
                eff = (t + 1 - start_steps) / K_readout      # logits(T = t + 1)
                if eff <= 0:
                    logits[:, t] = bias
                else:
                    logits[:, t] = st["acc"] / eff + bias
                out = v

            else:
                raise ValueError(f"unknown op {op!r} (node {name!r})")

            value[name] = out

    spikes = {name: (o != 0).reshape(N, -1).sum(axis=1) for name, o in outputs.items()}
    return {"logits": logits, "outputs": outputs, "spikes": spikes, "gates": gates}


# --------------------------------------------------------------------------
# Conveniences for tests
# --------------------------------------------------------------------------

def period_values(out, K):
    """(N, T, ...) per-step emissions -> (N, T // K, ...) per-period totals y(p)."""
    N, T = out.shape[:2]
    P = T // K
    return out[:, :P * K].reshape((N, P, K) + out.shape[2:]).sum(axis=2)
