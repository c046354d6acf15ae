// tensorkit-bench: times TensorKit's CPU kernels at Stable-Diffusion-like shapes, and TensorKit's
// matmul against raw cblas_sgemm on the same buffers. scripts/bench_torch.py times the same case
// names with PyTorch; scripts/bench.sh joins the two.
//
//   swift run -c release tensorkit-bench [--list] [--info] [--quick] [PREFIX ...]
//
// --info prints the OpenBLAS build, the kernel core it chose and thread counts, then exits.
// Cases whose name starts with one of the PREFIXes run (all when none is given); a PREFIX that is a
// whole case name selects only that case. Each case prints one tab-separated line to stdout:
// name, median ms, GFLOP/s at the median (or "-"), repetitions, minimum ms. Progress goes to stderr.
import COpenBLAS
import Foundation
import TensorKit

struct BenchCase {
    let name: String
    /// Floating-point operations of one call, for GFLOP/s (nil where it is not meaningful).
    let flops: Double?
    /// Builds the inputs (outside the timing) and returns the body to time.
    let setup: () -> () -> Void
    /// A reference timed in the same process, repetitions interleaved with the case's, so that
    /// load on a shared machine affects both alike; printed as its own line.
    var baseline: (name: String, setup: () -> () -> Void)? = nil
}

/// Warm-up, then repetitions until about `budget` seconds or `maxReps`, at least `minReps`.
/// Several bodies are timed round-robin. Returns each body's median and minimum milliseconds and
/// the repetition count.
func measure(_ bodies: [() -> Void], budget: Double, minReps: Int = 3,
             maxReps: Int = 25) -> (median: [Double], min: [Double], reps: Int) {
    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }
    var first = 0.0
    for body in bodies {
        let w0 = now()
        body()  // warm-up: first-touch page faults, BLAS buffers, thread start
        let t = now() - w0
        if t < 200 { body() }  // a second warm-up unless one call is already long
        first = max(first, t)
    }
    let reps = max(minReps, min(maxReps, Int(budget * 1000 / max(first, 1e-3))))
    var times = [[Double]](repeating: [], count: bodies.count)
    for _ in 0..<reps {
        for (i, body) in bodies.enumerated() {
            let t0 = now()
            body()
            times[i].append(now() - t0)
        }
    }
    let medians = times.map { samples -> Double in
        let sorted = samples.sorted(), mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
    return (medians, times.map { $0.min()! }, reps)
}

func randn(_ shape: [Int], _ seed: UInt64) -> Tensor { Tensor.randn(shape, seed: seed, dtype: .float32) }

/// A leaf that records gradients.
func param(_ shape: [Int], _ seed: UInt64, scale: Double = 1) -> Tensor {
    let t = scale == 1 ? randn(shape, seed) : (randn(shape, seed) * scale).detach()
    return t.requiringGrad()
}

/// Forward, then backward with a fixed upstream gradient; clears the leaves' grads so repetitions
/// do not add accumulation work.
func forwardBackward(_ leaves: [Tensor], _ upstream: Tensor, _ f: @escaping () -> Tensor) -> () -> Void {
    {
        let y = f()
        y.backward(upstream)
        for leaf in leaves { leaf.grad = nil }
    }
}

func conv2dFlops(_ n: Int, _ cin: Int, _ cout: Int, _ h: Int, _ w: Int, _ k: Int) -> Double {
    2 * Double(n * cout * h * w) * Double(cin * k * k)  // stride 1, "same" padding
}

var cases: [BenchCase] = []

// MARK: matmul vs raw cblas_sgemm (square float32, C = A·B)

// "matmul_N" also prints "sgemm_raw_N": cblas_sgemm on preallocated buffers, interleaved with it.
// OpenBLAS runs on one thread here unless OPENBLAS_NUM_THREADS is set (TensorKit splits products
// across its own workers instead), so from 512 up the ratio includes that split's parallelism.
for n in [256, 512, 1024, 2048] {
    let flops = 2 * Double(n) * Double(n) * Double(n)
    cases.append(BenchCase(name: "matmul_\(n)", flops: flops, setup: {
        let a = randn([n, n], 1), b = randn([n, n], 2)
        return { _ = a.matmul(b) }
    }, baseline: (name: "sgemm_raw_\(n)", setup: {
        let a = randn([n, n], 1), b = randn([n, n], 2), c = Tensor(zeros: [n, n])
        let ap = a.pointer(as: Float.self), bp = b.pointer(as: Float.self), cp = c.pointer(as: Float.self)
        return {
            // The closure must own the tensors: the raw pointers alone do not keep storage alive.
            withExtendedLifetime((a, b, c)) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(n), blasint(n), blasint(n),
                            1, ap, blasint(n), bp, blasint(n), 0, cp, blasint(n))
            }
        }
    })))
}

// A transformer projection as SD runs it: [2, 4096, 320] · [1280, 320]ᵀ + b.
do {
    let flops = 2 * 2 * 4096 * 320 * 1280.0
    cases.append(BenchCase(name: "linear_2x4096x320to1280_fwd", flops: flops) {
        let x = randn([2, 4096, 320], 3), w = randn([1280, 320], 4), b = randn([1280], 5)
        return { _ = linear(x, weight: w, bias: b) }
    })
    cases.append(BenchCase(name: "linear_2x4096x320to1280_fwdbwd", flops: 3 * flops) {
        let x = param([2, 4096, 320], 3), w = param([1280, 320], 4, scale: 0.05), b = param([1280], 5)
        return forwardBackward([x, w, b], randn([2, 4096, 1280], 6)) { linear(x, weight: w, bias: b) }
    })
}

// MARK: conv2d 3×3, padding 1

for (n, c, h, label) in [(2, 320, 64, "2x320x64x64"), (2, 640, 32, "2x640x32x32"), (1, 128, 256, "1x128x256x256"),
                         (2, 1280, 16, "2x1280x16x16"), (2, 1280, 8, "2x1280x8x8"), (2, 256, 8, "2x256x8x8")] {
    let flops = conv2dFlops(n, c, c, h, h, 3)
    cases.append(BenchCase(name: "conv2d3x3_\(label)_fwd", flops: flops) {
        let x = randn([n, c, h, h], 7), w = (randn([c, c, 3, 3], 8) * 0.02).detach(), b = randn([c], 9)
        return { _ = conv2d(x, weight: w, bias: b, padding: (1, 1)) }
    })
    cases.append(BenchCase(name: "conv2d3x3_\(label)_fwdbwd", flops: 3 * flops) {
        let x = param([n, c, h, h], 7), w = param([c, c, 3, 3], 8, scale: 0.02), b = param([c], 9)
        return forwardBackward([x, w, b], randn([n, c, h, h], 10)) {
            conv2d(x, weight: w, bias: b, padding: (1, 1))
        }
    })
}

// MARK: normalisation

cases.append(BenchCase(name: "group_norm_2x320x64x64_g32_fwd", flops: nil) {
    let x = randn([2, 320, 64, 64], 11), w = randn([320], 12), b = randn([320], 13)
    return { _ = groupNorm(x, groups: 32, weight: w, bias: b, eps: 1e-6) }
})
cases.append(BenchCase(name: "group_norm_2x320x64x64_g32_fwdbwd", flops: nil) {
    let x = param([2, 320, 64, 64], 11), w = param([320], 12), b = param([320], 13)
    return forwardBackward([x, w, b], randn([2, 320, 64, 64], 14)) {
        groupNorm(x, groups: 32, weight: w, bias: b, eps: 1e-6)
    }
})
cases.append(BenchCase(name: "layer_norm_2x4096x320_fwd", flops: nil) {
    let x = randn([2, 4096, 320], 15), w = randn([320], 16), b = randn([320], 17)
    return { _ = layerNorm(x, normalizedShape: [320], weight: w, bias: b) }
})
cases.append(BenchCase(name: "layer_norm_2x4096x320_fwdbwd", flops: nil) {
    let x = param([2, 4096, 320], 15), w = param([320], 16), b = param([320], 17)
    return forwardBackward([x, w, b], randn([2, 4096, 320], 18)) {
        layerNorm(x, normalizedShape: [320], weight: w, bias: b)
    }
})

// MARK: attention, B=2 H=8 D=40 (SD 1.x at 64×64 latents)

for (nk, label) in [(4096, "self_2x8x4096x40"), (77, "cross_2x8x4096x77x40")] {
    let flops = 4 * 2 * 8 * 4096 * Double(nk) * 40  // QKᵀ and PV
    cases.append(BenchCase(name: "attention_\(label)_fwd", flops: flops) {
        let q = randn([2, 8, 4096, 40], 19), k = randn([2, 8, nk, 40], 20), v = randn([2, 8, nk, 40], 21)
        return { _ = scaledDotProductAttention(q, k, v) }
    })
    cases.append(BenchCase(name: "attention_\(label)_fwdbwd", flops: 2.5 * flops) {
        let q = param([2, 8, 4096, 40], 19), k = param([2, 8, nk, 40], 20), v = param([2, 8, nk, 40], 21)
        return forwardBackward([q, k, v], randn([2, 8, 4096, 40], 22)) { scaledDotProductAttention(q, k, v) }
    })
}

// MARK: softmax over attention-score-like rows

cases.append(BenchCase(name: "softmax_2x8x1024x1024_fwd", flops: nil) {
    let x = randn([2, 8, 1024, 1024], 23)
    return { _ = x.softmax() }
})
cases.append(BenchCase(name: "softmax_2x8x1024x1024_fwdbwd", flops: nil) {
    let x = param([2, 8, 1024, 1024], 23)
    return forwardBackward([x], randn([2, 8, 1024, 1024], 24)) { x.softmax() }
})

// MARK: elementwise at [2, 320, 64, 64]

let ew = [2, 320, 64, 64]
cases.append(BenchCase(name: "add_bcast_2x320x64x64", flops: nil) {
    let x = randn(ew, 25), b = randn([1, 320, 1, 1], 26)
    return { _ = x + b }
})
cases.append(BenchCase(name: "mul_2x320x64x64", flops: nil) {
    let x = randn(ew, 25), y = randn(ew, 27)
    return { _ = x * y }
})
cases.append(BenchCase(name: "silu_2x320x64x64_fwd", flops: nil) {
    let x = randn(ew, 25)
    return { _ = x.silu() }
})
cases.append(BenchCase(name: "silu_2x320x64x64_fwdbwd", flops: nil) {
    let x = param(ew, 25)
    return forwardBackward([x], randn(ew, 28)) { x.silu() }
})
cases.append(BenchCase(name: "gelu_2x320x64x64_fwd", flops: nil) {
    let x = randn(ew, 25)
    return { _ = x.gelu() }
})
cases.append(BenchCase(name: "gelu_2x320x64x64_fwdbwd", flops: nil) {
    let x = param(ew, 25)
    return forwardBackward([x], randn(ew, 28)) { x.gelu() }
})
// A transformer block's feed-forward activation at SD's 32×32 level: bias, split, a · gelu(g).
let gg = [2, 1024, 2560]
cases.append(BenchCase(name: "geglu_2x1024x2560_fwd", flops: nil) {
    let h = randn(gg, 29), b = randn([2560], 30)
    return { _ = geglu(h, bias: b) }
})
cases.append(BenchCase(name: "geglu_2x1024x2560_fwdbwd", flops: nil) {
    let h = param(gg, 29), b = param([2560], 30)
    return forwardBackward([h, b], randn([2, 1024, 1280], 31)) { geglu(h, bias: b) }
})

// MARK: driver

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--list") {
    for c in cases { print(c.name) }
    exit(0)
}
if arguments.contains("--info") {
    let env = ProcessInfo.processInfo.environment
    print("openblas_config\t\(String(cString: openblas_get_config()))")
    print("openblas_core\t\(String(cString: openblas_get_corename()))")
    print("openblas_threads\t\(openblas_get_num_threads())")
    print("cpu_count\t\(ProcessInfo.processInfo.activeProcessorCount)")
    for key in ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "TENSORKIT_NUM_THREADS"] {
        print("\(key)\t\(env[key] ?? "(unset)")")
    }
    exit(0)
}
let quick = arguments.contains("--quick")
arguments.removeAll { $0.hasPrefix("--") }
// An argument naming a case exactly selects just that case; otherwise it is a prefix.
let names = Set(cases.map(\.name))
let selected = arguments.isEmpty ? cases : cases.filter { c in
    arguments.contains { names.contains($0) ? c.name == $0 : c.name.hasPrefix($0) }
}
if selected.isEmpty {
    FileHandle.standardError.write("no case matches \(arguments); see --list\n".data(using: .utf8)!)
    exit(2)
}
let budget = quick ? 0.3 : 1.5
for c in selected {
    FileHandle.standardError.write("running \(c.name)\n".data(using: .utf8)!)
    // The case's tensors live only inside this call, so they are freed before the next case.
    var names = [c.name], bodies = [c.setup()]
    if let baseline = c.baseline {
        names.append(baseline.name)
        bodies.append(baseline.setup())
    }
    let result = measure(bodies, budget: budget)
    for (i, name) in names.enumerated() {
        let ms = result.median[i]
        let gflops = c.flops.map { String(format: "%.1f", $0 / (ms * 1e6)) } ?? "-"
        print("\(name)\t\(String(format: "%.3f", ms))\t\(gflops)\t\(result.reps)\t\(String(format: "%.3f", result.min[i]))")
    }
    fflush(stdout)
}
