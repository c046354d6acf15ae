#!/usr/bin/env bash
# Stable Diffusion and DDPO benchmarks, ours (ddpo-bench) against diffusers / TRL 0.21 on the CPU, on the
# same random-weight diffusers folders, same shapes, float32, the same thread count. Prints one table.
#
#   scripts/bench-sd.sh                      # every case, tiny and small configs
#   scripts/bench-sd.sh --quick              # shorter timing, one DDPO epoch after one warm-up
#   scripts/bench-sd.sh tiny/ small/unet     # only cases whose config/case name starts with these
#   scripts/bench-sd.sh --no-ddpo            # skip the DDPO epochs (the slow part)
#   scripts/bench-sd.sh sd15/                # SD 1.5 at full size (opt-in): UNet forward, LoRA training
#                                            # pass, VAE decode, 3 repetitions each (~15 min, 4.2 GB of
#                                            # weights); sd15/sample and sd15/ddpo_epoch only when named
#
# Models: scripts/bench_sd_torch.py make writes .build-bench-models/{tiny,small} (ignored by git;
# rebuilt only when the configs in that script change). Each case runs in its own process on each side
# (ours, then the reference, back to back), so the peak RSS reported is the case's process's.
# Settings: PYTHON (default: /work/venv/bin/python if present, else python3), BENCH_SCRATCH (SwiftPM
# scratch path, default .build), BENCH_MODELS, TORCH_THREADS (default 2); TENSORKIT_NUM_THREADS and
# OPENBLAS_* pass through to ours. A full run takes about 10–15 minutes on a quiet 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv/bin/python ]]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi
SCRATCH="${BENCH_SCRATCH:-.build}"
MODELS="${BENCH_MODELS:-.build-bench-models}"
export TORCH_THREADS="${TORCH_THREADS:-2}"
BUDGET=2
EPOCHS=3
WARMUP=1
SMALL_EPOCHS=""
DDPO=1
PREFIXES=()
for arg in "$@"; do
    case "$arg" in
        --quick) BUDGET=0.5; EPOCHS=1; WARMUP=1 ;;
        --no-ddpo) DDPO=0 ;;
        --small-epochs=*) SMALL_EPOCHS="${arg#*=}" ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) PREFIXES+=("$arg") ;;
    esac
done

selected() {
    [[ ${#PREFIXES[@]} -eq 0 ]] && return 0
    local p
    for p in "${PREFIXES[@]}"; do [[ "$1" == "$p"* ]] && return 0; done
    return 1
}

echo "building ddpo-bench (release, scratch $SCRATCH)..." >&2
swift build -c release --scratch-path "$SCRATCH" --product ddpo-bench >&2
BIN="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/ddpo-bench"
"$PYTHON" -W ignore scripts/bench_sd_torch.py make --out "$MODELS" 2> >(grep -v -i -E "warn|deprecat" >&2)
# SD 1.5 at full size only when a prefix asks for it.
CONFIGS=(tiny small)
for p in "${PREFIXES[@]}"; do
    if [[ "$p" == sd15* ]]; then
        CONFIGS+=(sd15)
        "$PYTHON" -W ignore scripts/bench_sd_torch.py make --out "$MODELS" sd15 2> >(grep -v -i -E "warn|deprecat" >&2)
        break
    fi
done

OURS="$(mktemp)"; REF="$(mktemp)"
trap 'rm -f "$OURS" "$REF"' EXIT
py_quiet() { "$PYTHON" -W ignore "$@" 2> >(grep -v -i -E "warn|deprecat|Loading pipeline|torch_dtype|it/s\]|^\s*$" >&2); }

for config in "${CONFIGS[@]}"; do
    for case in unet_fwd_b2 unet_fwdbwd_b1 unet_lora_fwdbwd_b2 vae_decode_b1 sample ddpo_epoch; do
        selected "$config/$case" || continue
        budget=$BUDGET
        if [[ "$config" == sd15 ]]; then
            # Minutes per repetition: the three cases a CPU user meets first, unless a case is named.
            case "$case" in
                unet_fwd_b2|unet_lora_fwdbwd_b2|vae_decode_b1) ;;
                *) printf '%s\n' "${PREFIXES[@]}" | grep -qx "sd15/$case" || continue ;;
            esac
            budget=0
        fi
        if [[ "$case" == ddpo_epoch ]]; then
            [[ $DDPO == 1 ]] || continue
            epochs=$EPOCHS
            [[ "$config" == small && -n "$SMALL_EPOCHS" ]] && epochs=$SMALL_EPOCHS
            echo "== $config/$case: ours ($WARMUP warm-up + $epochs epochs)" >&2
            "$BIN" "$MODELS/$config" ddpo_epoch --epochs "$epochs" --warmup "$WARMUP" >> "$OURS" \
                || echo -e "$config/$case\tFAILED" >> "$OURS"
            echo "== $config/$case: TRL" >&2
            py_quiet scripts/bench_ddpo_trl.py "$MODELS/$config" --epochs "$epochs" --warmup "$WARMUP" \
                --threads "$TORCH_THREADS" >> "$REF" || echo -e "$config/$case\tFAILED" >> "$REF"
        else
            echo "== $config/$case" >&2
            "$BIN" "$MODELS/$config" "$case" --budget "$budget" >> "$OURS" || echo -e "$config/$case\tFAILED" >> "$OURS"
            py_quiet scripts/bench_sd_torch.py case --models "$MODELS" --budget "$budget" \
                --threads "$TORCH_THREADS" "$config" "$case" >> "$REF" || echo -e "$config/$case\tFAILED" >> "$REF"
        fi
    done
done

"$PYTHON" - "$OURS" "$REF" <<'EOF'
import sys

def read(path):
    rows = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 5:
            rows[f[0]] = dict(median=float(f[1]), reps=int(f[2]), min=float(f[3]), rss=float(f[4]))
        elif f and f[0]:
            rows[f[0]] = None
    return rows

ours, ref = read(sys.argv[1]), read(sys.argv[2])
# Goals (issues 3 and 4): SD cases faster than PyTorch at tiny, not slower at small; DDPO epoch
# <= 0.5x TRL at tiny, <= 1x at small.
def goal(name):
    config, case = name.split("/")
    if case == "ddpo_epoch":
        return 0.5 if config == "tiny" else 1.0, "<="
    return 1.0, "<" if config == "tiny" else "<="

print(f"{'case':24} {'ours':>10} {'ref':>10} {'ratio':>6} {'ours_min':>10} {'ref_min':>10} {'ratio':>6} "
      f"{'ours_MB':>8} {'ref_MB':>8}  {'reps':>5}  goal")
for name in ours:
    o, r = ours[name], ref.get(name)
    if o is None or r is None:
        print(f"{name:24} {'FAILED' if o is None else '':>10} {'FAILED' if r is None else '':>10}")
        continue
    seconds = name.endswith("ddpo_epoch")
    scale, unit = (1000.0, "s") if seconds else (1.0, "ms")
    fmt = (lambda v: f"{v / scale:.2f} {unit}") if seconds else (lambda v: f"{v:.1f} {unit}")
    ratio, ratio_min = o["median"] / r["median"], o["min"] / r["min"]
    limit, op = goal(name)
    ok = ratio < limit if op == "<" else ratio <= limit
    print(f"{name:24} {fmt(o['median']):>10} {fmt(r['median']):>10} {ratio:6.2f} {fmt(o['min']):>10} "
          f"{fmt(r['min']):>10} {ratio_min:6.2f} {o['rss']:8.0f} {r['rss']:8.0f}  {o['reps']:>2}/{r['reps']:<2}  "
          f"{'ok' if ok else 'MISSED'} ({op}{limit:g})")
print("ratio = ours/reference time (below 1: ours faster); MB = peak RSS of the case's process; "
      "reference = diffusers 0.35.2 / TRL 0.21 on PyTorch, "
      f"{__import__('os').environ.get('TORCH_THREADS')} threads")
EOF
