// `ift info`: the memory plan of a model for one batch shape on a backend, part by part (parameters,
// gradients, fp32 master weights, AdamW moments, activations and their gradients, the batch, the
// kernels' workspace), from the shapes alone; --measure also builds the model, runs one training
// step and prints what was actually allocated beside it. It also says which GEMM kernels the cpu
// backend runs on this machine, and why (engine/cpu/blas.h).
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "engine/cpu/blas.h"
#include "engine/dist/data_parallel.h"
#include "engine/model.h"
#include "engine/nf4.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/presets.h"

namespace ift::cmd {

int info(Args args) {
  cli::Parser p("ift info", "Print the memory plan of a model for a batch shape: the bytes of each part.");
  p.option("--model", "DIR|ARCH",
           "a model directory, or gpt2-124m | gpt2-small-6l | llama-demo | tinyllama-1.1b | llama2-7b", cli::required);
  p.option("--batch", "B", "4", "rows per micro-batch");
  p.option("--seq-len", "T", "1024", "tokens per row");
  // The plan of a GPU run is what people ask for; emu's is the same less cuBLASLt's workspace.
  p.option("--backend", "NAME", cuda_built() ? "cuda" : "emu", "cpu, emu or cuda (the plan needs no GPU)");
  p.option("--precision", "P", "bf16", "fp32 or bf16 (cpu: fp32)");
  add_model_option_flags(p);
  p.flag("--no-optimizer", "inference and gradients only: no AdamW moments");
  p.option("--world", "N", "1", "data-parallel ranks: the plan of one rank");
  p.option("--zero", "0|1", "0", "ZeRO stage (distributed.zero): 1 slices master weights and AdamW moments across ranks");
  add_lora_option_flags(p);
  p.flag("--measure", "also build the model with random weights, run one training step and print what it allocated");
  if (!p.parse(args)) return 0;
  const ModelConfig config = model_config_or_preset(p.str("--model"));
  const int B = static_cast<int>(p.integer("--batch")), T = static_cast<int>(p.integer("--seq-len"));
  IFT_CHECK(B > 0 && T > 0, "--batch and --seq-len must be positive");
  IFT_CHECK(int64_t(B) * T < (int64_t(1) << 31), "--batch x --seq-len must stay below 2^31 tokens");
  const BackendKind kind = parse_backend(p.str("--backend"));
  const Precision precision = parse_precision(p.str("--precision"));
  const LoraConfig lora = lora_options(p, config);
  ModelOptions options = model_options(p);
  options.lora = lora;
  const bool optimizer = !p.on("--no-optimizer");
  const int N = B * T;
  const int world = static_cast<int>(p.integer("--world")), zero = static_cast<int>(p.integer("--zero"));
  IFT_CHECK(world >= 1, "--world must be at least 1");
  IFT_CHECK(zero == 0 || zero == 1, "--zero must be 0 or 1");
  IFT_CHECK(world == 1 || !p.on("--measure"), "--measure runs one process: leave out --world");

  const cpu::CpuFeatures cpu = cpu::cpu_features();
  std::printf("CPU: %s, %d threads\n%s\n", cpu.brand.empty() ? cpu.vendor.c_str() : cpu.brand.c_str(),
              cpu::threads(), cpu::gemm_kernels_line().c_str());
  return with_backend(kind, precision, [&]<class Back>() {
    const std::vector<GroupLayout> groups = group_layout(ParamLayout::build(config), {});
    const MemoryBytes plan = dist::plan_per_rank(Model<Back>::plan(config, N, options, optimizer), groups, world, zero);
    std::printf("%s: %s, %d layers, hidden %d, %zu parameters\n", p.str("--model").c_str(), config.model_type.c_str(),
                config.n_layers, config.hidden, ParamLayout::build(config).parameters);
    std::printf("plan for B=%d T=%d on %s, %s%s%s", B, T, name_of(kind), name_of(precision),
                options.recompute ? ", recompute" : "", optimizer ? ", AdamW" : ", no optimizer");
    if (world > 1)
      std::printf(", one rank of %d (ZeRO %d; sends %.1f MiB per step)", world, zero,
                  double(dist::bytes_per_step(groups, world, zero, int(sizeof(typename Back::act_t)))) / (1 << 20));
    std::printf(":\n%s", plan.table().c_str());
    // The classifier's output, inside "activations": all N rows, or one chunk with the fused loss.
    const int64_t Vp = config.padded_vocab(), act = sizeof(typename Back::act_t);
    const int chunk = fused_ce_chunk_rows(config, N, options);
    const double full_mib = double(Vp) * N * act / 1048576.0;
    if (chunk)
      std::printf("logits: fused cross-entropy, one chunk of %d x %lld (%.1f MiB) instead of the (%d, %lld) logits "
                  "(%.1f MiB)\n", chunk, static_cast<long long>(Vp), double(Vp) * chunk * act / 1048576.0, N,
                  static_cast<long long>(Vp), full_mib);
    else
      std::printf("logits: (%d, %lld), %.1f MiB of the activations (--fused-ce keeps one chunk of them)\n", N,
                  static_cast<long long>(Vp), full_mib);
    if (lora.enabled()) {
      const ParamLayout layout = ParamLayout::build(config, lora);
      ModelOptions full_options = options;
      full_options.lora = {};
      const MemoryBytes full = Model<Back>::plan(config, N, full_options, optimizer);
      const double gib = 1024.0 * 1024.0 * 1024.0;
      std::printf("LoRA r=%d on %zu modules (%s): %zu adapter parameters; the base frozen (no gradients, master or "
                  "moments)\nfull fine-tune: %.2f GiB, LoRA: %.2f GiB (%.1fx less)\n",
                  lora.r, layout.adapters.size(), p.str("--lora-targets").empty() ? "all projections" : "targets",
                  layout.total - layout.base_total, full.total() / gib, plan.total() / gib,
                  double(full.total()) / double(plan.total()));
      if (!layout.nf4.empty()) {
        // In the plan above: the projections of every layer in NF4 (their act_t values gone from the
        // parameters), one act_t scratch of the largest for its GEMM in the workspace.
        size_t proj = 0, largest = 0;
        for (const StorageTensor& t : layout.storage)
          if (t.stored == kNoParam) proj += t.numel, largest = std::max(largest, t.numel);
        const int64_t act = sizeof(typename Back::act_t);
        ModelOptions dense_options = options;
        dense_options.lora.quantize = "none";
        const MemoryBytes dense = Model<Back>::plan(config, N, dense_options, optimizer);
        std::printf("NF4 base: %zu projection tensors (Hugging Face modules), %.2f GiB as %s -> %.2f GiB NF4 (codes and fp32 absmax per %d) + "
                    "%.1f MiB dequantize scratch; LoRA on a %s base: %.2f GiB\n",
                    layout.nf4.size(), double(proj) * act / gib, name_of(precision), layout.nf4_bytes / gib, kNf4Block,
                    double(largest) * act / (1024.0 * 1024.0), name_of(precision), dense.total() / gib);
      }
    }
    if (!p.on("--measure")) return 0;
    Model<Back> model(config, options);
    model.init_random(0);  // the adapters too (B zero)
    if (optimizer) model.enable_optimizer({});
    const RandomBatch random = random_batch(config.vocab_size, B, T);
    const BatchView batch = random.view();
    model.forward(batch, static_cast<double>(batch.trained_tokens()));
    model.backward();
    if (optimizer) model.step(1e-4f);
    const MemoryBytes& got = model.allocated();
    std::printf("allocated after one step (%lld buffers):\n%s", static_cast<long long>(got.allocations),
                got.table().c_str());
    const bool same = got.bytes == plan.bytes;
    std::printf("%s\n", same ? "matches the plan" : "DIFFERS from the plan");
    return same ? 0 : 1;
  });
}

}  // namespace ift::cmd
