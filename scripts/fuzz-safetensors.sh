#!/usr/bin/env bash
# Fuzzes the safetensors reader (TensorKit/Fuzz/main.swift) with libFuzzer and AddressSanitizer.
#
#   scripts/fuzz-safetensors.sh [SECONDS] [LIBFUZZER OPTIONS...]     (default: 60 seconds)
#
# The corpus grows in .fuzz-safetensors/corpus (seeded from the test fixtures) and findings
# land in .fuzz-safetensors/artifacts/. Replay a finding with an ordinary build:
#   swift run SafeTensorsFuzz .fuzz-safetensors/artifacts/crash-...
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
shift || true
work=.fuzz-safetensors
flags=(
    -c debug --scratch-path .build-fuzz
    -Xswiftc -sanitize=fuzzer,address
    # No Swift top-level entry point: main.swift defines SafeTensorsFuzz_main to start libFuzzer.
    -Xswiftc -parse-as-library -Xswiftc -DFUZZING
    # For the @_extern(c) declaration of LLVMFuzzerRunDriver.
    -Xswiftc -enable-experimental-feature -Xswiftc Extern
)

# ld.gold warns once per ASan symbol it cannot export; that noise hides real messages.
set +e
swift build "${flags[@]}" --product SafeTensorsFuzz 2>&1 | grep -v "Cannot export local symbol"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "fuzz-safetensors: build failed" >&2
    exit "$status"
fi
binary="$(swift build "${flags[@]}" --show-bin-path)/SafeTensorsFuzz"

mkdir -p "$work/corpus" "$work/artifacts"
cp Tests/TensorKitTests/Fixtures/safetensors/*.safetensors "$work/corpus/"
cat > "$work/safetensors.dict" <<'EOF'
"{"
"}"
"[0,0]"
"\"dtype\":"
"\"shape\":"
"\"data_offsets\":"
"\"__metadata__\":"
"\"F32\""
"\"F64\""
"\"F16\""
"\"BF16\""
"\"I32\""
"\"I64\""
"\"U8\""
"\"BOOL\""
"\"I8\""
"null"
"true"
"\\u0000"
"\\ud83d\\ude00"
"4611686018427387904"
"18446744073709551615"
"1e3"
"-0"
EOF

echo "fuzz-safetensors: running $binary for ${seconds}s"
# The Swift backtracer and ASan's reporter both want the crash; let ASan report it.
SWIFT_BACKTRACE=enable=no "$binary" "$work/corpus" \
    -dict="$work/safetensors.dict" \
    -max_total_time="$seconds" \
    -artifact_prefix="$work/artifacts/" \
    -print_final_stats=1 \
    "$@"
