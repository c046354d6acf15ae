#!/usr/bin/env bash
# Names the frames of a memory trace (TENSORKIT_CUDA_MEMORY_TRACE=<MiB>: `ddpo train` and `ddpo sample`
# print what was live at the last peak of GPU memory, by the call stack that allocated it). On Linux
# each frame is printed as `binary(+0xOFFSET) [address]`; this replaces it with the demangled Swift
# function (addr2line from binutils, `swift demangle`), and with --short keeps the first N frames of
# each stack that are not allocation helpers.
#
#   TENSORKIT_CUDA_MEMORY_TRACE=1 ddpo train ... 2> trace.txt
#   scripts/symbolize-trace.sh [--short N] < trace.txt
set -euo pipefail
SHORT=0
if [ "${1:-}" = "--short" ]; then SHORT=${2:?--short needs a frame count}; fi
command -v addr2line >/dev/null || { echo "symbolize-trace: addr2line not found (apt-get install binutils)" >&2; exit 2; }
command -v swift >/dev/null || { echo "symbolize-trace: swift not found (for swift demangle)" >&2; exit 2; }
python3 -c '
import re, signal, subprocess, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
short = int(sys.argv[1])
lines = sys.stdin.read().splitlines()
frame = re.compile(r"^\s{6}(\S+?)\((\+0x[0-9a-fA-F]+|[^)]*)\)")
site = re.compile(r"^\s+([0-9.]+) MiB in (\d+) blocks?, allocated at:$")
wanted = {}
for line in lines:
    m = frame.match(line)
    if m and m.group(2).startswith("+0x"):
        wanted.setdefault(m.group(1), set()).add(m.group(2)[1:])
names = {}
for binary, offsets in wanted.items():
    offsets = sorted(offsets)
    out = subprocess.run(["addr2line", "-f", "-e", binary] + offsets, capture_output=True, text=True).stdout.splitlines()
    raw = [out[2 * i] if 2 * i < len(out) else "??" for i in range(len(offsets))]
    demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(raw),
                               capture_output=True, text=True).stdout.splitlines()
    for offset, name in zip(offsets, demangled):
        names[(binary, "+" + offset)] = name
helpers = ("CUDABackend.deviceStorage", "CUDABackend.uninitialized", "CUDABackend.transfer", "Tensor.copied",
           "Tensor.moveStorage", "closure #", "partial apply", "reabstraction thunk", "thunk for", "specialized ")
# Sites: [MiB, blocks, frames]; other lines pass through in place.
out, sites = [], []
for line in lines:
    m = site.match(line)
    if m:
        sites.append([float(m.group(1)), int(m.group(2)), []])
        out.append(sites[-1])
        continue
    f = frame.match(line) if line.startswith(" " * 6) else None
    if f is not None or (sites and line.startswith(" " * 6)):
        name = names.get((f.group(1), f.group(2)), line.strip()) if f else line.strip()
        sites[-1][2].append(name)
        continue
    out.append(line)
if short:
    for s in sites:
        s[2] = [n for n in s[2] if not n.startswith(helpers) and "(" in n and not n.startswith("/")][:short]
    merged = {}
    for s in sites:
        key = tuple(s[2])
        if key in merged:
            merged[key][0] += s[0]; merged[key][1] += s[1]; s[1] = 0
        else:
            merged[key] = s
for item in out:
    if isinstance(item, str):
        print(item)
for s in sorted((s for s in sites if s[1]), key=lambda s: -s[0]):
    plural = "" if s[1] == 1 else "s"
    print(f"  {s[0]:.1f} MiB in {s[1]} block{plural}, allocated at:")
    for n in s[2]:
        print("      " + n)
' "$SHORT"
