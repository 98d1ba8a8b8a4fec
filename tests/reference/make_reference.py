"""make_reference.py: the PyTorch reference for the engine's correctness test.

Writes, into this folder, tiny base models in the formats users already have
(gpt2_tiny.bin: llm.c checkpoint, version 3 fp32; llama_tiny.bin / llama_tiny_tied.bin:
llama2.c legacy .bin) and, for each, <model>_ref.safetensors holding a batch, the
logits, the masked loss, the gradients of every LoRA adapter and the adapters after three
AdamW steps. The math follows the C engine's definitions (see README.md here); it is
written out by hand, op by op, so that it reads like the C kernels it checks.

Not for: training anything real, or testing the C engine (that test lives in tests/).

Regenerate: /usr/bin/python3 tests/reference/make_reference.py
Deterministic (torch.manual_seed per model, CPU, float32); it also self-checks:
gradcheck in float64 on LoRA parameters, a per-position (KV-cache) forward read back
from each .bin file and compared with the batched one, float32 against float64, and
torch's AdamW against a hand-written one."""
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_default_dtype(torch.float32)

# LoRA and optimizer settings shared by all models.
RANK = 4
ALPHA = 8.0
SCALE = ALPHA / RANK
LR = 1e-2
BETA1, BETA2 = 0.9, 0.999
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.01
STEPS = 3
# The batch.
B, T = 2, 8
MASK_ZEROS = [(0, 0), (1, 3), (1, 7)]  # (b, t) positions that do not count in the loss
# Engine constants the math must share.
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
# Initial value spreads, large enough that every path matters.
W_STD = 0.2      # matrices and embeddings
NORM_W_STD = 0.1  # LayerNorm/RMSNorm weights are 1 + N(0, this)
BIAS_STD = 0.1
LORA_B_STD = 0.1

GPT2 = dict(arch="gpt2", L=2, C=32, NH=4, V=61, Vp=64, maxT=16,
            targets=["q", "k", "v", "o", "up", "down"], seed=20240326)
LLAMA = dict(arch="llama", L=2, C=32, H=48, NH=4, NKV=2, V=67, maxT=16,
             targets=["q", "k", "v", "o", "gate", "up", "down"], seed=20230723)

LLMC_MAGIC = 20240326
LLMC_VERSION_FP32 = 3
LLMC_HEADER_INTS = 256


# ------------------------------------------------------------------------------------
# Initial weights


def normal(shape, std):
    return torch.randn(*shape) * std


def gpt2_init(cfg):
    """Parameters in llm.c's order and shapes (wte padded to Vp rows, rows V.. zero)."""
    L, C, V, Vp, maxT = cfg["L"], cfg["C"], cfg["V"], cfg["Vp"], cfg["maxT"]
    P = {}
    wte = torch.zeros(Vp, C)
    wte[:V] = normal((V, C), W_STD)
    P["wte"] = wte
    P["wpe"] = normal((maxT, C), W_STD)
    P["ln1w"] = 1.0 + normal((L, C), NORM_W_STD)
    P["ln1b"] = normal((L, C), BIAS_STD)
    P["qkvw"] = normal((L, 3 * C, C), W_STD)
    P["qkvb"] = normal((L, 3 * C), BIAS_STD)
    P["attprojw"] = normal((L, C, C), W_STD)
    P["attprojb"] = normal((L, C), BIAS_STD)
    P["ln2w"] = 1.0 + normal((L, C), NORM_W_STD)
    P["ln2b"] = normal((L, C), BIAS_STD)
    P["fcw"] = normal((L, 4 * C, C), W_STD)
    P["fcb"] = normal((L, 4 * C), BIAS_STD)
    P["fcprojw"] = normal((L, C, 4 * C), W_STD)
    P["fcprojb"] = normal((L, C), BIAS_STD)
    P["lnfw"] = 1.0 + normal((C,), NORM_W_STD)
    P["lnfb"] = normal((C,), BIAS_STD)
    return P


GPT2_ORDER = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
              "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]


def rope_tables(hs, maxT):
    """cos/sin (maxT, hs/2) of pos * theta^(-2i/hs), computed in float64, stored float32."""
    i = np.arange(hs // 2, dtype=np.float64)
    freq = ROPE_THETA ** (-2.0 * i / hs)
    ang = np.outer(np.arange(maxT, dtype=np.float64), freq)
    return torch.from_numpy(np.cos(ang).astype(np.float32)), torch.from_numpy(np.sin(ang).astype(np.float32))


def llama_init(cfg):
    L, C, H, NH, NKV, V, maxT = cfg["L"], cfg["C"], cfg["H"], cfg["NH"], cfg["NKV"], cfg["V"], cfg["maxT"]
    hs = C // NH
    KV = NKV * hs
    P = {}
    P["emb"] = normal((V, C), W_STD)
    P["rms_att"] = 1.0 + normal((L, C), NORM_W_STD)
    P["wq"] = normal((L, C, C), W_STD)
    P["wk"] = normal((L, KV, C), W_STD)
    P["wv"] = normal((L, KV, C), W_STD)
    P["wo"] = normal((L, C, C), W_STD)
    P["rms_ffn"] = 1.0 + normal((L, C), NORM_W_STD)
    P["w1"] = normal((L, H, C), W_STD)
    P["w2"] = normal((L, C, H), W_STD)
    P["w3"] = normal((L, H, C), W_STD)
    P["rms_final"] = 1.0 + normal((C,), NORM_W_STD)
    P["wcls"] = normal((V, C), W_STD)
    P["freq_cos"], P["freq_sin"] = rope_tables(hs, maxT)
    return P


LLAMA_ORDER = ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final",
               "freq_cos", "freq_sin"]


def lora_shapes(cfg):
    """{target: (in, out)} of the linear each LoRA target adapts."""
    C = cfg["C"]
    if cfg["arch"] == "gpt2":
        return dict(q=(C, C), k=(C, C), v=(C, C), o=(C, C), up=(C, 4 * C), down=(4 * C, C))
    KV = cfg["NKV"] * (C // cfg["NH"])
    H = cfg["H"]
    return dict(q=(C, C), k=(C, KV), v=(C, KV), o=(C, C), gate=(C, H), up=(C, H), down=(H, C))


def lora_init(cfg):
    """Ordered {"lora.{l}.{t}.A": (r,in), "lora.{l}.{t}.B": (out,r)}, both nonzero."""
    shapes = lora_shapes(cfg)
    out = {}
    for l in range(cfg["L"]):
        for t in cfg["targets"]:
            fan_in, fan_out = shapes[t]
            bound = 1.0 / math.sqrt(fan_in)
            out[f"lora.{l}.{t}.A"] = (torch.rand(RANK, fan_in) * 2.0 - 1.0) * bound
            out[f"lora.{l}.{t}.B"] = normal((fan_out, RANK), LORA_B_STD)
    return out


# ------------------------------------------------------------------------------------
# Forward passes (batched, autograd). Shapes: B batch, T time, C channels, NH heads,
# hs head size, V vocab, r LoRA rank.


def linear_lora(x, w, b, lora, l, t):
    """y = x W^T (+ b) + scale * (x A^T) B^T; x (B,T,in), W (out,in), A (r,in), B (out,r)."""
    y = x @ w.t()
    if b is not None:
        y = y + b
    A = lora[f"lora.{l}.{t}.A"]
    Bm = lora[f"lora.{l}.{t}.B"]
    return y + SCALE * ((x @ A.t()) @ Bm.t())


def layernorm(x, w, b):
    """(x - mean) / sqrt(var + eps) * w + b over the last dim, biased variance."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + NORM_EPS) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + NORM_EPS) * w


def causal_attention(q, k, v):
    """q, k, v (B,NH,T,hs) -> (B,NH,T,hs); scores scaled by 1/sqrt(hs), causal."""
    Tn, hs = q.shape[-2], q.shape[-1]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    future = torch.triu(torch.ones(Tn, Tn, dtype=torch.bool), diagonal=1)
    att = att.masked_fill(future, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return att @ v


def gpt2_forward(P, lora, tokens, cfg):
    """tokens (B,T) -> logits (B,T,V)."""
    C, NH, V = cfg["C"], cfg["NH"], cfg["V"]
    Bn, Tn = tokens.shape
    hs = C // NH
    x = P["wte"][tokens] + P["wpe"][:Tn]
    for l in range(cfg["L"]):
        h = layernorm(x, P["ln1w"][l], P["ln1b"][l])
        w, b = P["qkvw"][l], P["qkvb"][l]
        q = linear_lora(h, w[0:C], b[0:C], lora, l, "q")
        k = linear_lora(h, w[C:2 * C], b[C:2 * C], lora, l, "k")
        v = linear_lora(h, w[2 * C:3 * C], b[2 * C:3 * C], lora, l, "v")
        heads = lambda z: z.view(Bn, Tn, NH, hs).transpose(1, 2)  # noqa: E731
        y = causal_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(Bn, Tn, C)
        x = x + linear_lora(y, P["attprojw"][l], P["attprojb"][l], lora, l, "o")
        h = layernorm(x, P["ln2w"][l], P["ln2b"][l])
        u = gelu_tanh(linear_lora(h, P["fcw"][l], P["fcb"][l], lora, l, "up"))
        x = x + linear_lora(u, P["fcprojw"][l], P["fcprojb"][l], lora, l, "down")
    x = layernorm(x, P["lnfw"], P["lnfb"])
    return x @ P["wte"][:V].t()


def rope(z, cos, sin):
    """z (B,T,NHx,hs): rotates pairs (2i, 2i+1) of each head by pos * theta^(-2i/hs)."""
    Tn = z.shape[1]
    c = cos[:Tn].view(1, Tn, 1, -1)
    s = sin[:Tn].view(1, Tn, 1, -1)
    z0, z1 = z[..., 0::2], z[..., 1::2]
    return torch.stack([z0 * c - z1 * s, z0 * s + z1 * c], dim=-1).flatten(-2)


def llama_forward(P, lora, tokens, cfg, tied=False):
    C, NH, NKV = cfg["C"], cfg["NH"], cfg["NKV"]
    Bn, Tn = tokens.shape
    hs = C // NH
    x = P["emb"][tokens]
    for l in range(cfg["L"]):
        h = rmsnorm(x, P["rms_att"][l])
        q = linear_lora(h, P["wq"][l], None, lora, l, "q").view(Bn, Tn, NH, hs)
        k = linear_lora(h, P["wk"][l], None, lora, l, "k").view(Bn, Tn, NKV, hs)
        v = linear_lora(h, P["wv"][l], None, lora, l, "v").view(Bn, Tn, NKV, hs)
        q = rope(q, P["freq_cos"], P["freq_sin"])
        k = rope(k, P["freq_cos"], P["freq_sin"])
        # query head h reads kv head h // (NH/NKV)
        k = k.repeat_interleave(NH // NKV, dim=2)
        v = v.repeat_interleave(NH // NKV, dim=2)
        y = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        y = y.transpose(1, 2).reshape(Bn, Tn, C)
        x = x + linear_lora(y, P["wo"][l], None, lora, l, "o")
        h = rmsnorm(x, P["rms_ffn"][l])
        g = linear_lora(h, P["w1"][l], None, lora, l, "gate")
        u = linear_lora(h, P["w3"][l], None, lora, l, "up")
        m = g * torch.sigmoid(g) * u
        x = x + linear_lora(m, P["w2"][l], None, lora, l, "down")
    x = rmsnorm(x, P["rms_final"])
    return x @ (P["emb"] if tied else P["wcls"]).t()


def masked_loss(logits, targets, mask):
    """sum_{b,t} mask * CE(logits, target) / sum(mask)."""
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    m = mask.reshape(-1).to(logits.dtype)
    return (ce * m).sum() / m.sum()


# ------------------------------------------------------------------------------------
# Model files


def write_gpt2_bin(P, cfg, path):
    header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
    header[:8] = [LLMC_MAGIC, LLMC_VERSION_FP32, cfg["maxT"], cfg["V"], cfg["L"], cfg["NH"], cfg["C"], cfg["Vp"]]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for name in GPT2_ORDER:
            assert P[name].dtype == torch.float32
            f.write(P[name].numpy().astype("<f4").tobytes())


def write_llama_bin(P, cfg, path, tied):
    V = cfg["V"] if tied else -cfg["V"]  # negative vocab: the classifier is not shared
    header = struct.pack("<7i", cfg["C"], cfg["H"], cfg["L"], cfg["NH"], cfg["NKV"], V, cfg["maxT"])
    with open(path, "wb") as f:
        f.write(header)
        for name in LLAMA_ORDER + ([] if tied else ["wcls"]):
            assert P[name].dtype == torch.float32
            f.write(P[name].numpy().astype("<f4").tobytes())


# ------------------------------------------------------------------------------------
# Self-check: per-position forwards over the weights read back from the .bin files,
# written the way llm.c / llama2.c run.c compute one token at a time (numpy float32).


def np_lora(x, lora, l, t):
    A = lora[f"lora.{l}.{t}.A"].numpy()
    Bm = lora[f"lora.{l}.{t}.B"].numpy()
    return np.float32(SCALE) * (Bm @ (A @ x))


def np_softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def loop_gpt2(path, lora, seq):
    """One sequence, one position at a time with a KV cache; weights from the .bin file."""
    raw = open(path, "rb").read()
    hd = np.frombuffer(raw[:LLMC_HEADER_INTS * 4], dtype="<i4")
    assert hd[0] == LLMC_MAGIC and hd[1] == LLMC_VERSION_FP32
    maxT, V, L, NH, C, Vp = (int(v) for v in hd[2:8])
    w = np.frombuffer(raw[LLMC_HEADER_INTS * 4:], dtype="<f4")
    sizes = dict(wte=(Vp, C), wpe=(maxT, C), ln1w=(L, C), ln1b=(L, C), qkvw=(L, 3 * C, C), qkvb=(L, 3 * C),
                 attprojw=(L, C, C), attprojb=(L, C), ln2w=(L, C), ln2b=(L, C), fcw=(L, 4 * C, C),
                 fcb=(L, 4 * C), fcprojw=(L, C, 4 * C), fcprojb=(L, C), lnfw=(C,), lnfb=(C,))
    W, off = {}, 0
    for name in GPT2_ORDER:
        n = int(np.prod(sizes[name]))
        W[name] = w[off:off + n].reshape(sizes[name])
        off += n
    assert off == len(w), "gpt2 .bin size"
    assert not W["wte"][V:].any(), "padded vocab rows must be zero"
    hs = C // NH

    def ln(x, g, b):
        m = x.mean()
        var = ((x - m) ** 2).mean()
        return (x - m) / np.sqrt(var + np.float32(NORM_EPS)) * g + b

    kc = np.zeros((L, len(seq), C), np.float32)
    vc = np.zeros((L, len(seq), C), np.float32)
    out = []
    for pos, tok in enumerate(seq):
        x = W["wte"][tok] + W["wpe"][pos]
        for l in range(L):
            h = ln(x, W["ln1w"][l], W["ln1b"][l])
            qkv = W["qkvw"][l] @ h + W["qkvb"][l]
            q = qkv[:C] + np_lora(h, lora, l, "q")
            kc[l, pos] = qkv[C:2 * C] + np_lora(h, lora, l, "k")
            vc[l, pos] = qkv[2 * C:] + np_lora(h, lora, l, "v")
            y = np.zeros(C, np.float32)
            for hh in range(NH):
                sl = slice(hh * hs, (hh + 1) * hs)
                att = np_softmax(np.array([q[sl] @ kc[l, t, sl] for t in range(pos + 1)]) / np.sqrt(hs))
                y[sl] = sum(att[t] * vc[l, t, sl] for t in range(pos + 1))
            x = x + W["attprojw"][l] @ y + W["attprojb"][l] + np_lora(y, lora, l, "o")
            h = ln(x, W["ln2w"][l], W["ln2b"][l])
            u = W["fcw"][l] @ h + W["fcb"][l] + np_lora(h, lora, l, "up")
            u = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
            x = x + W["fcprojw"][l] @ u + W["fcprojb"][l] + np_lora(u, lora, l, "down")
        x = ln(x, W["lnfw"], W["lnfb"])
        out.append(W["wte"][:V] @ x)
    return np.stack(out)


def loop_llama(path, lora, seq):
    """llama2.c run.c's forward(), token by token, from the .bin file (+ LoRA)."""
    raw = open(path, "rb").read()
    dim, hidden, L, NH, NKV, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    V = abs(vocab)
    hs = dim // NH
    kv_dim = dim * NKV // NH
    kv_mul = NH // NKV
    w = np.frombuffer(raw[28:], dtype="<f4")
    sizes = [("emb", (V, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)), ("wk", (L, kv_dim, dim)),
             ("wv", (L, kv_dim, dim)), ("wo", (L, dim, dim)), ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)),
             ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)), ("rms_final", (dim,)),
             ("freq_cos", (seq_len, hs // 2)), ("freq_sin", (seq_len, hs // 2))]
    if not shared:
        sizes.append(("wcls", (V, dim)))
    W, off = {}, 0
    for name, shp in sizes:
        n = int(np.prod(shp))
        W[name] = w[off:off + n].reshape(shp)
        off += n
    assert off == len(w), "llama .bin size"
    wcls = W["emb"] if shared else W["wcls"]

    def rms(x, g):
        ss = (x * x).mean() + np.float32(NORM_EPS)
        return g * (x / np.sqrt(ss))

    kc = np.zeros((L, len(seq), kv_dim), np.float32)
    vc = np.zeros((L, len(seq), kv_dim), np.float32)
    out = []
    for pos, tok in enumerate(seq):
        x = W["emb"][tok].copy()
        for l in range(L):
            xb = rms(x, W["rms_att"][l])
            q = W["wq"][l] @ xb + np_lora(xb, lora, l, "q")
            k = W["wk"][l] @ xb + np_lora(xb, lora, l, "k")
            v = W["wv"][l] @ xb + np_lora(xb, lora, l, "v")
            for i in range(0, dim, 2):  # as run.c: angle from the pair's index inside its head
                head_dim = i % hs
                val = pos * (1.0 / ROPE_THETA ** (head_dim / hs))
                fcr, fci = np.float32(np.cos(val)), np.float32(np.sin(val))
                for vec in ((q, k) if i < kv_dim else (q,)):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = v0 * fcr - v1 * fci, v0 * fci + v1 * fcr
            kc[l, pos], vc[l, pos] = k, v
            xb = np.zeros(dim, np.float32)
            for h in range(NH):
                qh = q[h * hs:(h + 1) * hs]
                ko = (h // kv_mul) * hs
                att = np_softmax(np.array([qh @ kc[l, t, ko:ko + hs] for t in range(pos + 1)]) / np.sqrt(hs))
                xb[h * hs:(h + 1) * hs] = sum(att[t] * vc[l, t, ko:ko + hs] for t in range(pos + 1))
            x = x + W["wo"][l] @ xb + np_lora(xb, lora, l, "o")
            xb = rms(x, W["rms_ffn"][l])
            hb = W["w1"][l] @ xb + np_lora(xb, lora, l, "gate")
            hb2 = W["w3"][l] @ xb + np_lora(xb, lora, l, "up")
            hb = hb * (1.0 / (1.0 + np.exp(-hb))) * hb2
            x = x + W["w2"][l] @ hb + np_lora(hb, lora, l, "down")
        x = rms(x, W["rms_final"])
        out.append(wcls @ x)
    return np.stack(out)


# ------------------------------------------------------------------------------------
# Optimizer cross-check: AdamW as torch 1.13 computes it (decoupled weight decay first).


def adamw_by_hand(p0, grads_per_step):
    p = p0.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for step, g in enumerate(grads_per_step, start=1):
        p = p * (1 - LR * WEIGHT_DECAY)
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * g * g
        mhat = m / (1 - BETA1 ** step)
        denom = v.sqrt() / math.sqrt(1 - BETA2 ** step) + ADAM_EPS
        p = p - LR * mhat / denom
    return p


# ------------------------------------------------------------------------------------


def make_inputs(V):
    tokens = torch.randint(0, V, (B, T), dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.uint8)
    for b, t in MASK_ZEROS:
        mask[b, t] = 0
    return tokens, targets, mask


def maxdiff(a, b):
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def run(name, cfg, tied=False):
    print(f"== {name}")
    torch.manual_seed(cfg["seed"])
    arch = cfg["arch"]
    if arch == "gpt2":
        P = gpt2_init(cfg)
        fwd = lambda P_, lo, tok: gpt2_forward(P_, lo, tok, cfg)  # noqa: E731
    else:
        P = llama_init(cfg)
        fwd = lambda P_, lo, tok: llama_forward(P_, lo, tok, cfg, tied)  # noqa: E731
    lora0 = lora_init(cfg)
    tokens, targets, mask = make_inputs(cfg["V"])
    for k, v in list(P.items()) + list(lora0.items()):
        assert v.dtype == torch.float32, k

    bin_path = os.path.join(HERE, f"{name}.bin")
    if arch == "gpt2":
        write_gpt2_bin(P, cfg, bin_path)
    else:
        write_llama_bin(P, cfg, bin_path, tied)

    # base model alone: B = 0
    zero_lora = {k: (torch.zeros_like(v) if k.endswith(".B") else v) for k, v in lora0.items()}
    with torch.no_grad():
        logits_base = fwd(P, zero_lora, tokens)

    # forward + backward with the initial adapters
    lora = {k: v.clone().requires_grad_(True) for k, v in lora0.items()}
    logits = fwd(P, lora, tokens)
    loss = masked_loss(logits, targets, mask)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in lora.items()}
    logits = logits.detach()

    # three AdamW steps on the same batch
    opt = torch.optim.AdamW(list(lora.values()), lr=LR, betas=(BETA1, BETA2), eps=ADAM_EPS,
                            weight_decay=WEIGHT_DECAY, foreach=False)
    losses, step_grads, after = [], {k: [] for k in lora}, []
    for _ in range(STEPS):
        opt.zero_grad()
        li = masked_loss(fwd(P, lora, tokens), targets, mask)
        li.backward()
        losses.append(li.item())
        for k, v in lora.items():
            step_grads[k].append(v.grad.detach().clone())
        opt.step()
        after.append({k: v.detach().clone() for k, v in lora.items()})
    assert losses[0] == loss.item()

    # ---- self-checks ----
    # (1) per-position KV-cache forward from the .bin file, with and without LoRA
    for lo, ref, what in ((zero_lora, logits_base, "base"), (lora0, logits, "lora")):
        d = 0.0
        for b in range(B):
            seq = tokens[b].tolist()
            loop = loop_gpt2(bin_path, lo, seq) if arch == "gpt2" else loop_llama(bin_path, lo, seq)
            d = max(d, maxdiff(loop, ref[b]))
        print(f"  loop forward from {name}.bin vs batched ({what}): max |diff| {d:.2e}")
        assert d < 1e-5, d
    # (2) float64 forward/backward: the float32 reference's own rounding error
    P64 = {k: v.double() for k, v in P.items()}
    lora64 = {k: v.double().requires_grad_(True) for k, v in lora0.items()}
    logits64 = fwd(P64, lora64, tokens)
    loss64 = masked_loss(logits64, targets, mask)
    loss64.backward()
    print(f"  float32 vs float64: logits {maxdiff(logits, logits64):.2e}, loss {abs(loss.item() - loss64.item()):.2e}, "
          f"grads {max(maxdiff(grads[k], lora64[k].grad) for k in grads):.2e} "
          f"(max |grad| {max(float(g.abs().max()) for g in grads.values()):.2e})")
    lo64 = {k: v.double().clone().requires_grad_(True) for k, v in lora0.items()}
    opt64 = torch.optim.AdamW(list(lo64.values()), lr=LR, betas=(BETA1, BETA2), eps=ADAM_EPS,
                              weight_decay=WEIGHT_DECAY, foreach=False)
    for _ in range(STEPS):
        opt64.zero_grad()
        masked_loss(fwd(P64, lo64, tokens), targets, mask).backward()
        opt64.step()
    d = max(maxdiff(after[-1][k], lo64[k]) for k in lo64)
    print(f"  float32 vs float64 after {STEPS} AdamW steps: adapters {d:.2e}")
    # (3) gradcheck (finite differences, float64) on a few LoRA parameters
    for key in (f"lora.0.{cfg['targets'][1]}.A", "lora.0.q.B", f"lora.{cfg['L'] - 1}.down.A",
                f"lora.{cfg['L'] - 1}.{cfg['targets'][-2]}.B"):
        base = {k: v.detach().double() for k, v in lora0.items()}

        def f(p, key=key, base=base):
            lo = dict(base)
            lo[key] = p
            return masked_loss(fwd(P64, lo, tokens), targets, mask)

        p = base[key].clone().requires_grad_(True)
        assert torch.autograd.gradcheck(f, (p,), eps=1e-6, atol=1e-7, rtol=1e-5), key
        print(f"  gradcheck {key}: ok")
    # (4) torch's AdamW equals the hand-written one (in float64 from the same grads)
    d = max(maxdiff(adamw_by_hand(lora0[k].double(), [g.double() for g in step_grads[k]]), after[-1][k])
            for k in lora0)
    print(f"  AdamW torch vs by hand: max |diff| {d:.2e}")
    assert d < 1e-6, d
    # the gradients must all be clearly nonzero, so Adam's first step is well defined
    gmin = min(float(g.abs().min()) for g in grads.values())
    print(f"  smallest |grad| entry {gmin:.2e}; losses {['%.6f' % x for x in losses]}; "
          f"|logits - logits_base| max {maxdiff(logits, logits_base):.2e}")
    assert all(float(g.abs().max()) > 0 for g in grads.values())

    # ---- write ----
    tensors = [
        ("tokens", tokens.to(torch.int32).numpy()),
        ("targets", targets.to(torch.int32).numpy()),
        ("mask", mask.numpy()),
        ("logits", logits.numpy()),
        ("logits_base", logits_base.numpy()),
        ("loss", np.array([loss.item()], dtype=np.float32)),
        ("losses", np.array(losses, dtype=np.float32)),
    ]
    for k in lora0:  # lora.{l}.{t}.{A,B}
        rest = k[len("lora."):]
        tensors.append((k, lora0[k].numpy()))
        tensors.append(("grad." + rest, grads[k].numpy()))
        tensors.append(("step1." + rest, after[0][k].numpy()))
        tensors.append((f"step{STEPS}." + rest, after[-1][k].numpy()))
    for n, a in tensors:
        assert a.dtype in (np.float32, np.int32, np.uint8), n
    meta = dict(arch=arch, model=f"{name}.bin", rank=str(RANK), alpha=repr(ALPHA), targets=",".join(cfg["targets"]),
                lr=repr(LR), beta1=repr(BETA1), beta2=repr(BETA2), eps=repr(ADAM_EPS),
                weight_decay=repr(WEIGHT_DECAY), steps=str(STEPS), batch=str(B), seq_len=str(T),
                vocab=str(cfg["V"]), tied_classifier=("1" if (arch == "gpt2" or tied) else "0"),
                seed=str(cfg["seed"]))
    ref_path = os.path.join(HERE, f"{name}_ref.safetensors")
    st_io.write(ref_path, tensors, meta)
    back, m = st_io.read(ref_path)
    assert m == meta and all(np.array_equal(back[n], a) for n, a in tensors)
    print(f"  wrote {name}.bin ({os.path.getsize(bin_path)} bytes), {name}_ref.safetensors "
          f"({os.path.getsize(ref_path)} bytes, {len(tensors)} tensors)")


def main():
    torch.set_num_threads(1)  # determinism and the shared 2 cores
    run("gpt2_tiny", GPT2)
    run("llama_tiny", LLAMA, tied=False)
    run("llama_tiny_tied", LLAMA, tied=True)


if __name__ == "__main__":
    main()
