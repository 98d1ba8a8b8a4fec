#!/usr/bin/python3
"""make_results_md.py DIR [DIR ...] [-o FILE] [--n N] [--m M] — docs/RESULTS.md from the
folders of `splitllm experiment` runs (each with results.csv, experiment.json and cells/).

Tables, one set per (model, cut) found among the ok rows (runs with --shape-links: a latency
table of their own):
  - peak memory at N users, M edges (default 16 and 2; else the largest N present and the
    largest M <= N): cloud/server peak per scheme, splitllm's reduction against each scheme,
    the largest user and edge process, the largest process of any tier;
  - where the memory goes (the summaries' memory_breakdown, when they have it);
  - quality: eval loss before/after and perplexity per scheme and N, gap to central at that N;
  - latency: seconds per round measured (and modeled when the runs report it), wall time;
  - compression (when the grid varied --compress): bytes saved and eval-loss cost per codec.
The main tables read the uncompressed cells (codec "none").
Missing cells show as "—". The exact command lines (experiment.json) and the machine are
written into the document. Standard library only; run with /usr/bin/python3.
"""
import argparse
import csv
import datetime
import json
import math
import os
import sys

SCHEMES = ["splitllm", "sfl", "sl", "fl", "central"]
DASH = "—"
MIB = 1024.0 * 1024.0


def num(row, key):
    v = (row.get(key) or "").strip()
    if v == "":
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def fmt(x, spec):
    return DASH if x is None else format(x, spec)


def mib(x):
    return DASH if x is None else "%.1f" % (x / MIB)


def pct(new, old):
    """How much lower new is than old, in % of old ("+" = lower)."""
    if new is None or old is None or old == 0:
        return DASH
    return "%.1f%%" % ((old - new) / old * 100.0)


def gap(x, ref):
    if x is None or ref is None or ref == 0:
        return DASH
    return "%+.2f%%" % ((x - ref) / ref * 100.0)


def load_dir(d):
    """Rows (dicts) of DIR/results.csv, each with _dir; and DIR/experiment.json (or {})."""
    path = os.path.join(d, "results.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["_dir"] = d
    exp = {}
    try:
        with open(os.path.join(d, "experiment.json")) as f:
            exp = json.load(f)
    except (OSError, ValueError):
        pass
    return rows, exp


def codec(row):
    """The link codec of a row (--compress); "none" when the run did not say."""
    z = (row.get("compress") or "").strip()
    return z or "none"


def link_bytes(row):
    vals = [num(row, k) for k in ("bytes_user_edge", "bytes_edge_cloud", "bytes_user_cloud")]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def breakdown(row):
    """{tier: {key: bytes}} from the row's memory_breakdown column, else the cell's summary.json."""
    out = {}
    text = (row.get("memory_breakdown") or "").strip()
    if text:
        for item in text.split(";"):
            if "=" not in item:
                continue
            k, v = item.split("=", 1)
            tier, _, key = k.partition(".")
            try:
                out.setdefault(tier, {})[key or "total"] = float(v)
            except ValueError:
                pass
        return out
    try:
        with open(os.path.join(row["_dir"], row.get("dir", ""), "summary.json")) as f:
            mb = json.load(f).get("memory_breakdown")
    except (OSError, ValueError):
        return out
    if isinstance(mb, dict):
        for tier, d in mb.items():
            if isinstance(d, dict):
                out[tier] = {k: float(v) for k, v in d.items() if isinstance(v, (int, float))}
    return out


def cell_command(row):
    try:
        with open(os.path.join(row["_dir"], row.get("dir", ""), "command.txt")) as f:
            return f.read().strip()
    except OSError:
        return None


class Group:
    """The ok rows of one (model, cut): lookup by (scheme, N, M)."""

    def __init__(self, model, cut, shaped=False):
        self.model, self.cut, self.shaped = model, cut, shaped
        self.cells = {}
        self.codecs = []
        self.extra = []  # cells of a scheme already present, with another training budget

    def add(self, r):
        """The first folder given wins a (scheme, N, M, codec); a later cell with another budget
        (rounds x local steps) is kept as an extra row of the quality table."""
        z = codec(r)
        key = (r["scheme"], int(r["users"]), int(r["edges"]), z)
        old = self.cells.get(key)
        if old is None:
            self.cells[key] = r
        elif (old.get("rounds"), old.get("local_steps")) != (r.get("rounds"), r.get("local_steps")):
            self.extra.append(r)
        if z not in self.codecs:
            self.codecs.append(z)

    def get(self, scheme, n, m, z="none"):
        """The cell; the main tables read the uncompressed one (central has no links: any codec)."""
        m = m if scheme == "splitllm" else 0
        r = self.cells.get((scheme, n, m, z))
        if r is None and scheme == "central":
            r = next((v for k, v in self.cells.items() if k[:3] == (scheme, n, m)), None)
        return r

    def users(self):
        return sorted({k[1] for k in self.cells})

    def edges(self, n):
        return sorted({k[2] for k in self.cells if k[0] == "splitllm" and k[1] == n})

    def ref_nm(self, want_n, want_m):
        ns = self.users()
        if not ns:
            return None, None
        n = want_n if want_n in ns else ns[-1]
        ms = self.edges(n)
        m = want_m if want_m in ms else (ms[-1] if ms else want_m)
        return n, m


def server_rss(r):
    if r is None:
        return None
    v = num(r, "peak_rss_cloud_bytes")
    if v is None and r["scheme"] == "central":
        v = num(r, "peak_rss_process_bytes")
    return v


def largest_rss(r):
    if r is None:
        return None
    vals = [num(r, k) for k in ("peak_rss_user_bytes", "peak_rss_edge_bytes", "peak_rss_cloud_bytes")]
    vals = [v for v in vals if v is not None]
    if not vals and r["scheme"] == "central":
        return num(r, "peak_rss_process_bytes")
    return max(vals) if vals else None


def memory_section(g, want_n, want_m, out):
    if not any(num(r, "peak_rss_cloud_bytes") is not None or num(r, "peak_rss_user_bytes") is not None
               for r in g.cells.values()):
        out.append("### Peak memory\n")
        out.append("These runs ran their tiers as threads of one process (`--threads`): no per-tier peak; the memory "
                   "tables come from runs with a process per tier.\n")
        return
    n, m = g.ref_nm(want_n, want_m)
    note = ""
    if n != want_n or m != want_m:
        note = " (the grid has no N=%d, M=%d cells; the nearest present are shown)" % (want_n, want_m)
    out.append("### Peak memory at N=%s users, M=%s edges%s\n" % (n, m, note))
    out.append("Peak resident memory (VmHWM) of each process in MiB; user and edge columns are the largest "
               "process of the tier. \"splitllm's reduction\" is how much lower splitllm's value is than the "
               "scheme's, in % of the scheme's (negative: splitllm's is higher).\n")
    out.append("| scheme | cloud / server peak (MiB) | splitllm's reduction (cloud/server) | largest user (MiB) "
               "| largest edge (MiB) | largest process of any tier (MiB) | splitllm's reduction (any tier) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ref = g.get("splitllm", n, m)
    for s in SCHEMES:
        r = g.get(s, n, m)
        label = s + (" (M=%s)" % m if s == "splitllm" else "") + (" (one process)" if s == "central" else "")
        red = DASH if s == "splitllm" else pct(server_rss(ref), server_rss(r))
        red_any = DASH if s == "splitllm" else pct(largest_rss(ref), largest_rss(r))
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, mib(server_rss(r)), red, mib(num(r, "peak_rss_user_bytes") if r else None),
            mib(num(r, "peak_rss_edge_bytes") if r else None), mib(largest_rss(r)), red_any))
    out.append("")
    # where the memory goes
    rows = []
    keys = []
    for s in SCHEMES:
        r = g.get(s, n, m)
        if r is None:
            continue
        bd = breakdown(r)
        for tier in ("user", "edge", "cloud", "central", "process"):
            if tier not in bd:
                continue
            for k in bd[tier]:
                if k not in keys:
                    keys.append(k)
            rows.append((s, tier, bd[tier]))
    if rows:
        out.append("#### Where the memory goes (N=%s, M=%s)\n" % (n, m))
        out.append("Each process's own accounting, in MiB (the `memory_breakdown` of summary.json; for user and edge "
                   "the process the run reported).\n")
        out.append("| scheme | tier | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        out.append("| --- | --- | " + " | ".join("---:" for _ in keys) + " |")
        for s, tier, d in rows:
            out.append("| %s | %s | %s |" % (s, tier, " | ".join(mib(d.get(k)) for k in keys)))
        out.append("")
    else:
        out.append("No memory breakdown in these summaries.\n")
    cmd = cell_command(ref) if ref else None
    if cmd:
        out.append("The splitllm cell of this table ran:\n\n```sh\n%s\n```\n" % cmd)


def quality_section(g, out):
    out.append("### Quality\n")
    out.append("Eval loss (mean masked cross-entropy on the validation shard, nats per token) before training "
               "and on the final aggregated adapter; gap = (loss − central's loss at the same N) / central's, in %. "
               "Samples = training sequences over the whole run (from the run's metrics.jsonl): compare schemes at "
               "equal samples.\n")
    out.append("| scheme | N | M | rounds × local steps | samples | eval loss before | eval loss after "
               "| perplexity after | gap to central |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ns = g.users() or [None]
    for n in ns:
        central = g.get("central", n, 0) if n is not None else None
        c_loss = num(central, "eval_loss_final") if central else None
        for s in SCHEMES:
            ms = (g.edges(n) or [None]) if s == "splitllm" else [0]
            for m in ms:
                r = g.get(s, n, m) if n is not None and m is not None else None
                loss = num(r, "eval_loss_final") if r else None
                budget = "%s × %s" % (r["rounds"], r["local_steps"]) if r else DASH
                out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    s, DASH if n is None else n, DASH if m is None else m, budget,
                    fmt(num(r, "train_samples") if r else None, ".0f"),
                    fmt(num(r, "eval_loss_initial") if r else None, ".4f"), fmt(loss, ".4f"),
                    fmt(num(r, "ppl_final") if r else None, ".2f"),
                    DASH if s == "central" else gap(loss, c_loss)))
        for r in [x for x in g.extra if n is not None and int(x["users"]) == n and codec(x) == "none"]:
            loss = num(r, "eval_loss_final")
            out.append("| %s (another budget) | %s | %s | %s × %s | %s | %s | %s | %s | %s |" % (
                r["scheme"], r["users"], r["edges"], r["rounds"], r["local_steps"],
                fmt(num(r, "train_samples"), ".0f"), fmt(num(r, "eval_loss_initial"), ".4f"), fmt(loss, ".4f"),
                fmt(num(r, "ppl_final"), ".2f"), DASH if r["scheme"] == "central" else gap(loss, c_loss)))
    out.append("")


def latency_section(g, out):
    out.append("### Latency\n")
    out.append("Seconds per round: measured (mean over rounds: the run's round_seconds_measured, else the cloud's "
               "round times in metrics.jsonl — central: its step times per round), modeled by the wireless model "
               "when the run reports it; wall time / rounds covers the whole run (start-up and model distribution "
               "included).\n")
    out.append("| scheme | N | M | measured s/round | modeled s/round | wall time / rounds (s) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in g.users() or [None]:
        for s in SCHEMES:
            ms = (g.edges(n) or [None]) if s == "splitllm" else [0]
            for m in ms:
                r = g.get(s, n, m) if n is not None and m is not None else None
                wall = num(r, "wall_seconds") if r else None
                rounds = num(r, "rounds") if r else None
                per = wall / rounds if wall is not None and rounds else None
                out.append("| %s | %s | %s | %s | %s | %s |" % (
                    s, DASH if n is None else n, DASH if m is None else m,
                    fmt(num(r, "round_seconds_measured") if r else None, ".3f"),
                    fmt(num(r, "round_seconds_modeled") if r else None, ".3f"), fmt(per, ".3f")))
    out.append("")


def compression_section(g, out):
    if all(z == "none" for z in g.codecs):
        return
    out.append("### Compression of activations and gradients on the links\n")
    out.append("Bytes per round on all links together (both directions) with each codec, and what it costs in "
               "final eval loss; both relative to the same cell without compression (`none`).\n")
    out.append("| scheme | N | M | codec | MiB per round | bytes saved | eval loss after | loss cost |")
    out.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    keys = sorted({k[:3] for k in g.cells if k[0] != "central"},
                  key=lambda k: (k[1], SCHEMES.index(k[0]) if k[0] in SCHEMES else 99, k[2]))
    for s, n, m in keys:
        base = g.cells.get((s, n, m, "none"))
        for z in g.codecs:
            r = g.cells.get((s, n, m, z))
            if r is None:
                continue
            b, rounds = link_bytes(r), num(r, "rounds")
            per = b / rounds / MIB if b is not None and rounds else None
            loss = num(r, "eval_loss_final")
            b0 = link_bytes(base) if base else None
            l0 = num(base, "eval_loss_final") if base else None
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s, n, m, z, fmt(per, ".3f"), DASH if z == "none" else pct(b, b0), fmt(loss, ".4f"),
                DASH if z == "none" else gap(loss, l0)))
    out.append("")


def provenance(dirs, exps, out):
    out.append("## How these numbers were produced\n")
    for d, exp in zip(dirs, exps):
        out.append("### `%s`\n" % d)
        inv = exp.get("invocations") or []
        if not inv:
            out.append("No experiment.json: the commands are unknown.\n")
            continue
        out.append("Commands (every invocation on this folder; a resumed grid shows several):\n")
        out.append("```sh")
        for i in inv:
            cwd = i.get("cwd")
            line = i.get("command_line", "")
            out.append(("cd %s && " % cwd if cwd else "") + line)
        out.append("```\n")
        machines = []
        for i in inv:
            mch = i.get("machine") or {}
            desc = ", ".join(x for x in [
                mch.get("cpu"), ("%d CPUs online" % mch["cpus_online"]) if "cpus_online" in mch else None,
                ("%.1f GiB memory" % (mch["memory_bytes"] / 1024.0 ** 3)) if "memory_bytes" in mch else None,
                mch.get("os"), mch.get("kernel"),
                ("OMP_NUM_THREADS=%s" % mch["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in mch else None,
                ("load average %.2f at the start" % mch["loadavg_1m"]) if "loadavg_1m" in mch else None] if x)
            machines.append("- %s → %s: %s; %s cells run, %s ok, %s failed (%s)" % (
                i.get("started", "?"), i.get("finished", "unfinished"), desc or "machine unknown",
                i.get("cells_run", "?"), i.get("cells_ok", "?"), i.get("cells_failed", "?"), i.get("status", "?")))
        out.append("Machine and runs:\n")
        out.extend(machines)
        out.append("")
    out.append("Each cell's exact `splitllm run` command is in `DIR/cells/<cell>/command.txt`, its output in "
               "`run.log`, its measurements in `summary.json`.\n")


def main(argv):
    ap = argparse.ArgumentParser(description="Write docs/RESULTS.md from splitllm experiment folders.")
    ap.add_argument("dirs", nargs="+", help="experiment output folders (each with results.csv)")
    ap.add_argument("-o", "--output", default=None,
                    help="output file (default: docs/RESULTS.md beside this script; '-' for stdout)")
    ap.add_argument("--n", type=int, default=16, help="users N of the memory table (default 16)")
    ap.add_argument("--m", type=int, default=2, help="edges M of the memory table (default 2)")
    ap.add_argument("--memory-model", default=None, help="only this model's memory tables (results.csv's model)")
    ap.add_argument("--quality-model", default=None, help="only this model's quality tables")
    ap.add_argument("--latency-model", default=None, help="only this model's latency tables")
    a = ap.parse_args(argv)

    all_rows, exps = [], []
    for d in a.dirs:
        try:
            rows, exp = load_dir(d)
        except OSError as e:
            print("make_results_md.py: %s: %s" % (d, e), file=sys.stderr)
            return 1
        all_rows.extend(rows)
        exps.append(exp)
    groups = {}
    order = []
    n_bad = 0
    for r in all_rows:
        if r.get("status") != "ok":
            n_bad += 1
            continue
        try:
            shaped = (r.get("shape_links") or "").strip().lower() not in ("", "0", "false", "none", "off")
            shaped = shaped or "--shape-links" in (cell_command(r) or "")
            key = (r.get("model", "?"), "%s:%s" % (r["cut1"], r["cut2"]), shaped)
            int(r["users"]), int(r["edges"])
        except (KeyError, ValueError):
            n_bad += 1
            continue
        if key not in groups:
            groups[key] = Group(*key)
            order.append(key)
        groups[key].add(r)

    out = ["# Results", ""]
    out.append("Generated by `scripts/make_results_md.py %s` on %s from the experiment folders listed at the end; "
               "do not edit by hand — rerun the script. docs/EXPERIMENTS.md says how to produce the folders.\n" % (
                   " ".join(a.dirs), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    out.append("Same engine, data, seeds and engineering for every scheme: the frozen base weights are a shared "
               "read-only mmap in every scheme (and every process maps only the model part it runs), so resident "
               "memory counts the pages of weights a process touches once, however many streams use them. Peak "
               "memory is each process's VmHWM; two-tier schemes (sfl, sl) report their server as `cloud`; fl "
               "reports its users and the aggregating cloud; central is one process.\n")
    if n_bad:
        out.append("%d rows were not ok (failed or pending) and are left out.\n" % n_bad)
    if not order:
        out.append("No ok cells found: every table is empty.\n")
        order.append(("—", "—", False))
        groups[order[0]] = Group(*order[0])
    for key in order:
        g = groups[key]
        model, cut, shaped = key
        if shaped:
            # --shape-links paces the links to the wireless model: only the times differ
            out.append("## %s, cut %s, links shaped to the wireless model (--shape-links)\n" % (model, cut))
            latency_section(g, out)
            continue
        out.append("## %s, cut %s\n" % (model, cut))
        if a.memory_model in (None, model):
            memory_section(g, a.n, a.m, out)
        if a.quality_model in (None, model):
            quality_section(g, out)
        if a.latency_model in (None, model):
            latency_section(g, out)
        compression_section(g, out)
    provenance(a.dirs, exps, out)
    text = "\n".join(out).rstrip("\n") + "\n"

    dest = a.output
    if dest is None:
        dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "RESULTS.md")
    if dest == "-":
        sys.stdout.write(text)
        return 0
    tmp = dest + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    print("make_results_md.py: wrote %s" % dest, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
