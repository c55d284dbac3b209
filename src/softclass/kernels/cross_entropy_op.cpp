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
// Logits: (M, C) with class stride 1, or contiguous (N, C, d1, ...); target int64 (M,) or
// contiguous (N, d1, ...). A kept target outside [0, C) raises IndexError naming its flat index.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

extern "C" {
#include "loss_rows.h"

// The functions of cpu_native.c / spatial_loops.h called here, per element type.
#define DECLARE_LOOPS(SUFFIX, TYPE, REAL)                                                         \
    int64_t ce_forward_##SUFFIX(const TYPE *, int64_t, int64_t, int64_t, int64_t,                \
                                const int64_t *, int64_t, int64_t, const REAL *, double, REAL *, \
                                TYPE *, int64_t, double *, int64_t, TYPE *, double *, TYPE *,    \
                                int64_t, const double *);                                        \
    int64_t ce_spatial_forward_##SUFFIX(const TYPE *, int64_t, int64_t, int64_t, int64_t,        \
                                        int64_t, const int64_t *, int64_t, const REAL *, double, \
                                        REAL *, TYPE *, double *, TYPE *, const double *);       \
    void ce_finish_##SUFFIX(const double *, int64_t, int64_t, TYPE *, double *);                 \
    void ce_kept_weight_sum_##SUFFIX(const int64_t *, int64_t, int64_t, int64_t, int64_t,        \
                                     const REAL *, double *);                                    \
    void ce_scale_##SUFFIX(TYPE *, int64_t, int64_t, int64_t, int64_t, const REAL *);
DECLARE_LOOPS(f32, float, float)
DECLARE_LOOPS(bf16, uint16_t, float)
DECLARE_LOOPS(f64, double, double)
}

namespace {

using at::Tensor;

template <typename T, typename R>
struct Loops {
    int64_t (*forward)(const T *, int64_t, int64_t, int64_t, int64_t, const int64_t *, int64_t,
                       int64_t, const R *, double, R *, T *, int64_t, double *, int64_t, T *,
                       double *, T *, int64_t, const double *);
    int64_t (*spatial_forward)(const T *, int64_t, int64_t, int64_t, int64_t, int64_t,
                               const int64_t *, int64_t, const R *, double, R *, T *, double *,
                               T *, const double *);
    void (*finish)(const double *, int64_t, int64_t, T *, double *);
    void (*kept_weight_sum)(const int64_t *, int64_t, int64_t, int64_t, int64_t, const R *,
                            double *);
    void (*scale)(T *, int64_t, int64_t, int64_t, int64_t, const R *);
};

const Loops<float, float> kF32{ce_forward_f32, ce_spatial_forward_f32, ce_finish_f32,
                               ce_kept_weight_sum_f32, ce_scale_f32};
const Loops<uint16_t, float> kBF16{ce_forward_bf16, ce_spatial_forward_bf16, ce_finish_bf16,
                                   ce_kept_weight_sum_bf16, ce_scale_bf16};
const Loops<double, double> kF64{ce_forward_f64, ce_spatial_forward_f64, ce_finish_f64,
                                 ce_kept_weight_sum_f64, ce_scale_f64};

void check_inputs(const Tensor &logits, const Tensor &target) {
    TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 ||
                    logits.scalar_type() == at::kDouble,
                "softclass_cpp::cross_entropy: logits must be float32, bfloat16 or float64, got ",
                logits.scalar_type());
    TORCH_CHECK(target.scalar_type() == at::kLong,
                "softclass_cpp::cross_entropy: target must be int64, got ", target.scalar_type());
    TORCH_CHECK(logits.dim() >= 2 && target.dim() == logits.dim() - 1 &&
                    logits.size(0) == target.size(0) && logits.numel() > 0,
                "softclass_cpp::cross_entropy: logits (N, C, ...) and target (N, ...) expected, "
                "got ", logits.sizes(), " and ", target.sizes());
    if (logits.dim() == 2) {
        TORCH_CHECK(logits.stride(1) == 1 || logits.size(1) == 1,
                    "softclass_cpp::cross_entropy: (M, C) logits need class stride 1, got ",
                    logits.strides());
    } else {
        TORCH_CHECK(logits.sizes().slice(2) == target.sizes().slice(1) &&
                        logits.is_contiguous() && target.is_contiguous(),
                    "softclass_cpp::cross_entropy: contiguous (N, C, d1, ...) logits and "
                    "(N, d1, ...) target expected, got ", logits.sizes(), " and ",
                    target.sizes());
    }
}

// The loss (and, when `gradient` is defined, the gradient for grad_output 1 written into it)
// by one call of the compiled loops on the calling thread.
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
        const int64_t stride = logits.dim() == 2 ? target.stride(0) : 1;
        loops.kept_weight_sum(y, stride, n_positions, ignore_index, n_classes, nullptr, &state[3]);
        grad_denominator = &state[3];
    }
    int64_t bad;
    if (logits.dim() == 2) {
        bad = loops.forward(x, logits.stride(0), n_classes, 0, n_positions, y, target.stride(0),
                            ignore_index, nullptr, 0.0, logsumexp.data(), nullptr, 0, &state[1],
                            mean, loss_value, &state[0], grad, n_classes, grad_denominator);
    } else {
        bad = loops.spatial_forward(x, logits.stride(0), n_classes,
                                    n_positions / logits.size(0), 0, n_positions, y,
                                    ignore_index, nullptr, 0.0, logsumexp.data(), nullptr,
                                    &state[1], grad, grad_denominator);
        if (bad < 0) loops.finish(&state[1], 1, mean, loss_value, &state[0]);
    }
    TORCH_CHECK_INDEX(bad < 0, "softclass_cpp::cross_entropy: target out of bounds at flat index ",
                      bad);
}

void forward_into(const Tensor &logits, const Tensor &target, int64_t ignore_index, bool mean,
                  const Tensor &loss, const Tensor &gradient) {
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

}  // namespace

TORCH_LIBRARY(softclass_cpp, m) {
    m.def("cross_entropy(Tensor logits, Tensor target, int ignore_index, bool mean) -> Tensor");
    m.def(
        "cross_entropy_fused(Tensor logits, Tensor target, int ignore_index, bool mean) -> "
        "(Tensor, Tensor)");
    m.def(
        "cross_entropy_grad_graph(Tensor logits, Tensor target, int ignore_index, bool mean, "
        "Tensor grad_loss) -> Tensor");
}

TORCH_LIBRARY_IMPL(softclass_cpp, CPU, m) {
    m.impl("cross_entropy", &cross_entropy_cpu);
    m.impl("cross_entropy_fused", &cross_entropy_fused_cpu);
}

TORCH_LIBRARY_IMPL(softclass_cpp, Meta, m) {
    m.impl("cross_entropy", &cross_entropy_meta);
    m.impl("cross_entropy_fused", &cross_entropy_fused_meta);
}

TORCH_LIBRARY_IMPL(softclass_cpp, Autograd, m) {
    m.impl("cross_entropy", &cross_entropy_autograd);
}
