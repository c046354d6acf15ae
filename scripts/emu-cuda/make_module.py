#!/usr/bin/env python3
"""Builds one emulated kernel module for scripts/emu-cuda/emu_cuda.cpp's NVRTC stand-in.

usage: make_module.py SOURCE.cu OUT.so
       make_module.py --host-source SOURCE.cu OUT   (the substituted source only)

SOURCE.cu is the CUDA C text TensorKit hands NVRTC (a kernel family for one dtype). Its PTX `asm`
statements are replaced by the host emulations of scripts/emulate/cuda_host.h, dynamic shared memory becomes a buffer the
launcher sizes, and each `extern "C" __global__` kernel gets a binder, tk_emu_bind_<name>(params),
that copies its parameters out of the driver's `void**` with the kernel's own C types, and its
largest block (tk_emu_max_threads_<name>, from __launch_bounds__). The result is
built with g++ in fiber mode (scripts/emu-cuda/emu_fibers.h) into OUT.so, written through a
temporary file and a rename.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATE = os.path.join(HERE, "..", "emulate")

# (pattern, replacement), applied where they match. CUDAKernelEmulationTests uses them too (--host-source).
SUBSTITUTIONS = [
    (r'asm\("cvt\.f32\.f16 %0, %1;" : "=f"\(f\) : "h"\(h\)\);', "f = tk_host_half_to_float(h);"),
    (r'asm\("cvt\.rn\.f16\.f32 %0, %1;" : "=h"\(h\) : "f"\(f\)\);', "h = tk_host_float_to_half(f);"),
    (r'#if TK_DTYPE == 2\n\s*asm volatile\("mma\.sync.*?\);\n', "tk_host_mma(c, a, b0, b1);\n"),
    (r'#if TK_DTYPE == 2\n\s*asm\("cvt\.rn\.f16x2\.f32.*?\);\n#else\n\s*asm\("cvt\.rn\.bf16x2\.f32.*?\);\n',
     "#if TK_DTYPE == 2\nr = (u32)tk_float_to_half(lo) | ((u32)tk_float_to_half(hi) << 16);\n#else\n"
     "r = (u32)tk_float_to_bf16(lo) | ((u32)tk_float_to_bf16(hi) << 16);\n"),
    (r'asm volatile\("ldmatrix\.sync\.aligned\.m8n8\.x4\.shared\.b16.*?\);\n', "tk_host_ldmatrix(r, row, false);\n"),
    (r'asm volatile\("ldmatrix\.sync\.aligned\.m8n8\.x4\.trans\.shared\.b16.*?\);\n', "tk_host_ldmatrix(r, row, true);\n"),
    (r'asm volatile\("cp\.async\.cg\.shared\.global \[%0\], \[%1\], 16, %2;.*?\);\n', "tk_host_copy(dst, src, n, 16);\n"),
    (r'asm volatile\("cp\.async\.ca\.shared\.global \[%0\], \[%1\], 4, %2;.*?\);\n', "tk_host_copy(dst, src, n, 4);\n"),
    (r'asm volatile\("cp\.async\.commit_group;.*?\);', "tk_host_commit();"),
    (r'asm volatile\("cp\.async\.wait_group %0;.*?\);', "tk_host_wait(N);"),
    (r'extern __shared__ __align__\(16\) unsigned char (\w+)\[\];', r"unsigned char* \1 = tk_host_dynamic_shared;"),
]

KERNEL = re.compile(r'extern "C" __global__ void\s+(?:__launch_bounds__\((\d+)[^)]*\)\s+)?(\w+)\s*\(')


def parameters(text, start):
    """The parameter list that opens at text[start] == '(' : [(type, name)]."""
    depth, i = 0, start
    while True:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
        i += 1
    params = []
    for item in text[start + 1:i].split(","):
        item = " ".join(item.replace("__restrict__", " ").split())
        if not item or item == "void":
            continue
        m = re.match(r"(.*?)(\w+)$", item)
        params.append((m.group(1).strip(), m.group(2)))
    return params


def host_source(text):
    """The kernel source with every PTX `asm` statement replaced by its host emulation; exits naming
    any statement left over (the kernels' asm changed and the emulation did not follow)."""
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text, flags=re.S)
    leftover = re.findall(r"asm(?: volatile)?\(\"([^\"]*)", text)
    if leftover:
        sys.exit(f"make_module: no host emulation for asm {leftover[:3]}")
    return text


def main():
    if sys.argv[1] == "--host-source":
        # Only the substituted text: CUDAKernelEmulationTests includes it in its check drivers.
        text = host_source(open(sys.argv[2]).read())
        with open(sys.argv[3], "w") as f:
            f.write(text)
        return
    source_path, out_path = sys.argv[1], sys.argv[2]
    text = host_source(open(source_path).read())
    binders = []
    for m in KERNEL.finditer(text):
        bound, name = m.group(1), m.group(2)
        params = parameters(text, m.end() - 1)
        # The most threads a block may have: __launch_bounds__'s, else the hardware's 1024.
        lines = [f'extern "C" __attribute__((visibility("default"))) const unsigned tk_emu_max_threads_{name} = {bound or 1024};',
                 f'extern "C" __attribute__((visibility("default"))) void* tk_emu_bind_{name}(void** params) {{']
        for i, (ctype, pname) in enumerate(params):
            lines.append(f"    {ctype} p{i} = *({ctype}*)params[{i}];")
        args = ", ".join(f"p{i}" for i in range(len(params)))
        captures = ", ".join(f"p{i}" for i in range(len(params)))
        lines.append(f"    return new std::function<void()>([{captures}] {{ {name}({args}); }});")
        lines.append("}")
        binders.append("\n".join(lines))
    if not binders:
        sys.exit("make_module: no extern \"C\" __global__ kernels in the source")
    unit = "\n".join([
        "#define TK_HOST_FIBERS 1",
        f'#include "{os.path.join(EMULATE, "cuda_host.h")}"',
        f'#include "{os.path.join(HERE, "emu_fibers.h")}"',
        "#line 1 \"kernels.cu\"",
        text,
        "float tk_host_element(uint16_t bits) {",
        "#if TK_DTYPE == 2",
        "    return tk_host_half_to_float(bits);",
        "#else",
        "    return __uint_as_float((uint32_t)bits << 16);",
        "#endif",
        "}",
        *binders,
        "",
    ])
    cpp = out_path + ".cpp"
    with open(cpp, "w") as f:
        f.write(unit)
    tmp = out_path + ".tmp"
    command = ["g++", "-std=c++20", "-O2", "-g0", "-fPIC", "-shared", "-fvisibility=hidden", "-w",
               "-fno-strict-aliasing", "-o", tmp, cpp]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-6000:])
        sys.exit(f"make_module: g++ failed for {source_path}")
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main()
