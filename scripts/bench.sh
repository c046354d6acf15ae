#!/usr/bin/env bash
# Side-by-side CPU benchmark: TensorKit (tensorkit-bench) vs PyTorch (scripts/bench_torch.py),
# same case names, shapes and float32. Prints one table; see BENCHMARKS.md for recorded results.
#
#   scripts/bench.sh [--quick] [--no-build] [--blas-env-column] [PREFIX ...]
#
#   --quick            ~0.3 s of repetitions per case instead of ~1.5 s (numbers are noisier)
#   --no-build         use the already built binary
#   --blas-env-column  also run the BLAS-bound cases (matmul, linear, conv2d) with
#                      OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as an extra column
#   PREFIX ...         only cases whose name starts with one of these (matmul_N also times
#                      raw cblas_sgemm at N, interleaved, as sgemm_raw_N)
#
# Environment: PYTHON (default /work/venv/bin/python if present, else python3; it needs
# `pip install -r Tests/TensorKitTests/Fixtures/requirements.txt`), BENCH_SCRATCH (SwiftPM scratch
# path, default .build), TORCH_THREADS (default 2). OPENBLAS_* variables are passed through as set.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=() build=1 envcol=0 prefixes=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        --no-build) build=0 ;;
        --blas-env-column) envcol=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        --*) echo "unknown option $arg" >&2; exit 2 ;;
        *) prefixes+=("$arg") ;;
    esac
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv/bin/python ]]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi
scratch="${BENCH_SCRATCH:-.build}"
if (( build )); then
    swift build -c release --scratch-path "$scratch" --product tensorkit-bench >&2
fi
bin="$scratch/release/tensorkit-bench"
[[ -x "$bin" ]] || { echo "no $bin; build it or drop --no-build" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bin" --info | sed 's/^/# /' >&2

# One process per case: a kernel that traps (e.g. an unfinished stub) loses only its own row.
mapfile -t cases < <("$bin" --list)
selected=()
for c in "${cases[@]}"; do
    if (( ${#prefixes[@]} == 0 )); then selected+=("$c"); continue; fi
    for p in "${prefixes[@]}"; do [[ "$c" == "$p"* ]] && { selected+=("$c"); break; }; done
done
(( ${#selected[@]} )) || { echo "no case matches ${prefixes[*]}" >&2; exit 2; }

run_ours() {  # $1: output file; remaining: env prefix (may be empty)
    local out=$1; shift
    for c in "${selected[@]}"; do
        if ! "$@" "$bin" "${quick[@]}" "$c" >>"$out" 2>"$tmp/err"; then
            echo "$c	crashed	-	0	-" >>"$out"
            echo "tensorkit-bench $c failed: $(grep -m1 -E 'Fatal|error|crash' "$tmp/err" || tail -1 "$tmp/err")" >&2
        fi
    done
}

echo "running TensorKit cases..." >&2
run_ours "$tmp/ours" env
if (( envcol )); then
    echo "running BLAS-bound TensorKit cases with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset..." >&2
    saved=("${selected[@]}") selected=()
    for c in "${saved[@]}"; do [[ "$c" =~ ^(matmul|linear|conv2d) ]] && selected+=("$c"); done
    run_ours "$tmp/ours_unset" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
    selected=("${saved[@]}")
fi
touch "$tmp/ours_unset"

echo "running PyTorch cases..." >&2
"$PYTHON" scripts/bench_torch.py "${quick[@]}" --threads "${TORCH_THREADS:-2}" "${selected[@]}" >"$tmp/torch" 2>"$tmp/torch_err" \
    || { cat "$tmp/torch_err" >&2; echo "bench_torch.py failed" >&2; }
grep -m1 '^torch' "$tmp/torch_err" | sed 's/^/# /' >&2 || true

# Table. ours/torch is a time ratio: above 1 means TensorKit is slower. Goals (judged on the
# medians): conv2d <= 1.2, everything else <= 1.5; TensorKit matmul >= 0.95 of raw cblas_sgemm
# GFLOP/s from 512 up. The min columns (fastest repetition) show what a shared, loaded machine
# does to the medians.
awk -F'\t' -v envcol="$envcol" '
    FILENAME == ARGV[1] { ours[$1] = $2; ogf[$1] = $3; omin[$1] = $5; order[++n] = $1; next }
    FILENAME == ARGV[2] { unset[$1] = $2; next }
    FILENAME == ARGV[3] { torch[$1] = $2; tgf[$1] = $3; tmin[$1] = $5; next }
    function num(x) { return x ~ /^[0-9.]+$/ }
    function ratio(a, b) { return (num(a) && num(b) && b > 0) ? sprintf("%.2f", a / b) : "-" }
    END {
        fmt = "%-38s %9s %9s %7s %9s %9s %7s %8s %8s  %s"
        hdr = sprintf(fmt, "case", "ours_ms", "torch_ms", "ratio", "ours_min", "torch_min", "ratio", "ours_GF", "torch_GF", "goal")
        if (envcol) hdr = hdr sprintf("  %14s", "ours_ms_unset")
        print hdr
        for (i = 1; i <= n; i++) {
            c = order[i]
            if (c ~ /^sgemm_raw_/) continue
            t = (c in torch) ? torch[c] : "-"
            r = ratio(ours[c], t); goal = "-"
            if (r != "-") {
                limit = (c ~ /^conv2d/) ? 1.2 : 1.5
                goal = (r + 0 <= limit) ? sprintf("ok (<=%.1f)", limit) : sprintf("MISSED (>%.1f)", limit)
            }
            line = sprintf(fmt, c, ours[c], t, r, omin[c], (c in tmin) ? tmin[c] : "-", ratio(omin[c], tmin[c]),
                           ogf[c], (c in tgf) ? tgf[c] : "-", goal)
            if (envcol) line = line sprintf("  %14s", (c in unset) ? unset[c] : "")
            print line
        }
        print ""
        printf "%-12s %10s %11s %9s %10s %11s %9s  %s\n", "matmul size", "ours_GF", "sgemm_GF", "ours/raw",
               "ours_min", "sgemm_min", "by_min", "goal (>=0.95 from 512, medians)"
        for (i = 1; i <= n; i++) {
            c = order[i]
            if (c !~ /^matmul_/) continue
            size = substr(c, 8); raw = "sgemm_raw_" size
            if (!(raw in ours) || !num(ogf[c]) || !num(ogf[raw])) continue
            r = ogf[c] / ogf[raw]
            goal = (size + 0 < 512) ? "n/a" : ((r >= 0.95) ? "ok" : "MISSED")
            printf "%-12s %10s %11s %9.3f %10s %11s %9s  %s\n", size, ogf[c], ogf[raw], r, omin[c], omin[raw],
                   ratio(omin[raw], omin[c]), goal
        }
    }' "$tmp/ours" "$tmp/ours_unset" "$tmp/torch"
