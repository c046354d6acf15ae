// Runs TensorKit's CUDA normalisation kernels (group norm with and without the fused SiLU and
// affine parameters, forward, input gradient and parameter gradients; layer norm forward, backward
// and the two-pass parameter gradients over several row chunks) under cuda_host.h in float32 and
// compares them with the formulas evaluated in double here. Built and run by
// CUDAKernelEmulationTests (the `norm` family's source is included as norm_kernels.inc).
// Tolerance: max |x - ref| / max |ref| ≤ 1e-4 per tensor.
#include "cuda_host.h"
#include "norm_kernels.inc"
#include <cstdio>
#include <random>
#include <string>

float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }

static int failures = 0;
static void report(const std::string& name, const std::vector<float>& got, const std::vector<double>& want) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        worst = std::max(worst, std::fabs((double)got[i] - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
    }
    const double err = worst / std::max(scale, 1e-30);
    const bool ok = err <= 1e-4 && !std::isnan(err);
    if (!ok) ++failures;
    std::printf("%-48s %.2e %s\n", name.c_str(), err, ok ? "pass" : "FAIL");
}

static std::vector<float> randomValues(size_t n, unsigned seed, float mean = 0.f, float spread = 1.f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(mean, spread);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    return v;
}

static double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

/* `splits` chunks per group (the last ones may be short or empty); x ~ N(offset, spread). `whole`:
   chunks rounded up to whole multiples of 8 elements, as CUDABackend.groupNormSplit cuts them (the
   kernels' vector path when the channel planes are whole vectors too); else ceil(size / splits). */
static void checkGroupNorm(long n, long channels, long groups, long spatial, bool affine, bool silu, int small,
                           int splits = 1, float offset = 0.3f, float spread = 1.7f, bool whole = false) {
    const long per = channels / groups, size = per * spatial, blocks = n * groups, total = n * channels * spatial;
    const long chunk = whole && splits > 1 ? ((size + splits - 1) / splits + 7) / 8 * 8 : (size + splits - 1) / splits;
    const std::string name = "group norm N" + std::to_string(n) + " C" + std::to_string(channels) + " G" + std::to_string(groups)
        + " S" + std::to_string(spatial) + (affine ? " affine" : "") + (silu ? " silu" : "") + (small ? " 32-bit" : "")
        + " " + std::to_string(splits) + "x" + std::to_string(chunk) + (offset != 0.3f ? " offset" : "");
    auto x = randomValues(total, 1, offset, spread), w = randomValues(channels, 2, 1.f, 0.5f), b = randomValues(channels, 3);
    auto go = randomValues(total, 4);
    const double eps = 1e-5;
    const float* wp = affine ? w.data() : nullptr;
    const float* bp = affine ? b.data() : nullptr;
    std::vector<float> y(total, NAN), mean(blocks, NAN), rstd(blocks, NAN), dx(total, NAN), dw(channels, NAN), db(channels, NAN);
    std::vector<double> part(2 * blocks * splits, NAN), gpart(2 * blocks * splits, NAN);
    tk_host_launch(3, 64, [&] { tk_group_norm_partial(part.data(), x.data(), blocks, size, chunk, splits); });
    tk_host_launch(2, 64, [&] {
        tk_group_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), wp, bp, part.data(), blocks, channels, groups,
                              spatial, chunk, splits, eps, silu, small);
    });
    tk_host_launch(3, 64, [&] {
        tk_group_norm_backward_partial(gpart.data(), go.data(), x.data(), wp, bp, mean.data(), rstd.data(), blocks, channels,
                                       groups, spatial, chunk, splits, silu, small);
    });
    tk_host_launch(2, 64, [&] {
        tk_group_norm_backward(dx.data(), go.data(), x.data(), wp, bp, mean.data(), rstd.data(), gpart.data(), blocks, channels,
                               groups, spatial, chunk, splits, silu, small);
    });
    tk_host_launch(2, 64, [&] {
        tk_group_norm_params(dw.data(), db.data(), go.data(), x.data(), wp, bp, mean.data(), rstd.data(), n, channels, groups, spatial, silu, small);
    });
    std::vector<double> Y(total), DX(total), DW(channels, 0), DB(channels, 0), M(blocks), R(blocks);
    for (long blk = 0; blk < blocks; ++blk) {
        const long base = blk * size, c0 = (blk % groups) * per;
        double s = 0, ss = 0;
        for (long i = 0; i < size; ++i) s += x[base + i];
        const double mu = s / size;
        for (long i = 0; i < size; ++i) ss += (x[base + i] - mu) * (x[base + i] - mu);
        const double r = 1 / std::sqrt(ss / size + eps);
        M[blk] = mu; R[blk] = r;
        std::vector<double> dyhat(size), xhat(size);
        double m1 = 0, m2 = 0;
        for (long i = 0; i < size; ++i) {
            const long c = c0 + i / spatial;
            const double wc = affine ? w[c] : 1, bc = affine ? b[c] : 0;
            xhat[i] = (x[base + i] - mu) * r;
            const double z = xhat[i] * wc + bc;
            Y[base + i] = silu ? z * sigmoid(z) : z;
            const double sg = sigmoid(z);
            const double dz = silu ? go[base + i] * sg * (1 + z * (1 - sg)) : go[base + i];
            DW[c] += dz * xhat[i];
            DB[c] += dz;
            dyhat[i] = dz * wc;
            m1 += dyhat[i]; m2 += dyhat[i] * xhat[i];
        }
        m1 /= size; m2 /= size;
        for (long i = 0; i < size; ++i) DX[base + i] = r * (dyhat[i] - m1 - xhat[i] * m2);
    }
    report(name + ": y", y, Y);
    report(name + ": mean", mean, M);
    report(name + ": rstd", rstd, R);
    report(name + ": dx", dx, DX);
    report(name + ": dw", dw, DW);
    report(name + ": db", db, DB);
}

/* warp: the warp-per-row kernels (tk_layer_norm_*_warp) for the forward and dx, else a block per row. */
static void checkLayerNorm(long rows, long count, long chunkRows, bool affine, bool warp = false) {
    const std::string name = std::string(warp ? "layer norm (warp per row) " : "layer norm ") + std::to_string(rows) + "x"
        + std::to_string(count) + " chunks of " + std::to_string(chunkRows) + (affine ? " affine" : "");
    const long chunks = (rows + chunkRows - 1) / chunkRows, tiles = (count + 31) / 32;
    auto x = randomValues(rows * count, 5, -0.2f, 1.3f), w = randomValues(count, 6, 1.f, 0.5f), b = randomValues(count, 7);
    auto go = randomValues(rows * count, 8);
    const float* wp = affine ? w.data() : nullptr;
    const float* bp = affine ? b.data() : nullptr;
    std::vector<float> y(rows * count, NAN), mean(rows, NAN), rstd(rows, NAN), dx(rows * count, NAN), dw(count, NAN), db(count, NAN);
    std::vector<double> partial(2 * chunks * count, NAN);
    if (warp) {  /* 3 blocks of 2 warps: six rows at a time, each warp striding over the rest */
        tk_host_launch(3, 64, [&] { tk_layer_norm_forward_warp(y.data(), mean.data(), rstd.data(), x.data(), wp, bp, rows, count, 1e-5); });
        tk_host_launch(3, 64, [&] { tk_layer_norm_backward_warp(dx.data(), go.data(), x.data(), wp, mean.data(), rstd.data(), rows, count); });
    } else {
        tk_host_launch(3, 64, [&] { tk_layer_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), wp, bp, rows, count, 1e-5); });
        tk_host_launch(3, 64, [&] { tk_layer_norm_backward(dx.data(), go.data(), x.data(), wp, mean.data(), rstd.data(), rows, count); });
    }
    tk_host_launch(2, 256, [&] {
        tk_layer_norm_params_partial(partial.data(), go.data(), x.data(), mean.data(), rstd.data(), rows, count, chunkRows, chunks);
    });
    (void)tiles;
    tk_host_launch(1, 64, [&] { tk_layer_norm_params_reduce(dw.data(), db.data(), partial.data(), count, chunks); });
    std::vector<double> Y(rows * count), DX(rows * count), DW(count, 0), DB(count, 0);
    for (long row = 0; row < rows; ++row) {
        const float* xr = &x[row * count];
        double s = 0, ss = 0;
        for (long j = 0; j < count; ++j) s += xr[j];
        const double mu = s / count;
        for (long j = 0; j < count; ++j) ss += (xr[j] - mu) * (xr[j] - mu);
        const double r = 1 / std::sqrt(ss / count + 1e-5);
        double m1 = 0, m2 = 0;
        std::vector<double> dyhat(count), xhat(count);
        for (long j = 0; j < count; ++j) {
            xhat[j] = (xr[j] - mu) * r;
            Y[row * count + j] = xhat[j] * (affine ? w[j] : 1) + (affine ? b[j] : 0);
            dyhat[j] = go[row * count + j] * (affine ? w[j] : 1);
            DW[j] += go[row * count + j] * xhat[j];
            DB[j] += go[row * count + j];
            m1 += dyhat[j]; m2 += dyhat[j] * xhat[j];
        }
        m1 /= count; m2 /= count;
        for (long j = 0; j < count; ++j) DX[row * count + j] = r * (dyhat[j] - m1 - xhat[j] * m2);
    }
    report(name + ": y", y, Y);
    report(name + ": dx", dx, DX);
    report(name + ": dw", dw, DW);
    report(name + ": db", db, DB);
}

int main() {
    checkGroupNorm(2, 8, 4, 10, true, true, 1);     // the fused GroupNorm + SiLU of every ResNet block
    checkGroupNorm(2, 8, 4, 10, true, true, 0);
    checkGroupNorm(3, 6, 2, 7, true, false, 1);
    checkGroupNorm(1, 6, 3, 33, false, true, 1);    // no affine parameters
    checkGroupNorm(2, 8, 4, 10, true, true, 1, 3);  // groups of 20 in chunks of 7, 7 and 6
    checkGroupNorm(1, 4, 2, 25, true, false, 0, 4); // groups of 50 in chunks of 13
    checkGroupNorm(1, 4, 1, 3, true, true, 1, 5);   // 12 in chunks of 3: the fifth is empty
    checkGroupNorm(2, 4, 2, 40, true, true, 1, 3, 100.f, 0.05f);  // |mean| ≫ std: the shifted sums stay exact
    checkGroupNorm(1, 2, 1, 150, true, true, 1, 70);  // more chunks than threads per block (64)
    checkGroupNorm(2, 8, 4, 16, true, true, 1);     // channel planes of whole vectors: the vector path
    checkGroupNorm(1, 6, 3, 12, false, false, 0, 2, 0.3f, 1.7f, true);  // 24 in chunks of 16 and 8, vectors
    checkLayerNorm(140, 72, 64, true);              // three row chunks, a partial last column tile
    checkLayerNorm(5, 40, 128, false);
    checkLayerNorm(140, 72, 64, true, true);        // a warp per row: rows wider than a warp, strided over
    checkLayerNorm(7, 20, 128, false, true);        // rows narrower than a warp (lanes left idle)
    checkLayerNorm(3, 320, 128, true, true);        // SD 1.5's first level width
    std::printf("norm kernels: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
