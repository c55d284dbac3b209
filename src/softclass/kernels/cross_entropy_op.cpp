// softclass's cross entropy as a C++ operator with a C++ autograd kernel: the eager road of
// softclass.functional.cross_entropy for the common call (CPU, no class weights, no smoothing,
// 'mean' or 'sum', one range of rows: see softclass/kernels/lean.py), where a Python
// autograd.Function and ctypes calls cost more than the loops themselves.
//
// The numbers are those of the ctypes road: the extension compiles cpu_native.c (the row loops,
// which include loss_rows.h and spatial_loops.h, the row math) as C with the same flags as
// _cpu_native (setup.py; compiled as C++ some float64 gradients differed in the last bit), and
// this file calls its functions, declared below.
//
// Ops (namespace softclass_cpp, registered with TORCH_LIBRARY):
//   cross_entropy(logits, target, ignore_index, mean) -> loss
//       CPU: loss only; Meta: shape; Autograd: the forward writes the gradient for
//       grad_output 1 in the same pass (fused below), the backward scales it in place.
//   cross_entropy_fused(logits, target, ignore_index, mean) -> (loss, gradient)
//   cross_entropy_grad_graph(logits, target, ignore_index, mean, grad_loss) -> gradient
//       the differentiable gradient (backward under create_graph); its kernel is Python's
//       (softclass/kernels/cross_entropy_op.py registers it): the unfused torch-op formula.
//   spatial_forward(logits, target, weight, ignore_index, reduction, label_smoothing,
//                   with_gradient) -> (loss, logsumexp, denominator, gradient)
//   spatial_backward(grad_output, logits, target, weight, logsumexp, denominator, ignore_index,
//                    label_smoothing) -> gradient
//       CPU only: the real implementations of softclass::spatial_cross_entropy and its backward
//       (softclass/kernels/spatial_cross_entropy_cpu.py), every option.
// Logits: (M, C) with class stride 1, or contiguous (N, C, d1, ...); target int64 (M,) or
// contiguous (N, d1, ...). A kept target outside [0, C) raises IndexError naming its flat index.
// (M, C) logits run on the calling thread; (N, C, d1, ...) ones, above 2^17 logits, on torch's
// intra-op threads (at::parallel_for: setup.py compiles this file with -fopenmp, linked as
// torch's own libgomp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

extern "C" {
#include "loss_rows.h"

// The functions of cpu_native.c called here, per element type.
#define DECLARE_LOOPS(SUFFIX, TYPE, REAL)                                                         \
    int64_t ce_forward_##SUFFIX(const TYPE *, int64_t, int64_t, int64_t, int64_t,                \
                                const int64_t *, int64_t, int64_t, const REAL *, double, REAL *, \
                                TYPE *, int64_t, double *, int64_t, TYPE *, double *, TYPE *,    \
                                int64_t, const double *);                                        \
    void ce_finish_##SUFFIX(const double *, int64_t, int64_t, TYPE *, double *);                 \
    void ce_kept_weight_sum_##SUFFIX(const int64_t *, int64_t, int64_t, int64_t, int64_t,        \
                                     const REAL *, double *);                                    \
    void ce_scale_##SUFFIX(TYPE *, int64_t, int64_t, int64_t, int64_t, const REAL *);
DECLARE_LOOPS(f32, float, float)
DECLARE_LOOPS(bf16, uint16_t, float)
DECLARE_LOOPS(f64, double, double)
}

extern "C" {
// The loops of spatial_loops.h (the spatial ops below), per element type.
#define DECLARE_SPATIAL_LOOPS(SUFFIX, TYPE, REAL)                                                 \
    int64_t ce_spatial_forward_##SUFFIX(const TYPE *, int64_t, int64_t, int64_t, int64_t,        \
                                        int64_t, const int64_t *, int64_t, const REAL *, double, \
                                        REAL *, TYPE *, double *, TYPE *, const double *);       \
    void ce_spatial_backward_##SUFFIX(const TYPE *, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                      const int64_t *, int64_t, const REAL *, double,            \
                                      const REAL *, const REAL *, int64_t, const double *,       \
                                      TYPE *);
DECLARE_SPATIAL_LOOPS(f32, float, float)
DECLARE_SPATIAL_LOOPS(bf16, uint16_t, float)
DECLARE_SPATIAL_LOOPS(f64, double, double)
}

namespace {

using at::Tensor;

template <typename T, typename R>
struct Loops {
    int64_t (*forward)(const T *, int64_t, int64_t, int64_t, int64_t, const int64_t *, int64_t,
                       int64_t, const R *, double, R *, T *, int64_t, double *, int64_t, T *,
                       double *, T *, int64_t, const double *);
    void (*finish)(const double *, int64_t, int64_t, T *, double *);
    void (*kept_weight_sum)(const int64_t *, int64_t, int64_t, int64_t, int64_t, const R *,
                            double *);
    void (*scale)(T *, int64_t, int64_t, int64_t, int64_t, const R *);
};

const Loops<float, float> kF32{ce_forward_f32, ce_finish_f32, ce_kept_weight_sum_f32,
                               ce_scale_f32};
const Loops<uint16_t, float> kBF16{ce_forward_bf16, ce_finish_bf16, ce_kept_weight_sum_bf16,
                                   ce_scale_bf16};
const Loops<double, double> kF64{ce_forward_f64, ce_finish_f64, ce_kept_weight_sum_f64,
                                 ce_scale_f64};

// The inputs the compiled loops take. Anything else is refused with NotImplementedError (in
// Python): the lean road (kernels/lean.py) then gives the call to the general path, which
// computes it or raises torch's own error.
void check_inputs(const Tensor &logits, const Tensor &target) {
    const auto dtype = logits.scalar_type();
    TORCH_CHECK_NOT_IMPLEMENTED(
        dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kDouble,
        "softclass_cpp::cross_entropy: logits must be float32, bfloat16 or float64, got ", dtype);
    TORCH_CHECK_NOT_IMPLEMENTED(target.scalar_type() == at::kLong,
                                "softclass_cpp::cross_entropy: target must be int64, got ",
                                target.scalar_type());
    TORCH_CHECK_NOT_IMPLEMENTED(logits.dim() >= 2 && target.dim() == logits.dim() - 1 &&
                                    logits.size(0) == target.size(0) && logits.numel() > 0,
                                "softclass_cpp::cross_entropy: logits (N, C, ...) and target "
                                "(N, ...) expected, got ",
                                logits.sizes(), " and ", target.sizes());
    if (logits.dim() == 2) {
        TORCH_CHECK_NOT_IMPLEMENTED(
            logits.stride(1) == 1 || logits.size(1) == 1,
            "softclass_cpp::cross_entropy: (M, C) logits need class stride 1, got ",
            logits.strides());
    } else {
        TORCH_CHECK_NOT_IMPLEMENTED(logits.sizes().slice(2) == target.sizes().slice(1) &&
                                        logits.is_contiguous() && target.is_contiguous(),
                                    "softclass_cpp::cross_entropy: contiguous (N, C, d1, ...) "
                                    "logits and (N, d1, ...) target expected, got ",
                                    logits.sizes(), " and ", target.sizes());
    }
}

// The loss of (M, C) logits (and, when `gradient` is defined, the gradient for grad_output 1
// written into it) by one call of the compiled loops on the calling thread.
template <typename T, typename R>
void run_forward(const Loops<T, R> &loops, const Tensor &logits, const Tensor &target,
                 int64_t ignore_index, bool mean, const Tensor &loss, const Tensor &gradient) {
    const auto *x = static_cast<const T *>(logits.data_ptr());
    const auto *y = target.const_data_ptr<int64_t>();
    const int64_t n_classes = logits.size(1);
    const int64_t n_positions = target.numel();
    T *grad = gradient.defined() ? static_cast<T *>(gradient.data_ptr()) : nullptr;
    T *loss_value = static_cast<T *>(loss.data_ptr());
    std::vector<R> logsumexp(static_cast<size_t>(n_positions));
    // state: [0] Σ w_y (the finish's denominator), [1..2] the sums, [3] the gradient's divisor
    double state[4] = {0.0, 0.0, 0.0, 0.0};
    const double *grad_denominator = nullptr;
    if (grad && mean) {
        loops.kept_weight_sum(y, target.stride(0), n_positions, ignore_index, n_classes, nullptr,
                              &state[3]);
        grad_denominator = &state[3];
    }
    const int64_t bad =
        loops.forward(x, logits.stride(0), n_classes, 0, n_positions, y, target.stride(0),
                      ignore_index, nullptr, 0.0, logsumexp.data(), nullptr, 0, &state[1], mean,
                      loss_value, &state[0], grad, n_classes, grad_denominator);
    TORCH_CHECK_INDEX(bad < 0, "softclass_cpp::cross_entropy: target out of bounds at flat index ",
                      bad);
}

void spatial_forward_into(const Tensor &logits, const Tensor &target, int64_t ignore_index,
                          bool mean, const Tensor &loss, const Tensor &gradient);

void forward_into(const Tensor &logits, const Tensor &target, int64_t ignore_index, bool mean,
                  const Tensor &loss, const Tensor &gradient) {
    if (logits.dim() > 2) {  // the spatial loops, on torch's threads (below)
        return spatial_forward_into(logits, target, ignore_index, mean, loss, gradient);
    }
    switch (logits.scalar_type()) {
        case at::kFloat:
            return run_forward(kF32, logits, target, ignore_index, mean, loss, gradient);
        case at::kBFloat16:
            return run_forward(kBF16, logits, target, ignore_index, mean, loss, gradient);
        default:
            return run_forward(kF64, logits, target, ignore_index, mean, loss, gradient);
    }
}

Tensor cross_entropy_cpu(const Tensor &logits, const Tensor &target, int64_t ignore_index,
                         bool mean) {
    check_inputs(logits, target);
    Tensor loss = at::empty({}, logits.options());
    forward_into(logits, target, ignore_index, mean, loss, Tensor());
    return loss;
}

std::tuple<Tensor, Tensor> cross_entropy_fused_cpu(const Tensor &logits, const Tensor &target,
                                                   int64_t ignore_index, bool mean) {
    check_inputs(logits, target);
    Tensor loss = at::empty({}, logits.options());
    Tensor gradient = at::empty(logits.sizes(), logits.options());
    forward_into(logits, target, ignore_index, mean, loss, gradient);
    return {loss, gradient};
}

// The shapes only (sizes may be symbolic: the value checks are the CPU kernel's).
void check_meta_inputs(const Tensor &logits, const Tensor &target) {
    TORCH_CHECK(logits.dim() >= 2 && target.dim() == logits.dim() - 1,
                "softclass_cpp::cross_entropy: logits (N, C, ...) and target (N, ...) expected, "
                "got ", logits.sym_sizes(), " and ", target.sym_sizes());
}

Tensor cross_entropy_meta(const Tensor &logits, const Tensor &target, int64_t, bool) {
    check_meta_inputs(logits, target);
    return at::empty({}, logits.options());
}

std::tuple<Tensor, Tensor> cross_entropy_fused_meta(const Tensor &logits, const Tensor &target,
                                                    int64_t, bool) {
    check_meta_inputs(logits, target);
    return {at::empty({}, logits.options()),
            at::empty_symint(logits.sym_sizes(), logits.options())};
}

// A dense CPU tensor that no mode or transform wraps: its memory may be written directly.
bool plain_cpu(const Tensor &tensor) {
    constexpr c10::DispatchKeySet kWrapped({c10::DispatchKey::Python,
                                            c10::DispatchKey::Functionalize,
                                            c10::DispatchKey::FuncTorchGradWrapper,
                                            c10::DispatchKey::FuncTorchBatched});
    return tensor.is_cpu() && tensor.layout() == at::kStrided &&
           !tensor.key_set().has_any(kWrapped);
}

// gradient *= grad_loss (0-d, the loss's dtype), in place when both are plain CPU tensors.
Tensor scaled(Tensor gradient, const Tensor &grad_loss) {
    if (!plain_cpu(gradient) || !plain_cpu(grad_loss) ||
        grad_loss.scalar_type() != gradient.scalar_type() || grad_loss.numel() != 1) {
        return gradient.mul(grad_loss);
    }
    const int64_t n_rows = gradient.size(0);
    const int64_t row = gradient.numel() / n_rows;
    switch (gradient.scalar_type()) {
        case at::kFloat: {
            const float factor = *grad_loss.const_data_ptr<float>();
            kF32.scale(gradient.mutable_data_ptr<float>(), row, row, 0, n_rows, &factor);
            break;
        }
        case at::kBFloat16: {
            const float factor =
                bf16_to_float(*static_cast<const uint16_t *>(grad_loss.const_data_ptr()));
            kBF16.scale(static_cast<uint16_t *>(gradient.data_ptr()), row, row, 0, n_rows,
                        &factor);
            break;
        }
        default: {
            const double factor = *grad_loss.const_data_ptr<double>();
            kF64.scale(gradient.mutable_data_ptr<double>(), row, row, 0, n_rows, &factor);
        }
    }
    return gradient;
}

std::tuple<Tensor, Tensor> call_fused(const Tensor &logits, const Tensor &target,
                                      int64_t ignore_index, bool mean) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("softclass_cpp::cross_entropy_fused", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor &, const Tensor &,
                                                           int64_t, bool)>();
    return op.call(logits, target, ignore_index, mean);
}

Tensor call_grad_graph(const Tensor &logits, const Tensor &target, int64_t ignore_index,
                       bool mean, const Tensor &grad_loss) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("softclass_cpp::cross_entropy_grad_graph", "")
                         .typed<Tensor(const Tensor &, const Tensor &, int64_t, bool,
                                       const Tensor &)>();
    return op.call(logits, target, ignore_index, mean, grad_loss);
}

// The forward's logits, refused if they were changed in place since (as the Python road's
// saved_logits in cross_entropy_cpu.py does, with its message). Kept as the input itself, not a
// SavedVariable: the first backward uses the gradient made in the forward, so changing the
// logits in place after the loss is allowed, as torch's own loss allows it.
Tensor saved_logits(torch::autograd::AutogradContext *ctx) {
    Tensor logits = ctx->saved_data["logits"].toTensor();
    const int64_t expected = ctx->saved_data["logits_version"].toInt();
    TORCH_CHECK(logits._version() == expected,
                "one of the variables needed for gradient computation has been modified by an "
                "inplace operation: the logits of softclass's cross entropy are at version ",
                logits._version(), "; expected version ", expected,
                " (the gradient made in the forward was used already; a second backward or "
                "create_graph needs the logits unchanged)");
    return logits;
}

// The autograd node: the forward makes the gradient (one pass with the loss), the backward
// scales it in place by grad_output. A second backward (retain_graph) makes it again from the
// saved logits; a differentiable one (create_graph) runs the unfused torch-op formula.
class CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
   public:
    static Tensor forward(torch::autograd::AutogradContext *ctx, const Tensor &logits,
                          const Tensor &target, int64_t ignore_index, bool mean) {
        auto [loss, gradient] = call_fused(logits, target, ignore_index, mean);
        ctx->saved_data["gradient"] = gradient;
        ctx->saved_data["logits"] = logits;
        ctx->saved_data["logits_version"] = static_cast<int64_t>(logits._version());
        ctx->saved_data["target"] = target;
        ctx->saved_data["ignore_index"] = ignore_index;
        ctx->saved_data["mean"] = mean;
        return loss;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
        const bool mean = ctx->saved_data["mean"].toBool();
        const Tensor target = ctx->saved_data["target"].toTensor();
        const Tensor &grad_loss = grads[0];
        Tensor gradient;
        if (at::GradMode::is_enabled()) {
            gradient = call_grad_graph(saved_logits(ctx), target, ignore_index, mean, grad_loss);
        } else {
            c10::IValue kept = std::move(ctx->saved_data["gradient"]);
            ctx->saved_data["gradient"] = Tensor();
            if (kept.isTensor() && kept.toTensor().defined()) {
                gradient = scaled(kept.toTensor(), grad_loss);
            } else {
                auto fused = call_fused(saved_logits(ctx), target, ignore_index, mean);
                gradient = scaled(std::get<1>(fused), grad_loss);
            }
        }
        return {gradient, Tensor(), Tensor(), Tensor()};
    }
};

Tensor cross_entropy_autograd(const Tensor &logits, const Tensor &target, int64_t ignore_index,
                              bool mean) {
    if (at::GradMode::is_enabled() && logits.requires_grad()) {
        return CrossEntropyFunction::apply(logits, target, ignore_index, mean);
    }
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("softclass_cpp::cross_entropy", "")
                         .typed<Tensor(const Tensor &, const Tensor &, int64_t, bool)>();
    return op.call(logits, target, ignore_index, mean);
}


// ---- The spatial operator's loops, split over torch's intra-op threads ----
// softclass::spatial_cross_entropy (spatial_cross_entropy_cpu.py) calls these two ops from its
// real implementations: the positions of (N, C, d1, ...) logits are cut into parts by their
// sizes alone (never by the thread count, so every thread count gives the same numbers), and
// torch's own intra-op threads (at::parallel_for) take the parts as they come. Inside a compiled
// graph these are the threads inductor's kernels run on. A pool of our own (helper threads that
// the calling thread does not wait for unless they began a part) was measured against it at
// (8, 21, 128, 128), 2 threads: forward + backward after a torch op each, +0.22-0.34 ms against
// +0.04-0.10 (it fights torch's threads for the cores while they spin after a kernel), though
// on a machine busy with other processes it is the steadier (an OpenMP region waits for every
// thread it wakes).

// Logits per part: smaller inputs are one part (one call, the calling thread), larger ones at
// most kSpatialMaxParts parts (several per thread, so a thread slowed by another process holds
// up little). Part bounds are multiples of kSpatialBlock positions.
constexpr int64_t kSpatialPartElements = int64_t{1} << 16;
constexpr int64_t kSpatialMaxParts = 64;
// SPATIAL_BLOCK of spatial_loops.h (parts of whole blocks: only for speed).
constexpr int64_t kSpatialBlock = 64;

int64_t spatial_parts(int64_t n_positions, int64_t n_classes) {
    const int64_t by_size = n_positions * n_classes / kSpatialPartElements;
    const int64_t by_blocks = n_positions / kSpatialBlock;
    return std::max<int64_t>(1, std::min({by_size, by_blocks, kSpatialMaxParts}));
}

int64_t part_bound(int64_t part, int64_t n_parts, int64_t n_positions) {
    if (part == n_parts) return n_positions;
    return n_positions * part / n_parts / kSpatialBlock * kSpatialBlock;
}

// run(part, begin, end) for every part: on the calling thread for one part or one thread, else
// on torch's intra-op threads, each taking the next part until none is left.
template <typename Run>
void run_parts(int64_t n_parts, int64_t n_positions, const Run &run) {
    const int64_t n_threads = std::min<int64_t>(at::get_num_threads(), n_parts);
    auto run_part = [&](int64_t part) {
        run(part, part_bound(part, n_parts, n_positions),
            part_bound(part + 1, n_parts, n_positions));
    };
    if (n_threads <= 1 || at::in_parallel_region()) {
        for (int64_t part = 0; part < n_parts; ++part) run_part(part);
        return;
    }
    std::atomic<int64_t> next{0};
    at::parallel_for(0, n_threads, 1, [&](int64_t, int64_t) {
        for (int64_t part = next++; part < n_parts; part = next++) run_part(part);
    });
}

template <typename T, typename R>
struct SpatialLoops {
    using Element = T;  // the logits' storage type
    using Real = R;     // the compute type (weights, L, grad_output)
    int64_t (*forward)(const T *, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t *,
                       int64_t, const R *, double, R *, T *, double *, T *, const double *);
    void (*backward)(const T *, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t *,
                     int64_t, const R *, double, const R *, const R *, int64_t, const double *,
                     T *);
    void (*finish)(const double *, int64_t, int64_t, T *, double *);
    void (*kept_weight_sum)(const int64_t *, int64_t, int64_t, int64_t, int64_t, const R *,
                            double *);
};

const SpatialLoops<float, float> kSpatialF32{ce_spatial_forward_f32, ce_spatial_backward_f32,
                                             ce_finish_f32, ce_kept_weight_sum_f32};
const SpatialLoops<uint16_t, float> kSpatialBF16{ce_spatial_forward_bf16,
                                                 ce_spatial_backward_bf16, ce_finish_bf16,
                                                 ce_kept_weight_sum_bf16};
const SpatialLoops<double, double> kSpatialF64{ce_spatial_forward_f64, ce_spatial_backward_f64,
                                               ce_finish_f64, ce_kept_weight_sum_f64};

// run(loops) with the spatial loops of the logits' dtype (float32, bfloat16 or float64: checked
// by the caller).
template <typename Run>
void with_spatial_loops(const Tensor &logits, const Run &run) {
    switch (logits.scalar_type()) {
        case at::kFloat: return run(kSpatialF32);
        case at::kBFloat16: return run(kSpatialBF16);
        default: return run(kSpatialF64);
    }
}

at::ScalarType compute_type(const Tensor &logits) {
    return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Contiguous (N, C, d1, ...) logits of a supported dtype, N·d1·... int64 targets, class weights
// (C,) in the compute dtype.
void check_spatial_inputs(const char *op, const Tensor &logits, const Tensor &target,
                          const std::optional<Tensor> &weight) {
    TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 ||
                    logits.scalar_type() == at::kDouble,
                op, ": logits must be float32, bfloat16 or float64, got ", logits.scalar_type());
    TORCH_CHECK(logits.dim() >= 3 && logits.is_contiguous() && logits.numel() > 0 &&
                    plain_cpu(logits),
                op, ": contiguous CPU logits (N, C, d1, ...) expected, got ", logits.sizes());
    TORCH_CHECK(target.scalar_type() == at::kLong && target.is_contiguous() && plain_cpu(target) &&
                    target.numel() * logits.size(1) == logits.numel(),
                op, ": a contiguous int64 target of N·d1·... elements expected, got ",
                target.scalar_type(), " ", target.sizes(), " for logits ", logits.sizes());
    if (weight.has_value()) {
        TORCH_CHECK(weight->scalar_type() == compute_type(logits) && weight->is_contiguous() &&
                        weight->numel() == logits.size(1) && plain_cpu(*weight),
                    op, ": class weights (C,) in ", compute_type(logits), " expected, got ",
                    weight->scalar_type(), " ", weight->sizes());
    }
}

template <typename T, typename R>
void spatial_forward_loops(const char *op, const SpatialLoops<T, R> &loops, const Tensor &logits,
                           const Tensor &target, const std::optional<Tensor> &weight,
                           int64_t ignore_index, double label_smoothing, bool per_position,
                           bool mean, const Tensor &loss, const Tensor &logsumexp,
                           const Tensor &state, const Tensor &gradient,
                           const Tensor &grad_denominator) {
    const auto *x = static_cast<const T *>(logits.const_data_ptr());
    const auto *y = target.const_data_ptr<int64_t>();
    const R *w = weight.has_value() ? static_cast<const R *>(weight->const_data_ptr()) : nullptr;
    const int64_t n_classes = logits.size(1);
    const int64_t n_positions = target.numel();
    const int64_t n_spatial = n_positions / logits.size(0);
    auto *lse = static_cast<R *>(logsumexp.data_ptr());
    T *row_loss = per_position ? static_cast<T *>(loss.data_ptr()) : nullptr;
    T *grad = gradient.defined() ? static_cast<T *>(gradient.data_ptr()) : nullptr;
    double *sums = state.data_ptr<double>();
    const double *divisor = nullptr;
    if (grad_denominator.defined()) {
        loops.kept_weight_sum(y, 1, n_positions, ignore_index, n_classes, w,
                              grad_denominator.data_ptr<double>());
        divisor = grad_denominator.const_data_ptr<double>();
    }
    const int64_t n_parts = (state.numel() - 1) / 2;
    std::vector<int64_t> bad(static_cast<size_t>(n_parts), -1);
    run_parts(n_parts, n_positions, [&](int64_t part, int64_t begin, int64_t end) {
        bad[part] = loops.forward(x, logits.stride(0), n_classes, n_spatial, begin, end, y,
                                  ignore_index, w, label_smoothing, lse, row_loss,
                                  sums + 1 + 2 * part, grad, divisor);
    });
    for (const int64_t position : bad) {  // parts in order: the first bad position
        TORCH_CHECK_INDEX(position < 0, op, ": target out of bounds at flat index ", position);
    }
    if (!per_position) loops.finish(sums + 1, n_parts, mean, static_cast<T *>(loss.data_ptr()), sums);
}

// What spatial_forward_loops leaves besides the loss and the gradient: L per position (compute
// dtype), the per-part sums (state[0]: the loss's denominator) and, when the gradient is written
// under 'mean', the gradient's denominator.
struct SpatialForward {
    Tensor logsumexp, state, grad_denominator;
};

// The spatial loops' forward into `loss` (and `gradient` when defined), with the work space
// they need allocated here.
SpatialForward run_spatial_forward(const char *op, const Tensor &logits, const Tensor &target,
                                   const std::optional<Tensor> &weight, int64_t ignore_index,
                                   double label_smoothing, bool per_position, bool mean,
                                   const Tensor &loss, const Tensor &gradient) {
    const auto f64 = logits.options().dtype(at::kDouble);
    SpatialForward done{
        at::empty({target.numel()}, logits.options().dtype(compute_type(logits))),
        at::empty({1 + 2 * spatial_parts(target.numel(), logits.size(1))}, f64),
        gradient.defined() && mean ? at::empty({1}, f64) : Tensor()};
    with_spatial_loops(logits, [&](const auto &loops) {
        spatial_forward_loops(op, loops, logits, target, weight, ignore_index, label_smoothing,
                              per_position, mean, loss, done.logsumexp, done.state, gradient,
                              done.grad_denominator);
    });
    return done;
}

// softclass::spatial_cross_entropy's forward (see _forward_impl in
// spatial_cross_entropy_cpu.py): (loss: 0-d, or (N, d1, ...) for 'none'; L (N·S,) in the compute
// dtype; the 'mean' denominator (1,) fp64 (0 for 'none'); the gradient for grad_output 1 when
// with_gradient, else (0,)).
std::tuple<Tensor, Tensor, Tensor, Tensor> spatial_forward_cpu(
    const Tensor &logits, const Tensor &target, const std::optional<Tensor> &weight,
    int64_t ignore_index, c10::string_view reduction, double label_smoothing,
    bool with_gradient) {
    check_spatial_inputs("softclass_cpp::spatial_forward", logits, target, weight);
    const bool per_position = reduction == "none", mean = reduction == "mean";
    TORCH_CHECK(per_position || mean || reduction == "sum",
                "softclass_cpp::spatial_forward: reduction 'none', 'mean' or 'sum' expected, got '",
                reduction, "'");
    std::vector<int64_t> item_shape{logits.size(0)};
    for (int64_t d = 2; d < logits.dim(); ++d) item_shape.push_back(logits.size(d));
    Tensor loss = per_position ? at::empty(item_shape, logits.options())
                               : at::empty({}, logits.options());
    Tensor gradient = with_gradient ? at::empty(logits.sizes(), logits.options()) : Tensor();
    const SpatialForward done =
        run_spatial_forward("softclass_cpp::spatial_forward", logits, target, weight, ignore_index,
                            label_smoothing, per_position, mean, loss, gradient);
    Tensor denominator = done.grad_denominator.defined() ? done.grad_denominator
                         : per_position ? at::zeros({1}, logits.options().dtype(at::kDouble))
                                        : done.state.narrow(0, 0, 1).clone();
    return {loss, done.logsumexp, denominator,
            with_gradient ? gradient : at::empty({0}, logits.options())};
}

// forward_into's (N, C, d1, ...) logits (checked by check_inputs): the 0-d loss ('mean' or
// 'sum', no class weights, no smoothing) and, when `gradient` is defined, the gradient for
// grad_output 1, by the parts of spatial_forward.
void spatial_forward_into(const Tensor &logits, const Tensor &target, int64_t ignore_index,
                          bool mean, const Tensor &loss, const Tensor &gradient) {
    run_spatial_forward("softclass_cpp::cross_entropy", logits, target, std::nullopt,
                        ignore_index, 0.0, false, mean, loss, gradient);
}

// softclass::spatial_cross_entropy_backward's loops: ∂output/∂logits (the logits' shape) for
// grad_output (0-d, or one per position; in the compute dtype), divided by denominator[0] when
// given ('mean').
Tensor spatial_backward_cpu(const Tensor &grad_output, const Tensor &logits, const Tensor &target,
                            const std::optional<Tensor> &weight, const Tensor &logsumexp,
                            const std::optional<Tensor> &denominator, int64_t ignore_index,
                            double label_smoothing) {
    const char *op = "softclass_cpp::spatial_backward";
    check_spatial_inputs(op, logits, target, weight);
    const auto compute = compute_type(logits);
    TORCH_CHECK(logsumexp.scalar_type() == compute && logsumexp.is_contiguous() &&
                    logsumexp.numel() == target.numel() && plain_cpu(logsumexp),
                op, ": L (N·d1·...,) in ", compute, " expected, got ", logsumexp.sizes());
    TORCH_CHECK(grad_output.scalar_type() == compute && grad_output.is_contiguous() &&
                    (grad_output.numel() == 1 || grad_output.numel() == target.numel()) &&
                    plain_cpu(grad_output),
                op, ": grad_output (0-d or one per position) in ", compute, " expected, got ",
                grad_output.scalar_type(), " ", grad_output.sizes());
    TORCH_CHECK(!denominator.has_value() ||
                    (denominator->scalar_type() == at::kDouble && denominator->numel() >= 1 &&
                     plain_cpu(*denominator)),
                op, ": the denominator must be float64");
    Tensor gradient = at::empty(logits.sizes(), logits.options());
    const int64_t n_positions = target.numel();
    const int64_t stride = grad_output.dim() == 0 ? 0 : 1;
    with_spatial_loops(logits, [&](const auto &loops) {
        using Loops = std::decay_t<decltype(loops)>;
        using T = typename Loops::Element;
        using R = typename Loops::Real;
        const auto *x = static_cast<const T *>(logits.const_data_ptr());
        const R *w = weight.has_value() ? static_cast<const R *>(weight->const_data_ptr()) : nullptr;
        const auto *lse = static_cast<const R *>(logsumexp.const_data_ptr());
        const auto *upstream = static_cast<const R *>(grad_output.const_data_ptr());
        const double *divisor =
            denominator.has_value() ? denominator->const_data_ptr<double>() : nullptr;
        auto *grad = static_cast<T *>(gradient.data_ptr());
        run_parts(spatial_parts(n_positions, logits.size(1)), n_positions,
                  [&](int64_t, int64_t begin, int64_t end) {
                      loops.backward(x, logits.stride(0), logits.size(1),
                                     n_positions / logits.size(0), begin, end,
                                     target.const_data_ptr<int64_t>(), ignore_index, w,
                                     label_smoothing, lse, upstream, stride, divisor, grad);
                  });
    });
    return gradient;
}

}  // namespace

TORCH_LIBRARY(softclass_cpp, m) {
    m.def("cross_entropy(Tensor logits, Tensor target, int ignore_index, bool mean) -> Tensor");
    m.def(
        "cross_entropy_fused(Tensor logits, Tensor target, int ignore_index, bool mean) -> "
        "(Tensor, Tensor)");
    m.def(
        "cross_entropy_grad_graph(Tensor logits, Tensor target, int ignore_index, bool mean, "
        "Tensor grad_loss) -> Tensor");
    m.def(
        "spatial_forward(Tensor logits, Tensor target, Tensor? weight, int ignore_index, "
        "str reduction, float label_smoothing, bool with_gradient) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
    m.def(
        "spatial_backward(Tensor grad_output, Tensor logits, Tensor target, Tensor? weight, "
        "Tensor logsumexp, Tensor? denominator, int ignore_index, float label_smoothing) -> "
        "Tensor");
}

TORCH_LIBRARY_IMPL(softclass_cpp, CPU, m) {
    m.impl("cross_entropy", &cross_entropy_cpu);
    m.impl("cross_entropy_fused", &cross_entropy_fused_cpu);
    m.impl("spatial_forward", &spatial_forward_cpu);
    m.impl("spatial_backward", &spatial_backward_cpu);
}

TORCH_LIBRARY_IMPL(softclass_cpp, Meta, m) {
    m.impl("cross_entropy", &cross_entropy_meta);
    m.impl("cross_entropy_fused", &cross_entropy_fused_meta);
}

TORCH_LIBRARY_IMPL(softclass_cpp, Autograd, m) {
    m.impl("cross_entropy", &cross_entropy_autograd);
}
