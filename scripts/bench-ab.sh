#!/usr/bin/env bash
# Interleaved A/B of TensorKit's CPU kernels: tensorkit-bench built from git revision REV (default
# HEAD, i.e. without uncommitted changes) against the working tree's, case by case, ROUNDS rounds
# (default 3) of "before CASE; after CASE". Prints each run's line (case, median ms, -, repetitions,
# minimum ms). Run it under `nice -n -10` on a quiet machine; compare minimums.
#
#   scripts/bench-ab.sh [--rev REV] [--rounds N] CASE ...     (case names: tensorkit-bench --list)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=HEAD rounds=3 cases=()
while (( $# )); do
    case "$1" in
        --rev) rev=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) cases+=("$1"); shift ;;
    esac
done
(( ${#cases[@]} )) || { echo "usage: scripts/bench-ab.sh [--rev REV] [--rounds N] CASE ..." >&2; exit 2; }
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$tree"' EXIT
git worktree add -q --detach "$tree" "$rev"
(cd "$tree" && swift build -c release --scratch-path "$PWD/../$(basename "$tree")-build" --product tensorkit-bench >&2)
before="$tree/../$(basename "$tree")-build/release/tensorkit-bench"
swift build -c release --product tensorkit-bench >&2
after=.build/release/tensorkit-bench
for c in "${cases[@]}"; do
    for _ in $(seq "$rounds"); do
        echo "before $("$before" "$c")"
        echo "after  $("$after" "$c")"
    done
done
rm -rf "$tree/../$(basename "$tree")-build"
