#!/usr/bin/env python3
"""bench_step_torch.py: the PyTorch side of the LoRA training-step benchmark.

For: timing one LoRA fine-tuning step (forward + backward + AdamW on the adapters only) of a
GPT-2-shaped model in plain PyTorch on the CPU, with the same shape and flags as
`splitllm bench step`, so that scripts/bench_compare.sh can print the ratios.
Not for: correctness references (the tests/reference scripts are) or real GPT-2 weights:
the model is randomly initialised here, nothing is downloaded, and no transformers library
is used.

Model (GPT-2 layout): token embedding wte (V,C) + learned positions wpe (maxT,C); L blocks of
  x = x + proj(attn(ln_1(x)))   with a fused qkv Linear(C,3C) and causal attention, NH heads
  x = x + down(gelu_tanh(up(ln_2(x))))   up Linear(C,4C), down Linear(4C,C)
then ln_f and the LM head tied to wte. LayerNorms have a bias. All base weights are frozen.
LoRA (PEFT convention): delta y = (alpha/r) * B (A x), A (r,in) Kaiming-uniform, B (out,r)
zeros, on the targets chosen from q, k, v (slices of the fused qkv), o (attention
out-projection), up, down (MLP).

The last line printed is `tokens_per_s=... step_ms=... peak_rss_bytes=...`.
"""

import argparse
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (L layers, C channels, NH heads, V vocabulary, maxT context positions)
PRESETS = {
    "124M": dict(L=12, C=768, NH=12, V=50257, maxT=1024),  # GPT-2 small
    "tiny": dict(L=4, C=64, NH=4, V=512, maxT=128),  # seconds-long smoke test; same as splitllm's tiny
}
LORA_TARGETS = ("q", "k", "v", "o", "up", "down")
MLP_EXPANSION = 4  # GPT-2's MLP hidden width is 4C
LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon
INIT_STD = 0.02  # GPT-2's weight init standard deviation
RU_MAXRSS_BYTES_PER_UNIT = 1024  # on Linux getrusage reports ru_maxrss in KiB


class LoRA(nn.Module):
    """Low-rank update delta y = scale * B (A x); x is (B,T,in), the result (B,T,out)."""

    def __init__(self, in_features, out_features, rank, alpha):
        super().__init__()
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))  # (r,in)
        self.B = nn.Parameter(torch.zeros(out_features, rank))  # (out,r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear and PEFT do

    def forward(self, x):
        return F.linear(F.linear(x, self.A), self.B) * self.scale


class Block(nn.Module):
    def __init__(self, C, NH, maxT, rank, alpha, targets):
        super().__init__()
        self.C, self.NH = C, NH
        self.ln_1 = nn.LayerNorm(C, eps=LN_EPS)
        self.qkv = nn.Linear(C, 3 * C)  # fused: rows [0,C) q, [C,2C) k, [2C,3C) v
        self.proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=LN_EPS)
        self.up = nn.Linear(C, MLP_EXPANSION * C)
        self.down = nn.Linear(MLP_EXPANSION * C, C)
        hidden = MLP_EXPANSION * C
        shapes = {"q": (C, C), "k": (C, C), "v": (C, C), "o": (C, C), "up": (C, hidden), "down": (hidden, C)}
        self.lora = nn.ModuleDict({t: LoRA(*shapes[t], rank, alpha) for t in targets})
        self.use_sdpa = hasattr(F, "scaled_dot_product_attention")
        if not self.use_sdpa:
            self.register_buffer("causal", torch.ones(maxT, maxT, dtype=torch.bool).tril(), persistent=False)

    def _adapted(self, name, x, y):
        return y + self.lora[name](x) if name in self.lora else y

    def attention(self, x):
        # x is (B,T,C); q, k, v are (B,NH,T,hs)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = self._adapted("q", x, q), self._adapted("k", x, k), self._adapted("v", x, v)
        hs = C // self.NH
        q, k, v = (t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v))
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B,NH,T,T)
            att = att.masked_fill(~self.causal[:T, :T], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self._adapted("o", y, self.proj(y))

    def mlp(self, x):
        h = F.gelu(self._adapted("up", x, self.up(x)), approximate="tanh")  # (B,T,4C)
        return self._adapted("down", h, self.down(h))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, L, C, NH, V, maxT, rank, alpha, targets):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList(Block(C, NH, maxT, rank, alpha, targets) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=LN_EPS)
        for name, p in self.named_parameters():
            if ".lora." in name:
                continue
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=INIT_STD)
            p.requires_grad_(False)

    def forward(self, idx, targets):
        # idx, targets are (B,T) token ids; returns the mean cross-entropy over all B*T positions
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head, (B,T,V)
        return F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))


def default_threads():
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:
        return os.cpu_count() or 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="124M")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", default="q,v", help="comma-separated subset of " + ",".join(LORA_TARGETS))
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()
    a.targets = [t for t in a.lora_targets.split(",") if t]
    bad = [t for t in a.targets if t not in LORA_TARGETS]
    if bad or not a.targets:
        p.error(f"--lora-targets: expected a non-empty subset of {','.join(LORA_TARGETS)}, found '{a.lora_targets}'")
    cfg = PRESETS[a.preset]
    if not 1 <= a.seq <= cfg["maxT"]:
        p.error(f"--seq: expected 1..{cfg['maxT']} for preset {a.preset}, found {a.seq}")
    for name in ("batch", "lora_rank", "steps", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected >= 1, found {getattr(a, name)}")
    if a.warmup < 0:
        p.error(f"--warmup: expected >= 0, found {a.warmup}")
    return a


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = PRESETS[a.preset]
    model = GPT(**cfg, rank=a.lora_rank, alpha=a.lora_alpha, targets=a.targets)
    model.train()
    lora_params = [p for p in model.parameters() if p.requires_grad]
    n_base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    n_lora = sum(p.numel() for p in lora_params)
    opt = torch.optim.AdamW(lora_params, lr=a.lr)
    print(
        f"torch {torch.__version__} threads={a.threads} preset={a.preset} L={cfg['L']} C={cfg['C']} "
        f"NH={cfg['NH']} V={cfg['V']} B={a.batch} T={a.seq} lora_rank={a.lora_rank} "
        f"lora_alpha={a.lora_alpha:g} lora_targets={','.join(a.targets)} "
        f"base_params={n_base} lora_params={n_lora} attention={'sdpa' if model.blocks[0].use_sdpa else 'manual'}",
        flush=True,
    )

    g = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, cfg["V"], (a.batch, a.seq + 1), generator=g)
    idx, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B,T) each

    step_s = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            step_s.append(dt)
        print(f"step {step + 1}/{a.warmup + a.steps}{' (warm-up)' if step < a.warmup else ''}: "
              f"loss {loss.item():.4f} {dt * 1e3:.1f} ms", flush=True)

    mean_step_s = sum(step_s) / len(step_s)
    peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_BYTES_PER_UNIT
    print(f"tokens_per_s={a.batch * a.seq / mean_step_s:.1f} step_ms={mean_step_s * 1e3:.2f} "
          f"peak_rss_bytes={peak_rss_bytes}")


if __name__ == "__main__":
    main()
