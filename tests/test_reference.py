"""Tests of the independent numpy reference simulator (tests/reference.py)
against closed forms, hand-made examples, an independent ANN forward, and the
Dense-only numpy prototype of the spec (ported below)."""
import numpy as np
import pytest

from reference import (period_values, phase_weight, quantise, schedule_windows,
                       simulate_reference, spike_code_bit, spikes_in_windows)


# ==========================================================================
# PORTED PROTOTYPE -- copied from shared/design/prototype/bsnn_proto.py
# (unchanged apart from formatting), used as an independent oracle.
# ==========================================================================

def proto_S(t, K): return 2.0 ** -(1 + t % K)


def proto_Q(v, K): return np.clip(np.floor(v * 2 ** K) / 2 ** K, 0, 1 - 2.0 ** -K)


def proto_bsnn_step(Ws, bs, x, T, K, gate=False):
    L = len(Ws); V = [np.zeros((2, W.shape[1])) for W in Ws[:-1]]   # [A, B] membranes per hidden layer
    out = np.zeros(Ws[-1].shape[1])
    per_layer_y = [np.zeros((T // K, W.shape[1])) for W in Ws[:-1]]
    for t in range(T):
        p, k, s = t // K, t % K, proto_S(t, K)
        spk_idx = 0 if p % 2 == 0 else 1; int_idx = 1 - spk_idx
        prev = None  # weighted spikes of layer l-1 at this step
        for l in range(L):
            on = (k == 0) and (not gate or p >= l)
            if l == 0:
                cur = (x @ Ws[0] + bs[0]) if on else 0.0
            else:
                cur = prev @ Ws[l] + (bs[l] if on else 0.0)
            if l == L - 1:
                out += cur; break
            V[l][int_idx] += cur
            fire = V[l][spk_idx] >= s
            V[l][spk_idx] -= fire * s
            prev = fire * s
            per_layer_y[l][p] += prev
    return out, per_layer_y


def proto_bsnn_period(Ws, bs, x, P, K, gate=False):
    L = len(Ws); V = [np.zeros((2, W.shape[1])) for W in Ws[:-1]]
    out = np.zeros(Ws[-1].shape[1]); per_layer_y = [np.zeros((P, W.shape[1])) for W in Ws[:-1]]
    for p in range(P):
        spk_idx = 0 if p % 2 == 0 else 1; int_idx = 1 - spk_idx
        ys = []
        for l in range(L - 1):                     # all spiking neurons emit from their stored membrane
            y = proto_Q(V[l][spk_idx], K); V[l][spk_idx] -= y; ys.append(y); per_layer_y[l][p] = y
        for l in range(L):                         # all integrating neurons take this period's input
            b = bs[l] if (not gate or p >= l) else 0.0
            cur = (x @ Ws[0] + b) if l == 0 else ys[l - 1] @ Ws[l] + b
            if l == L - 1: out += cur
            else: V[l][int_idx] += cur
    return out, per_layer_y


def proto_phase_step(Ws, bs, x, T, K):
    """Weighted-spike baseline (Kim 2018): one neuron per unit, input every step, may fire every step."""
    L = len(Ws); V = [np.zeros(W.shape[1]) for W in Ws[:-1]]; out = np.zeros(Ws[-1].shape[1])
    fired = [np.zeros(W.shape[1]) for W in Ws[:-1]]
    for t in range(T):
        s = proto_S(t, K); prev = None
        for l in range(L):
            cur = (x @ Ws[0] + bs[0]) * s if l == 0 else prev @ Ws[l] + bs[l] * s
            if l == L - 1: out += cur; break
            V[l] += cur; f = V[l] >= s; V[l] -= f * s; prev = f * s; fired[l] += f
    return out, fired


def proto_ann(Ws, bs, x):
    acts = []; h = x
    for l, (W, b) in enumerate(zip(Ws, bs)):
        h = h @ W + b
        if l < len(Ws) - 1: h = np.maximum(h, 0); acts.append(h)
    return h, acts


def proto_normalise(Ws, bs, xs):
    """data-norm: lambda_l = max activation of hidden layer l of the original net over xs."""
    lams = np.max([[a.max() for a in proto_ann(Ws, bs, x)[1]] for x in xs], axis=0)
    Ws, bs = [W.copy() for W in Ws], [b.copy() for b in bs]; lam_prev = 1.0
    for l, lam in enumerate(lams):
        Ws[l] *= lam_prev / lam; bs[l] /= lam; lam_prev = lam
    Ws[-1] *= lam_prev
    return Ws, bs

# ==========================================================================
# END OF PORTED PROTOTYPE
# ==========================================================================


# --------------------------------------------------------------------------
# Net builders
# --------------------------------------------------------------------------

def dense_chain_net(Ws, bs, method, K, gate=True, encoding="real"):
    """input -> [dense -> neuron] * (L-1) -> dense -> readout.  Neuron l has
    start l (if gate) and the readout starts at the depth L-1 (bsnn) or 0."""
    nodes = [{"name": "in", "op": "input", "inputs": []}]
    prev = "in"
    L = len(Ws)
    for l in range(L - 1):
        nodes.append({"name": f"fc{l}", "op": "dense", "inputs": [prev], "kernel": Ws[l]})
        nodes.append({"name": f"n{l}", "op": "neuron", "inputs": [f"fc{l}"], "bias": bs[l],
                      "start": l if (gate and method == "bsnn") else 0})
        prev = f"n{l}"
    nodes.append({"name": "fc_out", "op": "dense", "inputs": [prev], "kernel": Ws[-1]})
    nodes.append({"name": "out", "op": "readout", "inputs": ["fc_out"], "bias": bs[-1],
                  "start": (L - 1) if method == "bsnn" else 0})
    return {"method": method, "phases": K, "input_encoding": encoding, "nodes": nodes}


def probe_net(method, K, linear_nodes, last, encoding="real", readout_start=0, classes=None):
    """input -> linear_nodes... -> flatten -> identity dense -> readout, so that
    the readout's logits show the value of node `last` (used to check linear ops)."""
    nodes = [{"name": "in", "op": "input", "inputs": []}] + list(linear_nodes)
    nodes.append({"name": "flat_probe", "op": "flatten", "inputs": [last]})
    nodes.append({"name": "id_probe", "op": "dense", "inputs": ["flat_probe"],
                  "kernel": np.eye(classes)})
    nodes.append({"name": "out", "op": "readout", "inputs": ["id_probe"],
                  "bias": np.zeros(classes), "start": readout_start})
    return {"method": method, "phases": K, "input_encoding": encoding, "nodes": nodes}


# --------------------------------------------------------------------------
# Independent numpy ANN ops (written differently from reference.py: kernel-
# offset loops instead of output-position loops, TF's "n % s" pad formula)
# --------------------------------------------------------------------------

def tf_same_pad(n, k, s):
    total = max(k - (s if n % s == 0 else n % s), 0)
    return total // 2, total - total // 2


def ann_conv(x, W, strides, padding):
    kh, kw, _, cout = W.shape
    sh, sw = strides
    N, H, Wd, _ = x.shape
    if padding == "same":
        (t, b), (l, r) = tf_same_pad(H, kh, sh), tf_same_pad(Wd, kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    oh = (x.shape[1] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    out = np.zeros((N, oh, ow, cout))
    for a in range(kh):
        for c in range(kw):
            sl = x[:, a:a + sh * (oh - 1) + 1:sh, c:c + sw * (ow - 1) + 1:sw, :]
            out += sl @ W[a, c]
    return out


def ann_pool(x, pool, strides, padding, kind):
    ph, pw = pool
    sh, sw = strides
    N, H, Wd, C = x.shape
    ones = np.ones((1, H, Wd, 1))
    fill = -np.inf if kind == "max" else 0.0
    if padding == "same":
        (t, b), (l, r) = tf_same_pad(H, ph, sh), tf_same_pad(Wd, pw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
        ones = np.pad(ones, ((0, 0), (t, b), (l, r), (0, 0)))
    oh = (x.shape[1] - ph) // sh + 1
    ow = (x.shape[2] - pw) // sw + 1
    acc = np.full((N, oh, ow, C), fill)
    cnt = np.zeros((1, oh, ow, 1))
    for a in range(ph):
        for c in range(pw):
            sl = x[:, a:a + sh * (oh - 1) + 1:sh, c:c + sw * (ow - 1) + 1:sw, :]
            cnt += ones[:, a:a + sh * (oh - 1) + 1:sh, c:c + sw * (ow - 1) + 1:sw, :]
            acc = np.maximum(acc, sl) if kind == "max" else acc + sl
    return acc if kind == "max" else acc / cnt


# --------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------

def test_phase_weight_and_quantiser():
    K = 4
    assert [phase_weight(t, K) for t in range(6)] == [0.5, 0.25, 0.125, 0.0625, 0.5, 0.25]
    np.testing.assert_array_equal(quantise([-0.3, 0.0, 0.3, 0.5, 0.99, 2.0], 2),
                                  [0.0, 0.0, 0.25, 0.5, 0.75, 0.75])
    # 0.6875 = 0.1011b
    assert [float(spike_code_bit(0.6875, 4, k)) for k in range(4)] == [1, 0, 1, 1]
    assert [float(spike_code_bit(1.5, 3, k)) for k in range(3)] == [1, 1, 1]   # clipped
    assert [float(spike_code_bit(-1.0, 3, k)) for k in range(3)] == [0, 0, 0]


def single_unit_net(method, K, readout_start=1, bias_out=0.0, neuron_bias=0.0, start=0):
    nodes = [
        {"name": "in", "op": "input", "inputs": []},
        {"name": "n", "op": "neuron", "inputs": ["in"], "bias": np.array([neuron_bias]),
         "start": start},
        {"name": "fc", "op": "dense", "inputs": ["n"], "kernel": np.eye(1)},
        {"name": "out", "op": "readout", "inputs": ["fc"], "bias": np.array([bias_out]),
         "start": readout_start},
    ]
    return {"method": method, "phases": K, "input_encoding": "real", "nodes": nodes}


@pytest.mark.parametrize("K", [1, 2, 3, 8])
def test_bif_unit_constant_current_closed_form(K):
    """A BIF unit fed c once per period: nothing in period 0; then A emits in odd
    periods and B in even periods >= 2, each neuron greedily quantising its
    membrane.  For 0 <= c <= 1 - 2^-K the n-th spike stage of either neuron
    leaves a cumulative output floor(n c 2^K) / 2^K; for larger c every stage
    emits 1 - 2^-K; for c <= 0 nothing.  A K-bit c is emitted as Q(c) = c in
    every period from period 1 on.  (Non-dyadic currents are chosen so that
    n c 2^K, n <= 4, is never within float rounding of an integer.)"""
    P = 9
    T = P * K
    one = 2.0 ** K
    cs = np.array([0.0, -0.4, 0.3, 0.37, 0.7, 1 - 1 / one, 2.0, 5 / 16, 0.5])
    res = simulate_reference(single_unit_net("bsnn", K), cs[:, None], T)
    out = res["outputs"]["n"][:, :, 0]                        # (N, T)
    y = period_values(res["outputs"]["n"], K)[:, :, 0]        # (N, P)
    for i, c in enumerate(cs):
        assert y[i, 0] == 0.0
        expect = np.zeros(P)
        for p in range(1, P):
            n = (p + 1) // 2        # stage number of this period's spiking neuron (A: p odd, B: p even)
            if c <= 0:
                cum = lambda m: 0.0
            elif c <= 1 - 1 / one:
                cum = lambda m: np.floor(m * c * one) / one
            else:
                cum = lambda m: m * (1 - 1 / one)
            expect[p] = cum(n) - cum(n - 1)
        np.testing.assert_array_equal(y[i], expect, err_msg=f"c={c}")
        # the spikes in period p are the binary expansion of y(p), MSB at phase 0
        for p in range(P):
            bits = [spike_code_bit(y[i, p], K, k) for k in range(K)]
            np.testing.assert_array_equal(out[i, p * K:(p + 1) * K],
                                          [b * 2.0 ** -(1 + k) for k, b in enumerate(bits)])
        # spike count = number of set bits
        assert res["spikes"]["n"][i] == sum(int(spike_code_bit(v, K, k)) for v in y[i] for k in range(K))
    # a K-bit current is reproduced exactly from period 1 on
    kbit = np.floor(0.7 * one) / one
    r = simulate_reference(single_unit_net("bsnn", K), np.array([[kbit]]), T)
    np.testing.assert_array_equal(period_values(r["outputs"]["n"], K)[0, 1:, 0], kbit)


def test_bif_gated_bias_and_readout_normalisation():
    K, P = 4, 6
    T = P * K
    start, b_out = 2, 0.25
    # bias-only neuron (input 0) with start 2: integrates 0.625 from period 2, emits from period 3
    net = single_unit_net("bsnn", K, readout_start=3, bias_out=b_out, neuron_bias=0.625, start=start)
    res = simulate_reference(net, np.zeros((1, 1)), T)
    y = period_values(res["outputs"]["n"], K)[0, :, 0]
    np.testing.assert_array_equal(y, [0, 0, 0, 0.625, 0.625, 0.625])
    # readout: acc from step 3K on, logits = acc / ((T - 3K) / K) + b
    out = res["outputs"]["n"][0, :, 0]
    logits = res["logits"][0, :, 0]
    for Tc in range(1, T + 1):
        eff = (Tc - 3 * K) / K
        expect = b_out if eff <= 0 else out[3 * K:Tc].sum() / eff + b_out
        assert logits[Tc - 1] == pytest.approx(expect, abs=1e-15)
    assert logits[-1] == pytest.approx(0.625 + b_out)


def test_rate_if_closed_form():
    """IF with soft reset and constant dyadic current c in [0, 1]: floor(t c)
    spikes after t steps; readout (K := 1) gives the rate."""
    T = 32
    cs = np.array([0.0, 0.25, 0.375, 0.5, 0.8125, 1.0, -0.5])
    net = single_unit_net("rate", 8, readout_start=0)
    res = simulate_reference(net, cs[:, None], T)
    out = res["outputs"]["n"][:, :, 0]
    for i, c in enumerate(cs):
        cum = np.cumsum(out[i])
        np.testing.assert_array_equal(cum, np.floor(np.arange(1, T + 1) * max(c, 0)))
        assert res["logits"][i, -1, 0] == pytest.approx(max(c, 0))
        assert set(np.unique(out[i])) <= {0.0, 1.0}
    assert res["spikes"]["n"].tolist() == [int(np.floor(T * max(c, 0))) for c in cs]


def test_phase_if_passes_spike_code_through():
    """A phase IF neuron fed the spike code of Q(x) fires exactly that code; the
    input encoding is the binary expansion of Q(x), MSB at phase 0."""
    K, P = 4, 3
    xs = np.array([[0.6875, 0.1, 0.0, 0.99, 1.7]])
    nodes = [{"name": "in", "op": "input", "inputs": []},
             {"name": "n", "op": "neuron", "inputs": ["in"], "bias": np.zeros(5), "start": 0},
             {"name": "fc", "op": "dense", "inputs": ["n"], "kernel": np.eye(5)},
             {"name": "out", "op": "readout", "inputs": ["fc"], "bias": np.zeros(5), "start": 0}]
    net = {"method": "phase", "phases": K, "input_encoding": "spike", "nodes": nodes}
    res = simulate_reference(net, xs, P * K)
    out = res["outputs"]["n"][0]
    expect_bits = {0.6875: [1, 0, 1, 1], 0.1: [0, 0, 0, 1], 0.0: [0, 0, 0, 0],
                   0.99: [1, 1, 1, 1], 1.7: [1, 1, 1, 1]}
    for j, xv in enumerate(xs[0]):
        code = np.array(expect_bits[float(xv)]) * 2.0 ** -np.arange(1, K + 1)
        np.testing.assert_array_equal(out[:, j], np.tile(code, P))
    np.testing.assert_allclose(res["logits"][0, -1], quantise(xs[0], K))


@pytest.mark.parametrize("method", ["bsnn", "phase", "rate"])
def test_spike_input_is_same_code_for_every_method(method):
    """Spike input emits S(t) * bit_k(Q(x)) in every period, for every method;
    a 1x1 max gate (baselines) shows it step by step."""
    K, P = 3, 2
    x = np.array([[[[0.625], [0.3]]]])      # (1, 1, 2, 1): 0.101b, Q(0.3) = 0.010b
    nodes = [{"name": "mp", "op": "maxpool", "inputs": ["in"], "pool_size": (1, 1),
              "strides": (1, 1), "padding": "valid"}]
    net = probe_net(method, K, nodes, "mp", encoding="spike", classes=2)
    res = simulate_reference(net, x, P * K)
    g = res["gates"]["mp"][0, :, 0, :, 0]           # (T, 2)
    if method == "bsnn":
        expect = np.zeros((P * K, 2))
        expect[K - 1::K] = [0.625, 0.25]             # period totals at the last phase
    else:
        expect = np.tile(np.array([[0.5, 0.0], [0.0, 0.25], [0.125, 0.0]]), (P, 1))
    np.testing.assert_array_equal(g, expect)


# --------------------------------------------------------------------------
# Against the prototype
# --------------------------------------------------------------------------

def random_dense_net(seed, sizes=(6, 12, 10, 8, 4)):
    rng = np.random.default_rng(seed)
    Ws = [rng.normal(0, 1 / np.sqrt(a), (a, b)) for a, b in zip(sizes, sizes[1:])]
    bs = [rng.normal(0, .1, b) for b in sizes[1:]]
    xs = [rng.uniform(-1, 1, sizes[0]) for _ in range(64)]
    Wn, bn = proto_normalise(Ws, bs, xs)
    return Wn, bn, np.array(xs[:4])


@pytest.mark.parametrize("seed,K", [(0, 8), (1, 3), (2, 5)])
def test_bsnn_matches_prototype_dense_chain(seed, K):
    Wn, bn, xs = random_dense_net(seed)
    P = 12
    T = P * K
    L = len(Wn)
    D = L - 1
    res = simulate_reference(dense_chain_net(Wn, bn, "bsnn", K, gate=True), xs, T)
    for i, x in enumerate(xs):
        o_step, y_step = proto_bsnn_step(Wn, bn, x, T, K, gate=True)
        o_per, y_per = proto_bsnn_period(Wn, bn, x, P, K, gate=True)
        for l in range(L - 1):
            y_ref = period_values(res["outputs"][f"n{l}"][i:i + 1], K)[0]
            np.testing.assert_allclose(y_ref, y_step[l], rtol=0, atol=1e-12)
            np.testing.assert_allclose(y_ref, y_per[l], rtol=0, atol=1e-12)
            # each neuron emits at most one spike per unit per step, weights S(t)
            o = res["outputs"][f"n{l}"][i]
            for t in range(T):
                assert set(np.unique(o[t])) <= {0.0, phase_weight(t, K)}
        # prototype readout: sum over all periods of W y + b (bias gated from
        # period D, nothing arrives before) -> DESIGN.md logits = out / (P - D)
        eff = P - D
        np.testing.assert_allclose(o_step, o_per, atol=1e-10)
        np.testing.assert_allclose(res["logits"][i, -1], o_step / eff, atol=1e-10)
        np.testing.assert_allclose((res["logits"][i, -1] - bn[-1]) * eff,
                                   o_step - bn[-1] * eff, atol=1e-10)
        # and at every earlier whole period
        for Pc in range(D + 1, P + 1):
            o_c, _ = proto_bsnn_period(Wn, bn, x, Pc, K, gate=True)
            np.testing.assert_allclose(res["logits"][i, Pc * K - 1], o_c / (Pc - D), atol=1e-10)
        np.testing.assert_allclose(res["logits"][i, D * K - 1], bn[-1])     # eff = 0 -> bias


def test_bsnn_ungated_matches_prototype():
    Wn, bn, xs = random_dense_net(3)
    K, P = 4, 8
    res = simulate_reference(dense_chain_net(Wn, bn, "bsnn", K, gate=False), xs, P * K)
    for i, x in enumerate(xs):
        _, y_step = proto_bsnn_step(Wn, bn, x, P * K, K, gate=False)
        for l in range(len(Wn) - 1):
            np.testing.assert_allclose(period_values(res["outputs"][f"n{l}"][i:i + 1], K)[0],
                                       y_step[l], atol=1e-12)


@pytest.mark.parametrize("seed,K", [(0, 8), (4, 3)])
def test_phase_matches_prototype_dense_chain(seed, K):
    Wn, bn, xs = random_dense_net(seed)
    T = 10 * K
    res = simulate_reference(dense_chain_net(Wn, bn, "phase", K), xs, T)
    s_total = sum(phase_weight(t, K) for t in range(T))
    for i, x in enumerate(xs):
        out, fired = proto_phase_step(Wn, bn, x, T, K)
        for l in range(len(Wn) - 1):
            np.testing.assert_array_equal((res["outputs"][f"n{l}"][i] != 0).sum(axis=0), fired[l])
        assert res["spikes"]["n0"][i] == fired[0].sum()
        # prototype accumulates bias * S(t) every step; DESIGN.md adds the bias once
        acc = out - bn[-1] * s_total
        np.testing.assert_allclose(res["logits"][i, -1], acc / (T / K) + bn[-1], atol=1e-10)


def test_bsnn_dense_chain_converges_to_ann():
    Wn, bn, xs = random_dense_net(5)
    K, P = 8, 32
    res = simulate_reference(dense_chain_net(Wn, bn, "bsnn", K), xs, P * K)
    for i, x in enumerate(xs):
        ref, _ = proto_ann(Wn, bn, x)
        err = np.abs(res["logits"][i, -1] - ref).max() / np.abs(ref).max()
        assert err < 0.02


# --------------------------------------------------------------------------
# Spikes of inactivated neurons
# --------------------------------------------------------------------------

def test_phase_if_sin_while_bsnn_has_none():
    """x = 1 -> a = relu(0.5 x) = 0.5 -> c = relu(-2 a + 1) = relu(0) = 0: c is
    inactivated.  Phase IF: c's bias arrives at phase 0 (1 * S(0) = 0.5 >=
    threshold 0.5) before a's first spike (a only crosses its threshold at phase
    1), so c fires at t = 0: a spike of an inactivated neuron.  BSNN with bias
    gating: c integrates 1 - 2 * 0.5 = 0 in every period from period 1 on and
    never fires."""
    K, P = 4, 8

    def net(method):
        nodes = [{"name": "in", "op": "input", "inputs": []},
                 {"name": "fa", "op": "dense", "inputs": ["in"], "kernel": np.array([[0.5]])},
                 {"name": "a", "op": "neuron", "inputs": ["fa"], "bias": np.zeros(1), "start": 0},
                 {"name": "fc", "op": "dense", "inputs": ["a"], "kernel": np.array([[-2.0]])},
                 {"name": "c", "op": "neuron", "inputs": ["fc"], "bias": np.ones(1), "start": 1},
                 {"name": "fo", "op": "dense", "inputs": ["c"], "kernel": np.eye(1)},
                 {"name": "out", "op": "readout", "inputs": ["fo"], "bias": np.zeros(1),
                  "start": 2 if method == "bsnn" else 0}]
        return {"method": method, "phases": K, "input_encoding": "real", "nodes": nodes}

    x = np.ones((1, 1))
    ann_c = max(-2 * max(0.5 * x[0, 0], 0) + 1, 0)
    assert ann_c <= 0
    ph = simulate_reference(net("phase"), x, P * K)
    assert ph["outputs"]["c"][0, 0, 0] == 0.5          # fires at t = 0 on bias alone
    assert ph["outputs"]["a"][0, 0, 0] == 0.0          # a lags: silent at t = 0 ...
    assert ph["outputs"]["a"][0, 1, 0] == 0.25         # ... first spike at t = 1
    assert ph["spikes"]["c"][0] >= 1
    bs = simulate_reference(net("bsnn"), x, P * K)
    assert bs["spikes"]["c"][0] == 0
    np.testing.assert_array_equal(period_values(bs["outputs"]["a"], K)[0, :, 0],
                                  [0] + [0.5] * (P - 1))


# --------------------------------------------------------------------------
# Max gate
# --------------------------------------------------------------------------

def test_max_gate_bsnn_hand_example():
    """K = 2.  Gate input = input (emitted at phase 0 of every period) + a BIF
    unit fed scale * input.  Per-period values of the units of interest:
      u (0,0): x=.25, s=0 -> .25 every period            cum .25 .5 .75 1 ...
      v (0,1): x=.125, s=3 -> .125 + y(.375), y = 0 .25 .25 .5 .5 .25 .25 .5 .5
               -> .125 .375 .375 .625 .625 .375 .375 .625 .625  cum .125 .5 .875 1.5 ...
      w1 (0,2): x=.5, s=0 -> .5 every period             cum .5 1 1.5 ... 4.5
      w2 (1,3): x=.0625, s=8 -> .0625 + y(.5) = .0625 .5625 .5625 ...
                                                          cum .0625 .625 ... 4 4.5625
    Window 0 {u, v, 0, 0}: p0 u (.25); p1 tie .5/.5 -> larger current v (.375);
      then v.  Window 1 {w1, 0, 0, w2}: w1 has the larger cumulative although a
      smaller current until p7, where the cumulatives tie (4 / 4) and w2's
      larger current wins; p8 w2 ahead.  Window 2: two equal units .25 -> .25.
      Window 3: negative units and silent units -> a silent unit wins -> 0."""
    K, P = 2, 9
    x = np.zeros((4, 4))
    s = np.zeros((4, 4))
    x[0, 0] = 0.25
    x[0, 1], s[0, 1] = 0.125, 3.0
    x[0, 2] = 0.5
    x[1, 3], s[1, 3] = 0.0625, 8.0
    x[2, 0] = x[3, 1] = 0.25
    x[2, 2] = x[3, 3] = -0.25
    nodes = [{"name": "sc", "op": "scale", "inputs": ["in"], "scale": s[:, :, None]},
             {"name": "n", "op": "neuron", "inputs": ["sc"], "bias": 0.0, "start": 0},
             {"name": "sum", "op": "add", "inputs": ["in", "n"]},
             {"name": "mp", "op": "maxpool", "inputs": ["sum"], "pool_size": (2, 2),
              "strides": (2, 2), "padding": "valid"}]
    net = probe_net("bsnn", K, nodes, "mp", classes=4)
    res = simulate_reference(net, x[None, :, :, None], P * K)
    g = res["gates"]["mp"][0, :, :, :, 0]                # (T, 2, 2)
    assert not g[0::K].any()                             # nothing at phase 0
    per = g[K - 1::K]                                    # period totals, emitted at the last phase
    np.testing.assert_array_equal(per[:, 0, 0], [.25, .375, .375, .625, .625, .375, .375, .625, .625])
    np.testing.assert_array_equal(per[:, 0, 1], [.5] * 7 + [.5625] * 2)
    np.testing.assert_array_equal(per[:, 1, 0], [.25] * P)
    np.testing.assert_array_equal(per[:, 1, 1], [0.0] * P)
    # the gate is not a neuron: no spike count for it
    assert set(res["spikes"]) == {"n"}


def test_max_gate_rate_hand_example():
    """Rate IF units (no bias) fed constant currents; 2x2 windows.
      window 0: a = .5 at (0,0): spikes 0 1 0 1 0 1 0 1 (cum 0 1 1 2 2 3 3 4)
                c = .625 at (1,1): spikes 0 1 0 1 1 0 1 1 (cum 0 1 1 2 3 3 4 5)
         gate: t4 c ahead (3 > 2); t5 tie 3/3 -> larger current (a fires) -> 1;
               t6, t7 c ahead -> 0 1 0 1 1 1 1 1
      window 1: 1.0 and .25 -> the 1.0 unit: 1 every step
      window 2: .25 alone -> 0 0 0 1 0 0 0 1
      window 3: negative currents -> 0."""
    T = 8
    x = np.zeros((4, 4))
    x[0, 0], x[1, 1] = 0.5, 0.625
    x[0, 2], x[0, 3] = 1.0, 0.25
    x[3, 1] = 0.25
    x[2, 2:] = x[3, 2:] = -0.5
    nodes = [{"name": "n", "op": "neuron", "inputs": ["in"], "bias": 0.0, "start": 0},
             {"name": "mp", "op": "maxpool", "inputs": ["n"], "pool_size": (2, 2),
              "strides": (2, 2), "padding": "valid"}]
    res = simulate_reference(probe_net("rate", 4, nodes, "mp", classes=4), x[None, :, :, None], T)
    g = res["gates"]["mp"][0, :, :, :, 0]
    np.testing.assert_array_equal(g[:, 0, 0], [0, 1, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(g[:, 0, 1], [1] * T)
    np.testing.assert_array_equal(g[:, 1, 0], [0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(g[:, 1, 1], [0] * T)
    np.testing.assert_array_equal(res["logits"][0, -1], [6 / 8, 1, 2 / 8, 0])


def test_max_gate_phase_blocks_loser_spikes_and_same_padding():
    """Phase method, spike input K = 2, 1x3 input, pool (1, 2) stride (1, 2) 'same'
    -> windows {x0, x1} and {x2, pad}.  x0 = .5 (10b), x1 = .25 (01b): x0 leads
    the cumulative from t0 on, so x1's spike at phase 1 is blocked: .5 0 .5 0.
    x2 = .75 (11b) with a silent padding cell: passes .5 .25 .5 .25."""
    K, T = 2, 4
    x = np.array([0.5, 0.25, 0.75]).reshape(1, 1, 3, 1)
    nodes = [{"name": "mp", "op": "maxpool", "inputs": ["in"], "pool_size": (1, 2),
              "strides": (1, 2), "padding": "same"}]
    res = simulate_reference(probe_net("phase", K, nodes, "mp", encoding="spike", classes=2), x, T)
    g = res["gates"]["mp"][0, :, 0, :, 0]
    np.testing.assert_array_equal(g[:, 0], [.5, 0, .5, 0])
    np.testing.assert_array_equal(g[:, 1], [.5, .25, .5, .25])


def test_max_gate_same_padding_silent_cells_win_over_negative():
    """A window whose real cells are all negative: the silent padding cell has
    the largest cumulative (0) and the gate emits 0; a non-negative window
    passes its maximum.  Rate method, real input (emitted every step)."""
    x = np.array([[1.0, -2.0, -1.0]]).reshape(1, 1, 3, 1)
    nodes = [{"name": "mp", "op": "maxpool", "inputs": ["in"], "pool_size": (1, 2),
              "strides": (1, 2), "padding": "same"}]
    res = simulate_reference(probe_net("rate", 1, nodes, "mp", classes=2), x, 3)
    np.testing.assert_array_equal(res["gates"]["mp"][0, :, 0, :, 0], [[1.0, 0.0]] * 3)


# --------------------------------------------------------------------------
# Linear ops vs an independent ANN forward
# --------------------------------------------------------------------------

@pytest.mark.parametrize("H,W,k,s", [(6, 6, 3, 2), (5, 5, 3, 2), (5, 7, 3, 1), (7, 6, 2, 3), (4, 4, 5, 1)])
def test_same_conv_on_ones_closed_form(H, W, k, s):
    """All-ones kernel on an all-ones image: a 'same' output is cin times the
    number of real (unpadded) cells under the kernel; TF pads the extra cell at
    the bottom/right."""
    cin, cout = 2, 1
    nodes = [{"name": "c", "op": "conv2d", "inputs": ["in"], "kernel": np.ones((k, k, cin, cout)),
              "strides": (s, s), "padding": "same"}]
    oh, ow = -(-H // s), -(-W // s)
    res = simulate_reference(probe_net("rate", 1, nodes, "c", classes=oh * ow * cout),
                             np.ones((1, H, W, cin)), 2)

    def counts(n, out):
        total = max((out - 1) * s + k - n, 0)
        before = total // 2
        return [sum(0 <= i * s - before + a < n for a in range(k)) for i in range(out)]

    expect = cin * np.outer(counts(H, oh), counts(W, ow))
    np.testing.assert_array_equal(res["logits"][0, -1].reshape(oh, ow), expect)
    if (H, W, k, s) == (6, 6, 3, 2):        # pad 0 top, 1 bottom -> 3 3 2
        assert counts(6, 3) == [3, 3, 2]


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("H,W,k,s", [(6, 6, 3, 2), (5, 7, 3, 1), (7, 5, 2, 2), (5, 5, 3, 3)])
def test_conv_and_avgpool_match_ann(H, W, k, s, padding):
    rng = np.random.default_rng(H * 100 + W * 10 + k + s)
    cin, cout = 2, 3
    x = rng.normal(size=(2, H, W, cin))
    Wk = rng.normal(size=(k, k, cin, cout))
    nodes = [{"name": "c", "op": "conv2d", "inputs": ["in"], "kernel": Wk, "strides": (s, s),
              "padding": padding},
             {"name": "ap", "op": "avgpool", "inputs": ["c"], "pool_size": (2, 3), "strides": (2, 1),
              "padding": "same"},
             {"name": "ap2", "op": "avgpool", "inputs": ["in"], "pool_size": (k, k), "strides": (s, s),
              "padding": padding},
             {"name": "f1", "op": "flatten", "inputs": ["ap"]},
             {"name": "f2", "op": "flatten", "inputs": ["ap2"]},
             {"name": "f0", "op": "flatten", "inputs": ["c"]},
             {"name": "cat", "op": "concat", "inputs": ["f0", "f1", "f2"]}]
    conv = ann_conv(x, Wk, (s, s), padding)
    ap = ann_pool(conv, (2, 3), (2, 1), "same", "avg")
    ap2 = ann_pool(x, (k, k), (s, s), padding, "avg")
    expect = np.concatenate([conv.reshape(2, -1), ap.reshape(2, -1), ap2.reshape(2, -1)], axis=1)
    n = expect.shape[1]
    for method, K in [("rate", 1), ("bsnn", 3), ("phase", 3)]:
        res = simulate_reference(probe_net(method, K, nodes, "cat", classes=n), x, 2 * K)
        scale = (1 - 2.0 ** -K) if method == "phase" else 1.0      # phase input carries S(t)
        np.testing.assert_allclose(res["logits"][:, -1], expect * scale, rtol=1e-12, atol=1e-12)


def test_avgpool_same_on_constant_excludes_padding():
    x = np.full((1, 5, 5, 1), 0.75)
    nodes = [{"name": "ap", "op": "avgpool", "inputs": ["in"], "pool_size": (2, 2), "strides": (2, 2),
              "padding": "same"}]
    res = simulate_reference(probe_net("rate", 1, nodes, "ap", classes=9), x, 1)
    np.testing.assert_allclose(res["logits"][0, -1], 0.75, rtol=1e-15)


def test_other_linear_ops_match_ann():
    """zeropad, gap, add, scale, concat, dense, flatten order."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 3, 4, 2))
    sc = rng.normal(size=(2,))
    D = rng.normal(size=(2 * 5 * 6 + 2, 4))
    nodes = [{"name": "zp", "op": "zeropad", "inputs": ["in"], "padding": ((1, 1), (0, 2))},
             {"name": "sc", "op": "scale", "inputs": ["zp"], "scale": sc},
             {"name": "ad", "op": "add", "inputs": ["zp", "sc", "zp"]},
             {"name": "g", "op": "gap", "inputs": ["in"]},
             {"name": "f", "op": "flatten", "inputs": ["ad"]},
             {"name": "cat", "op": "concat", "inputs": ["f", "g"]},
             {"name": "d", "op": "dense", "inputs": ["cat"], "kernel": D}]
    zp = np.zeros((3, 5, 6, 2))
    zp[:, 1:4, 0:4, :] = x
    ad = 2 * zp + zp * sc
    f = np.stack([ad[n].ravel() for n in range(3)])      # row-major (H, W, C)
    g = x.sum(axis=(1, 2)) / 12
    expect = np.concatenate([f, g], axis=1) @ D
    res = simulate_reference(probe_net("rate", 1, nodes, "d", classes=4), x, 3)
    np.testing.assert_allclose(res["logits"][:, -1], expect, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# A small conv net end to end
# --------------------------------------------------------------------------

def test_bsnn_conv_net_pipeline_and_convergence():
    """conv(same) -> BIF -> maxpool gate -> conv(valid) -> BIF -> gap -> dense
    -> readout, data-normalised.  Layer l first emits in period l+1 (one layer
    per period); the BSNN readout approaches the ANN (with max pooling)."""
    rng = np.random.default_rng(11)
    N = 3
    x = rng.uniform(0, 1, size=(N, 6, 6, 1))
    W1 = rng.normal(0, 0.5, (3, 3, 1, 4))
    b1 = rng.normal(0, 0.1, 4) + 0.05
    W2 = rng.normal(0, 0.3, (2, 2, 4, 3))
    b2 = rng.normal(0, 0.1, 3) + 0.05
    W3 = rng.normal(0, 1, (3, 2))
    b3 = rng.normal(0, 0.1, 2)
    # data-norm on these inputs
    a1 = np.maximum(ann_conv(x, W1, (1, 1), "same") + b1, 0)
    l1 = a1.max()
    W1n, b1n = W1 / l1, b1 / l1
    m1 = ann_pool(a1 / l1, (2, 2), (2, 2), "valid", "max")
    a2 = np.maximum(ann_conv(m1, W2, (1, 1), "valid") + b2, 0)
    l2 = a2.max()
    W2n, b2n = W2 / l2, b2 / l2
    ann_out = (a2 / l2).mean(axis=(1, 2)) @ (W3 * l2) + b3
    nodes = [{"name": "in", "op": "input", "inputs": []},
             {"name": "c1", "op": "conv2d", "inputs": ["in"], "kernel": W1n, "strides": (1, 1),
              "padding": "same"},
             {"name": "n1", "op": "neuron", "inputs": ["c1"], "bias": b1n, "start": 0},
             {"name": "mp", "op": "maxpool", "inputs": ["n1"], "pool_size": (2, 2), "strides": (2, 2),
              "padding": "valid"},
             {"name": "c2", "op": "conv2d", "inputs": ["mp"], "kernel": W2n, "strides": (1, 1),
              "padding": "valid"},
             {"name": "n2", "op": "neuron", "inputs": ["c2"], "bias": b2n, "start": 1},
             {"name": "g", "op": "gap", "inputs": ["n2"]},
             {"name": "fc", "op": "dense", "inputs": ["g"], "kernel": W3 * l2},
             {"name": "out", "op": "readout", "inputs": ["fc"], "bias": b3, "start": 2}]
    K, P = 6, 40
    net = {"method": "bsnn", "phases": K, "input_encoding": "real", "nodes": nodes}
    res = simulate_reference(net, x, P * K)
    y1 = period_values(res["outputs"]["n1"], K)
    y2 = period_values(res["outputs"]["n2"], K)
    assert not y1[:, 0].any() and y1[:, 1].any()
    assert not y2[:, :2].any() and y2[:, 2].any()
    assert res["outputs"]["n1"].shape == (N, P * K, 6, 6, 4)
    assert res["gates"]["mp"].shape == (N, P * K, 3, 3, 4)
    # gate emits, per period, the period value of one unit of its window
    gp = period_values(res["gates"]["mp"], K)
    for i in range(3):
        for j in range(3):
            win = y1[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].reshape(N, P, 4, 4)
            assert np.all(np.any(win == gp[:, :, i, j, None, :], axis=2))
    err = np.abs(res["logits"][:, -1] - ann_out).max() / np.abs(ann_out).max()
    assert err < 0.05, err


# --------------------------------------------------------------------------
# The light-cone schedule (the steps whose spikes reach the logits at T)
# --------------------------------------------------------------------------

def _chain(method, synchronized=True, initial=0.0):
    """in -> n1 (start 0) -> two branches -> add -> n3 (start 2) -> dense -> readout (start 3).
    The long branch crosses n2 (start 1); the short one crosses a synchronous neuron
    n2s (start 1), or nothing when not `synchronized`."""
    dense = lambda name, source: {"name": name, "op": "dense", "inputs": [source],
                                  "kernel": np.eye(2)}
    neuron = lambda name, source, start: {"name": name, "op": "neuron", "inputs": [source],
                                          "bias": 0.0, "start": start, "initial": initial}
    nodes = [{"name": "in", "op": "input", "inputs": []}, dense("d1", "in"),
             neuron("n1", "d1", 0), dense("d2", "n1"), neuron("n2", "d2", 1)]
    short = "n1"
    if synchronized:
        nodes.append(neuron("n2s", "n1", 1))
        short = "n2s"
    nodes += [{"name": "add", "op": "add", "inputs": ["n2", short]}, neuron("n3", "add", 2),
              dense("d4", "n3"),
              {"name": "out", "op": "readout", "inputs": ["d4"], "bias": np.zeros(2),
               "start": 3}]
    return {"method": method, "phases": 2, "input_encoding": "real", "nodes": nodes}


def test_schedule_windows_hand_examples():
    """K = 2, D = 3.  At the first readout T = (D + 1) K = 8 (E = 4 periods) each BIF
    layer runs the two periods from its start: n3 steps 4..8, n2 and n2s 2..6, n1 0..4;
    three periods later (T = 14) each runs three periods more. A shortcut that skips a
    neuron lets n1 reach the readout one period sooner: it matters one period longer.
    T = 7 is cut at T (E = 4). A rest of one level (2**-K) emits from period 0. The
    baselines run every neuron throughout."""
    assert schedule_windows(_chain("bsnn"), 8) == {
        "n1": (0, 4), "n2": (2, 6), "n2s": (2, 6), "n3": (4, 8)}
    assert schedule_windows(_chain("bsnn"), 14) == {
        "n1": (0, 10), "n2": (2, 12), "n2s": (2, 12), "n3": (4, 14)}
    assert schedule_windows(_chain("bsnn", synchronized=False), 8) == {
        "n1": (0, 6), "n2": (2, 6), "n3": (4, 8)}
    assert schedule_windows(_chain("bsnn"), 7) == {
        "n1": (0, 4), "n2": (2, 6), "n2s": (2, 6), "n3": (4, 7)}
    assert schedule_windows(_chain("bsnn", initial=0.25), 8)["n2"] == (0, 6)
    assert schedule_windows(_chain("bsnn"), 2) == {
        "n1": (0, 0), "n2": (2, 2), "n2s": (2, 2), "n3": (2, 2)}
    for method in ("phase", "rate"):
        assert set(schedule_windows(_chain(method), 9).values()) == {(0, 9)}


def test_spikes_outside_the_schedule_do_not_reach_the_logits():
    """The windows' trailing edge is the light cone's: on the chain (and without its
    synchronous neuron) the logits at T stay the same when every neuron is silenced
    from the end of its window on, and change when one is silenced a period earlier.
    Before its window a neuron emits nothing."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.9, (3, 2))
    K, T = 2, 14
    for synchronized in (True, False):
        net = _chain("bsnn", synchronized)
        for node in net["nodes"]:
            if node["op"] == "dense":
                node["kernel"] = rng.uniform(0.1, 0.5, (2, 2))
            if node["op"] == "neuron":
                node["bias"] = rng.uniform(0.0, 0.1, 2)
        full = simulate_reference(net, x, T)
        windows = schedule_windows(net, T)
        ends = {name: end for name, (_, end) in windows.items()}
        cut = simulate_reference(net, x, T, silence_from=ends)
        np.testing.assert_array_equal(cut["logits"][:, -1], full["logits"][:, -1])
        for name, (first, end) in windows.items():
            assert not full["outputs"][name][:, :first].any(), name
            earlier = simulate_reference(net, x, T, silence_from={**ends, name: end - K})
            assert not np.array_equal(earlier["logits"][:, -1], full["logits"][:, -1]), name
        counted = spikes_in_windows(full["outputs"], windows)
        assert {n: c.tolist() for n, c in counted.items()} == {
            n: c.tolist() for n, c in spikes_in_windows(cut["outputs"], windows).items()}
        assert all(0 < counted[n].sum() < full["spikes"][n].sum() for n in ("n1", "n2"))
