#!/usr/bin/env bash
# plot_results.sh DIR — PNG plots of an experiment grid (DIR/results.csv written by
# `splitllm experiment`) into DIR/plots/:
#   memory_cloud.png, memory_edge.png, memory_user.png   peak RSS of the tier vs users N, per scheme
#                                                        (splitllm: a line per edge count M)
#   latency.png                                          seconds per round vs N: measured (solid;
#                                                        wall time / rounds when the run did not
#                                                        measure rounds) and modeled (dashed)
#   loss.png                                             eval loss vs round per scheme at one N, M
#   bytes.png                                            bytes per round on each link vs N
# With several cut pairs in the grid every plot is made per cut: memory_cloud-c1_3.png, ...
# Only rows with status ok count. Needs gnuplot (pngcairo when it has it, else png) and a POSIX
# awk. The experiment command runs this at the end when gnuplot is installed.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: $0 DIR   (DIR/results.csv from splitllm experiment; writes DIR/plots/*.png)" >&2
    exit 2
fi
DIR=$1
CSV=$DIR/results.csv
[[ -r "$CSV" ]] || { echo "plot_results.sh: $CSV: no such file (run splitllm experiment --out $DIR first)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot_results.sh: gnuplot is not installed (apt-get install gnuplot-nox)" >&2; exit 1; }

OUT=$DIR/plots
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/plot_results.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1; then
    TERM_LINE='set terminal pngcairo size 960,640 enhanced font "Sans,11" linewidth 1.5'
else
    TERM_LINE='set terminal png size 960,640 enhanced font "Sans,11"'
fi

# The cut pairs present among the ok rows, in order of first appearance.
mapfile -t CUTS < <(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
    $h["status"] == "ok" { c = $h["cut1"] "_" $h["cut2"]; if (!(c in seen)) { seen[c] = 1; print c } }' "$CSV")
if [[ ${#CUTS[@]} -eq 0 ]]; then
    echo "plot_results.sh: $CSV has no ok rows; nothing to plot" >&2
    exit 0
fi
MODEL=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next } $h["status"] == "ok" { print $h["model"]; exit }' "$CSV")

# series KIND CUT SERIESDIR: writes SERIESDIR/<key>.dat ("x y" rows sorted by x) and
# SERIESDIR/<key>.style (gnuplot title and style) for one plot; prints "N M R" of the loss plot
# (its N, splitllm's M, the most rounds).
series() {
    local kind=$1 cut=$2 sdir=$3
    mkdir -p "$sdir"
    awk -F, -v kind="$kind" -v cut="$cut" -v sdir="$sdir" '
    function rank(s) { return s == "splitllm" ? 1 : s == "sfl" ? 2 : s == "sl" ? 3 : s == "fl" ? 4 : s == "central" ? 5 : 6 }
    function color(s, m) {
        if (s == "splitllm") return m <= 1 ? "#6baed6" : m == 2 ? "#2171b5" : m <= 4 ? "#08306b" : "#041a40"
        return s == "sfl" ? "#d62728" : s == "sl" ? "#ff7f0e" : s == "fl" ? "#2ca02c" : s == "central" ? "#7f7f7f" : "#9467bd"
    }
    # a codec other than none (--compress) is a series of its own
    function zkey(z) { if (z == "" || z == "none") return ""; gsub(/[^A-Za-z0-9.]/, "", z); return "_z" z }
    function spt(s) { return s == "sfl" ? 5 : s == "sl" ? 9 : s == "fl" ? 13 : 7 }  # point type per scheme
    function sps(s) { return s == "sfl" ? 1.7 : 1.2 }  # sfl drawn larger: it can coincide with fl
    function label(s, m) { return (s == "splitllm" ? "splitllm M=" m : s) ((z == "" || z == "none") ? "" : " [" z "]") }
    function emit(key, title, style, x, y) {
        fn = sdir "/" key ".dat"
        print x, y > fn
        if (!(key in styled)) { styled[key] = 1; print title "\t" style > (sdir "/" key ".style") }
    }
    NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
    $h["status"] != "ok" || ($h["cut1"] "_" $h["cut2"]) != cut { next }
    {
        s = $h["scheme"]; n = $h["users"] + 0; m = $h["edges"] + 0; R = $h["rounds"] + 0
        z = ("compress" in h) ? $h["compress"] : ""
        base = sprintf("%d_%s_m%02d", rank(s), s, m) zkey(z)
        pt = s == "splitllm" ? (m <= 1 ? 7 : m == 2 ? 5 : m <= 4 ? 9 : 11) : spt(s)
        if (z != "" && z != "none") { if (!(z in zpt)) zpt[z] = 4 + 2 * (nz++ % 6); pt = zpt[z] }  # open symbols per codec
        st = sprintf("lc rgb \"%s\" pt %d ps %.1f", color(s, m), pt, sps(s))
        if (kind ~ /^memory_/) {
            tier = substr(kind, 8)
            v = $h["peak_rss_" tier "_bytes"]
            t = label(s, m)
            if (v == "" && tier == "cloud" && s == "central") { v = $h["peak_rss_process_bytes"]; t = "central (one process)" }
            if (v != "") emit(base, t, st " dt 1", n, v / 1048576)
        } else if (kind == "latency") {
            v = $h["round_seconds_measured"]; t = label(s, m) " measured"
            if (v == "" && $h["wall_seconds"] != "" && R > 0) { v = $h["wall_seconds"] / R; t = label(s, m) " wall time / rounds" }
            if (v != "") emit(base "_a", t, st " dt 1", n, v)
            v = $h["round_seconds_modeled"]
            if (v != "") emit(base "_b", label(s, m) " modeled", st " dt 2", n, v)
        } else if (kind == "bytes") {
            if (R <= 0) next
            v = $h["bytes_user_edge"];  if (v != "") emit(base "_a", label(s, m) " user-edge", st " dt 1", n, v / R / 1048576)
            v = $h["bytes_edge_cloud"]; if (v != "") emit(base "_b", label(s, m) " edge-cloud", st " dt 2", n, v / R / 1048576)
            v = $h["bytes_user_cloud"]; if (v != "") emit(base "_c", label(s, m) " user-cloud", st " dt 1", n, v / R / 1048576)
        } else if (kind == "loss") {
            rows[++nrows] = $0
            ns[n] = 1; if (s == "splitllm") ms[n, m] = 1
        }
    }
    END {
        if (kind != "loss") exit
        # One N (16 when there, else the largest) and, for splitllm, one M (2 when there, else the largest).
        bn = -1; for (n in ns) if (n + 0 > bn) bn = n + 0
        if ((16 in ns)) bn = 16
        bm = -1; for (k in ms) { split(k, p, SUBSEP); if (p[1] + 0 == bn && p[2] + 0 > bm) bm = p[2] + 0 }
        if (((bn, 2) in ms)) bm = 2
        for (r = 1; r <= nrows; r++) {
            nf = split(rows[r], f, ",")
            s = f[h["scheme"]]; n = f[h["users"]] + 0; m = f[h["edges"]] + 0; R = f[h["rounds"]] + 0
            z = ("compress" in h) ? f[h["compress"]] : ""
            if (n != bn || (s == "splitllm" && m != bm)) continue
            base = sprintf("%d_%s_m%02d", rank(s), s, m) zkey(z)
            st = sprintf("lc rgb \"%s\" pt %d ps %.1f dt 1", color(s, m), s == "splitllm" ? 7 : spt(s), sps(s))
            if (R > maxr) maxr = R
            l0 = f[h["eval_loss_initial"]]; l1 = f[h["eval_loss_final"]]
            k = f[h["eval_loss_per_round"]] == "" ? 0 : split(f[h["eval_loss_per_round"]], lv, ";")
            if (k == R + 1) { for (i = 1; i <= k; i++) emit(base, label(s, m), st, i - 1, lv[i]) }
            else if (k > 0) { if (l0 != "") emit(base, label(s, m), st, 0, l0); for (i = 1; i <= k; i++) emit(base, label(s, m), st, i + (R - k), lv[i]) }
            else if (l0 != "" && l1 != "") { emit(base, label(s, m) " (initial, final)", st, 0, l0); emit(base, label(s, m) " (initial, final)", st, R, l1) }
        }
        print bn, bm, maxr + 0
    }' "$CSV"
    for f in "$sdir"/*.dat; do [[ -e "$f" ]] && sort -g -k1,1 -o "$f" "$f"; done
    return 0
}

# plot FILE TITLE XLABEL YLABEL SERIESDIR EXTRA_SETTINGS
plot() {
    local file=$1 title=$2 xlabel=$3 ylabel=$4 sdir=$5 extra=$6
    local parts=() dat style t s
    for dat in "$sdir"/*.dat; do
        [[ -e "$dat" ]] || continue
        style=${dat%.dat}.style
        t=$(cut -f1 "$style"); s=$(cut -f2 "$style")
        parts+=("'$dat' using 1:2 with linespoints $s title \"$t\"")
    done
    if [[ ${#parts[@]} -eq 0 ]]; then
        echo "plot_results.sh: no data for $(basename "$file"); skipped" >&2
        return 0
    fi
    local joined
    joined=$(printf '%s, ' "${parts[@]}")
    joined=${joined%, }
    gnuplot <<EOF
$TERM_LINE
set output '$file'
set title "$title"
set xlabel "$xlabel"
set ylabel "$ylabel"
set grid
set key outside right top vertical Left reverse noenhanced
set border 3
set tics nomirror
$extra
plot $joined
EOF
    echo "plot_results.sh: wrote $file"
}

for cut in "${CUTS[@]}"; do
    suffix=""
    [[ ${#CUTS[@]} -gt 1 ]] && suffix="-c$cut"
    cutlabel=${cut/_/:}
    # x axis: the users N of this cut, log2-spaced
    NS=$(awk -F, -v cut="$cut" 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
        $h["status"] == "ok" && ($h["cut1"] "_" $h["cut2"]) == cut { print $h["users"] }' "$CSV" | sort -n -u | paste -sd, -)
    NMIN=$(echo "$NS" | cut -d, -f1); NMAX=$(echo "$NS" | awk -F, '{ print $NF }')
    XSET="set logscale x 2; set xtics ($NS); set xrange [$NMIN/1.25:$NMAX*1.25]"
    for tier in cloud edge user; do
        case $tier in
            cloud) what="cloud / server tier (central: its one process)" ;;
            edge) what="edge tier (largest edge process)" ;;
            user) what="user tier (largest user process)" ;;
        esac
        series "memory_$tier" "$cut" "$TMP/memory_$tier-$cut" >/dev/null
        plot "$OUT/memory_$tier$suffix.png" "Peak memory of the $what — $MODEL, cut $cutlabel" \
            "users N" "peak resident memory (MiB)" "$TMP/memory_$tier-$cut" "$XSET; set yrange [0:*]"
    done
    series latency "$cut" "$TMP/latency-$cut" >/dev/null
    plot "$OUT/latency$suffix.png" "Time per round (solid: measured, dashed: modeled) — $MODEL, cut $cutlabel" \
        "users N" "seconds per round" "$TMP/latency-$cut" "$XSET; set yrange [0:*]"
    series bytes "$cut" "$TMP/bytes-$cut" >/dev/null
    plot "$OUT/bytes$suffix.png" "Bytes per round per link kind — $MODEL, cut $cutlabel" \
        "users N" "MiB per round: all links of the kind, both directions (log scale)" "$TMP/bytes-$cut" "$XSET; set logscale y"
    read -r LN LM LR < <(series loss "$cut" "$TMP/loss-$cut")
    xt="set xtics 1"; [[ "${LR:-0}" -gt 12 ]] && xt="set xtics 5; set mxtics 5"
    mlabel=""; [[ "$LM" != "-1" ]] && mlabel=", splitllm M=$LM"
    plot "$OUT/loss$suffix.png" "Eval loss vs round at N=$LN$mlabel — $MODEL, cut $cutlabel" \
        "round (0 = before training)" "eval loss (nats per token)" "$TMP/loss-$cut" "$xt; set autoscale xfix; set offsets 0.25, 0.25, 0, 0"
done
