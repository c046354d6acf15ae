// The block scheduler of an emulated kernel module (scripts/emu-cuda/make_module.py includes it after
// cuda_host.h in fiber mode): a launch runs its blocks one after another; a block's threads are
// fibers of the calling thread, each on its own stack, switched only where a thread waits at a
// block or warp barrier (tk_fiber_yield). The switch saves the callee-saved registers and the
// floating-point control words, nothing else (x86-64 System V).
#pragma once
#include <sys/mman.h>

extern "C" void tk_emu_swap(void** save, void* next);
asm(R"(
    .text
    .globl tk_emu_swap
    .hidden tk_emu_swap
    .type tk_emu_swap,@function
tk_emu_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tk_emu_swap, .-tk_emu_swap
)");

namespace tk_emu {
struct fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    bool done = false;
    tk_host_copies copies;
};
static const size_t stack_bytes = 512 << 10;
static std::vector<fiber> fibers;
static void* scheduler_sp;
static int current = -1;
static const std::function<void()>* body;
static unsigned long long progress;  // barrier releases and finished threads, for deadlock detection

[[noreturn]] static void trampoline() {
    (*body)();
    fibers[current].done = true;
    ++progress;
    void* dead;
    tk_emu_swap(&dead, scheduler_sp);
    __builtin_unreachable();
}

static void prepare(fiber& f) {
    if (!f.stack) {
        f.stack = (char*)mmap(nullptr, stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (f.stack == MAP_FAILED) { std::fprintf(stderr, "emu-cuda: no memory for a fiber stack\n"); std::abort(); }
    }
    // The first switch "returns" into trampoline with the stack aligned as after a call.
    uintptr_t top = ((uintptr_t)(f.stack + stack_bytes)) & ~(uintptr_t)15;
    uint64_t* s = (uint64_t*)top;
    s[-1] = 0;                          // trampoline's return address: never used
    s[-2] = (uint64_t)(void*)&trampoline;
    for (int r = 3; r <= 8; ++r) s[-r] = 0;   // rbp rbx r12 r13 r14 r15
    uint32_t* control = (uint32_t*)&s[-9];
    control[0] = 0x1F80;                // MXCSR: exceptions masked, round to nearest
    control[1] = 0x037F;                // x87 control word
    f.sp = &s[-9];
    f.done = false;
    f.copies.open.clear();
    f.copies.groups.clear();
}
}  // namespace tk_emu

void tk_fiber_yield() { tk_emu_swap(&tk_emu::fibers[tk_emu::current].sp, tk_emu::scheduler_sp); }
tk_host_copies& tk_host_thread_copies() { return tk_emu::fibers[tk_emu::current].copies; }

extern "C" __attribute__((visibility("default"))) void tk_emu_run(void* bound, unsigned grid, unsigned threads, unsigned shared) {
    std::function<void()>* kernel = (std::function<void()>*)bound;
    using namespace tk_emu;
    if (fibers.size() < threads) fibers.resize(threads);
    tk_host_barrier block((int)threads);
    std::vector<tk_host_barrier*> warps;
    for (unsigned w = 0; w * 32 < threads; ++w) {
        warps.push_back(new tk_host_barrier((int)std::min(32u, threads - 32 * w)));
        tk_host.warp[w] = warps.back();
    }
    tk_host.block = &block;
    tk_host.threads = (int)threads;
    std::vector<unsigned char> dynamic(shared + 16);
    tk_host_dynamic_shared = (unsigned char*)(((uintptr_t)dynamic.data() + 15) & ~(uintptr_t)15);
    blockDim.x = threads; blockDim.y = blockDim.z = 1;
    gridDim.x = grid; gridDim.y = gridDim.z = 1;
    body = kernel;
    // EMU_CUDA_ORDER: how a block's threads take turns between barriers (a turn runs a thread on to
    // its next block or warp barrier). "forward" (default): blocks in order, and in each, rounds of
    // turns, thread 0 first; "reverse": the same, last thread first. "shuffle": the blocks in a
    // pseudo-random order (EMU_CUDA_SEED seeds it), and every round takes the block's warps in a new
    // order and gives each warp 1 to 64 turns in a row, its lanes reordered every turn, so warps run
    // ahead of each other as far as the barriers allow, as on a GPU. A kernel whose threads share
    // memory without a barrier between a write and another thread's read or write then computes
    // differently, and so does one whose blocks depend on each other's order.
    static const int order_mode = [] {
        const char* o = std::getenv("EMU_CUDA_ORDER");
        if (!o || !*o || !std::strcmp(o, "forward")) return 0;
        if (!std::strcmp(o, "reverse")) return 1;
        if (!std::strcmp(o, "shuffle")) return 2;
        std::fprintf(stderr, "emu-cuda: EMU_CUDA_ORDER must be forward, reverse or shuffle, not '%s'\n", o);
        std::abort();
    }();
    static unsigned long long rng = [] {
        const char* s = std::getenv("EMU_CUDA_SEED");
        return 0x9E3779B97F4A7C15ull ^ (s ? std::strtoull(s, nullptr, 10) : 0ull);
    }();
    auto below = [](unsigned n) {   // xorshift64*
        rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
        return (unsigned)((rng * 0x2545F4914F6CDD1Dull >> 32) % n);
    };
    auto shuffle = [&](std::vector<unsigned>& v) {
        for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below((unsigned)i)]);
    };
    const unsigned warp_count = (unsigned)warps.size();
    std::vector<unsigned> warp_order(warp_count), lanes;
    for (unsigned w = 0; w < warp_count; ++w) warp_order[w] = w;
    unsigned remaining = 0;
    auto turn = [&](unsigned i) {
        if (fibers[i].done) return;
        current = (int)i;
        threadIdx.x = i; threadIdx.y = threadIdx.z = 0;
        tk_emu_swap(&scheduler_sp, fibers[i].sp);
        if (fibers[i].done) --remaining;
    };
    // Shuffled, the blocks run in a pseudo-random order too (a GPU runs them in any order, or at once).
    std::vector<unsigned> block_order;
    if (order_mode == 2) {
        block_order.resize(grid);
        for (unsigned b = 0; b < grid; ++b) block_order[b] = b;
        shuffle(block_order);
    }
    for (unsigned n = 0; n < grid; ++n) {
        const unsigned b = order_mode == 2 ? block_order[n] : n;
        blockIdx.x = b; blockIdx.y = blockIdx.z = 0;
        for (unsigned i = 0; i < threads; ++i) prepare(fibers[i]);
        remaining = threads;
        while (remaining > 0) {
            const unsigned long long before = progress;
            unsigned generations = block.generation;
            for (auto* w : warps) generations += w->generation;
            if (order_mode == 0) {
                for (unsigned i = 0; i < threads; ++i) turn(i);
            } else if (order_mode == 1) {
                for (unsigned i = threads; i-- > 0;) turn(i);
            } else {
                shuffle(warp_order);
                for (unsigned w : warp_order) {
                    const unsigned first = 32 * w, count = std::min(32u, threads - first);
                    lanes.resize(count);
                    for (unsigned l = 0; l < count; ++l) lanes[l] = first + l;
                    for (unsigned t = 1u << below(7); t > 0; --t) {
                        const unsigned long long was = progress;
                        const unsigned was_block = block.generation, was_warp = warps[w]->generation;
                        shuffle(lanes);
                        for (unsigned i : lanes) turn(i);
                        // Stop early once the warp waits at the block barrier (or has finished).
                        if (progress == was && block.generation == was_block && warps[w]->generation == was_warp) break;
                    }
                }
            }
            unsigned after = block.generation;
            for (auto* w : warps) after += w->generation;
            if (remaining > 0 && progress == before && after == generations) {
                std::fprintf(stderr, "emu-cuda: block %u of %u: %u of %u threads wait at a barrier the others never reach\n",
                             b, grid, remaining, threads);
                std::abort();
            }
        }
    }
    current = -1;
    for (auto* w : warps) delete w;
    tk_host.block = nullptr;
    delete kernel;
}
