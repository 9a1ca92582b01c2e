// `ift bench train`: times full training steps (forward, backward, AdamW) on any backend and, on cpu,
// reports model FLOPs utilisation twice: against the machine's fp32 peak (vector width x FMA units
// x clock x threads, engine/cpu/blas.h), and against the backend's own sgemm measured in the same
// run. A slow GEMM library shows as a low first figure and a healthy second one.
//
// FLOPs per trained step (stated so the figure can be checked):
//   6 * P_matmul * tokens                  P_matmul: every projection and the classifier (V x C),
//                                           not the embedding lookups
// + 6 * L * q_dim * sum_samples(len^2)/2    attention: QK^T and PV, forward (x1) and backward (x2),
//                                           causal (half the square)
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "engine/checkpoint.h"
#include "engine/cpu/blas.h"
#include "engine/base/error.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "tools/cli.h"
#include "tools/presets.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The cpu backend's sgemm (the library and tiling its matmuls use) with the current thread count on
// a square 1024^3: the best call of half a second of them, after one that warms the library (oneDNN
// generates its kernels on the first call of a shape).
double sgemm_peak_flops() {
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  cpu::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  double best = 1e30;
  for (const auto start = Clock::now(); seconds_since(start) < 0.5;) {
    const auto t = Clock::now();
    cpu::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, seconds_since(t));
  }
  return 2.0 * n * n * n / best;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// The training step with the fused cross-entropy, then without it, in this one process. The peak
// resident memory only grows, so the fused run goes first: its peak is its own, and the unfused
// run's is the larger of the two.
int compare_fused_ce(BackendKind kind, Precision precision, const ModelConfig& c, const BatchView& batch, int steps) {
  std::printf("model: %s, vocabulary %d, hidden %d, %d layers; N=%d tokens, backend %s (%s), %d threads\n",
              c.model_type.c_str(), c.vocab_size, c.hidden, c.n_layers, batch.N, name_of(kind), name_of(precision),
              omp_get_max_threads());
  std::printf("peak resident memory before the first model: %.0f MiB\n", peak_rss_mib());
  for (const bool fused : {true, false}) {
    ModelOptions options;
    options.fused_ce = fused;
    std::vector<double> times;
    double allocated = 0, loss = 0;
    with_backend(kind, precision, [&]<class Be>() {
      Model<Be> model(c, options);
      model.init_random(0);
      model.enable_optimizer({});
      for (int s = 0; s <= steps; ++s) {
        const auto t = Clock::now();
        model.zero_grads();
        loss = model.forward(batch, static_cast<double>(batch.trained_tokens()));
        model.backward();
        model.step(1e-4f);
        if (s > 0) times.push_back(seconds_since(t));
      }
      allocated = model.allocated().total() / 1048576.0;
    });
    std::sort(times.begin(), times.end());
    std::printf("%-8s step median %.1f ms (%d steps), last loss %.6f, allocated %.1f MiB, peak resident %.0f MiB\n",
                fused ? "fused" : "unfused", times[times.size() / 2] * 1e3, steps, loss, allocated, peak_rss_mib());
  }
  return 0;
}

}  // namespace

int bench(Args args) {
  if (!args.empty() && std::string(args[0]) == "kernels") return bench_kernels(args.subspan(1));
  IFT_CHECK(!args.empty() && std::string(args[0]) == "train",
            "ift bench: expected `ift bench train` or `ift bench kernels` (see --help)");
  cli::Parser p("ift bench train", "Time full training steps (forward, backward, AdamW) on a backend.");
  p.option("--model", "DIR|ARCH", "a model directory, or gpt2-124m | gpt2-small-6l | llama-demo (random init)",
           cli::required);
  p.option("--batch", "B", "4", "rows per step");
  p.option("--seq-len", "T", "256", "tokens per row (one sample per row)");
  p.option("--steps", "N", "5", "timed steps (after one warm-up step)");
  p.option("--threads", "K", "0", "OpenMP threads; 0: all cores");
  p.option("--backend", "cpu|emu|cuda", "cpu", "where the step runs");
  p.option("--precision", "fp32|bf16", "fp32", "weights and activations (bf16: emu and cuda)");
  add_lora_option_flags(p);
  p.flag("--json", "print one JSON line instead of the text (for tools/bench/compare_torch.sh)");
  add_model_option_flags(p);
  p.flag("--compare-fused-ce", "run the steps twice in this process, fused cross-entropy first, then unfused, and "
                               "print each one's time, allocation and peak resident memory");
  if (!p.parse(args.subspan(1))) return 0;
  cpu::set_threads(static_cast<int>(p.integer("--threads")));
  const int B = static_cast<int>(p.integer("--batch")), T = static_cast<int>(p.integer("--seq-len"));
  const int steps = static_cast<int>(p.integer("--steps"));
  IFT_CHECK(B > 0 && T > 1 && steps > 0, "--batch, --seq-len and --steps must be positive");

  const std::string m = p.str("--model");
  const BackendKind kind = parse_backend(p.str("--backend"));
  const Precision precision = parse_precision(p.str("--precision"));
  const bool is_dir = std::filesystem::is_directory(m);
  const ModelConfig c = is_dir ? ModelConfig::load(resolve_model_dir(m) / "config.json") : model_config_or_preset(m);
  IFT_CHECK(!c.learned_positions() || T <= c.max_positions, "--seq-len ", T, " exceeds the model's positions");

  const LoraConfig lora = lora_options(p, c);
  const int N = B * T;
  const RandomBatch random = random_batch(c.vocab_size, B, T);
  const BatchView batch = random.view();
  const ParamLayout layout = ParamLayout::build(c);
  double matmul_params = double(c.vocab_size) * c.hidden;
  for (const ParamView& v : layout.views)
    if (v.shape.size() == 2 && v.offset != layout.wte && v.offset != layout.wpe && v.offset != layout.lm_head)
      matmul_params += double(v.numel());
  const double flops = 6.0 * matmul_params * N + 6.0 * c.n_layers * c.q_dim() * double(B) * T * T / 2.0;

  const ModelOptions options = model_options(p);
  if (p.on("--compare-fused-ce")) return compare_fused_ce(kind, precision, c, batch, steps);

  // The same step on whichever backend: zero_grads, forward, backward, AdamW.
  std::vector<double> times;
  double device_mib = 0;
  with_backend(kind, precision, [&]<class Be>() {
    ModelOptions with_lora = options;
    with_lora.lora = lora;
    Model<Be> model = is_dir && !lora.enabled() ? load_model<Be>(m, options) : Model<Be>(c, with_lora);
    if (!is_dir) {
      model.init_random(0);
    } else if (lora.enabled()) {  // the base's weights, fresh adapters
      std::vector<float> w = read_weights(resolve_model_dir(m) / "model.safetensors", model.layout());
      init_lora(model.layout(), w, 0);
      model.load_params(w);
    }
    model.enable_optimizer({});
    for (int s = 0; s <= steps; ++s) {
      const auto t = Clock::now();
      model.zero_grads();
      model.forward(batch, static_cast<double>(batch.trained_tokens()));  // reads the loss back: the step ends
      model.backward();
      model.step(1e-4f);  // reads the gradient norm back: the step's work is done when it returns
      if (s > 0) times.push_back(seconds_since(t));  // step 0 warms caches and the allocator
    }
    device_mib = model.allocated().total() / 1048576.0;
  });
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const bool on_cpu = kind == BackendKind::cpu;
  const double peak = on_cpu ? sgemm_peak_flops() : 0;  // the CPU figures mean nothing for the kernels
  const cpu::MachinePeak machine = cpu::machine_peak(cpu::threads());
  const double achieved = flops / median;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double rss_mb = usage.ru_maxrss / 1024.0;
  if (p.on("--json")) {
    nlohmann::json j{{"model", m}, {"lora_r", lora.r}, {"quantize", lora.quantize}, {"backend", name_of(kind)}, {"precision", name_of(precision)}, {"batch", B},
                     {"seq_len", T}, {"median_ms", median * 1e3}, {"tokens_per_s", N / median},
                     {"model_gflop_per_step", flops / 1e9}, {"allocated_mib", device_mib}, {"peak_rss_mb", rss_mb}};
    if (!on_cpu) {
      std::printf("%s\n", j.dump().c_str());
      return 0;
    }
    std::printf("%s\n", nlohmann::json{{"model", m}, {"lora_r", lora.r}, {"quantize", lora.quantize}, {"backend", "cpu"}, {"batch", B}, {"seq_len", T}, {"threads", omp_get_max_threads()},
                                       {"median_ms", median * 1e3}, {"tokens_per_s", N / median},
                                       {"mfu", achieved / peak}, {"sgemm_peak_gflops", peak / 1e9},
                                       {"mfu_machine", achieved / (machine.gflops * 1e9)},
                                       {"machine_peak_gflops", machine.gflops}, {"gemm", cpu::gemm_kernels_line()},
                                       {"peak_rss_mb", rss_mb}}
                             .dump()
                             .c_str());
    return 0;
  }
  std::printf("model %s: %zu parameters, B=%d T=%d, backend %s (%s), %d threads%s\n", m.c_str(), layout.parameters, B,
              T, name_of(kind), name_of(precision), omp_get_max_threads(),
              lora.enabled() ? (", LoRA r=" + std::to_string(lora.r) + " (base frozen" +
                                (lora.quantize == "nf4" ? ", NF4)" : ")")).c_str()
                             : "");
  std::printf("step: median %.1f ms over %d steps (min %.1f, max %.1f)\n", median * 1e3, steps, times.front() * 1e3,
              times.back() * 1e3);
  std::printf("throughput: %.0f tokens/s, %.2f GFLOP/s of model FLOPs (%.2f GFLOP per step)\n", N / median,
              flops / median / 1e9, flops / 1e9);
  std::printf("memory allocated by the model (plan): %.1f MiB\n", device_mib);
  if (!on_cpu) {  // a GPU's peak is not measured here; tokens/s and memory are the figures
    std::printf("peak resident host memory: %.0f MiB\n", rss_mb);
    return 0;
  }
  std::printf("%s\n", cpu::gemm_kernels_line().c_str());
  std::printf("MFU: %.1f%% of the machine's fp32 peak %.1f GFLOP/s (%d lanes x 2 x %d FMA units x %.2f GHz x %d threads)\n",
              100.0 * achieved / (machine.gflops * 1e9), machine.gflops, machine.lanes, machine.fma_units,
              machine.clock_ghz, machine.threads);
  std::printf("     %.1f%% of the backend's sgemm, measured now at %.1f GFLOP/s (1024^3, %.0f%% of the machine's peak)\n",
              100.0 * achieved / peak, peak / 1e9, 100.0 * peak / (machine.gflops * 1e9));
  std::printf("peak resident memory: %.0f MiB\n", rss_mb);
  return 0;
}

}  // namespace ift::cmd
