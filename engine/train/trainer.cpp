#include "engine/train/trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <optional>

#include <omp.h>

#include "data/loader.h"
#include "data/packed_file.h"
#include "data/prepare.h"
#include "engine/checkpoint.h"
#include "engine/dist/comm.h"
#include "engine/dist/data_parallel.h"
#include "engine/base/error.h"
#include "engine/base/io.h"
#include "engine/model.h"
#include "engine/train/progress.h"
#include "engine/train/task_eval.h"
#include "engine/weights.h"
#include "tokenizer/tokenizer.h"

namespace ift {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Everything a resolved template renders from: a changed .jinja/.yaml file, or a model's changed
// chat_template, gives another cache key.
std::string template_fingerprint(const Template& t) {
  std::string s = t.name;
  for (const std::string* f : {&t.bos, &t.default_system, &t.default_system_with_input, &t.system_prefix,
                               &t.system_suffix, &t.user_prefix, &t.user_suffix, &t.input_prefix, &t.assistant_prefix,
                               &t.assistant_suffix, &t.turn_separator, &t.jinja, &t.bos_token, &t.eos_token})
    s.append("\x1f").append(*f);
  for (const std::string& sp : t.special_tokens) s.append("\x1e").append(sp);
  s.append(t.system_in_first_user ? "\x1d" "1" : "\x1d" "0");  // "\x1d1" would be one (too large) escape
  return s;
}

// A prepared directory as given, or raw files prepared once into out_dir/data/ under a key that
// changes with anything that changes the result (files, their sizes and times, options, the
// resolved template's text, tokenizer). With a validation split the directory also holds eval.pack.
fs::path resolve_data(const std::vector<std::string>& entries, const TrainConfig& c, const Tokenizer& tok,
                      const std::string& which) {
  if (entries.size() == 1 && fs::is_directory(entries[0])) {
    IFT_CHECK(fs::exists(fs::path(entries[0]) / "train.pack"), entries[0],
              ": no train.pack here (a directory written by `ift prepare` is expected)");
    IFT_CHECK(which != "train" || c.data.val_split == 0 || fs::exists(fs::path(entries[0]) / "eval.pack"), entries[0],
              ": data.val_split needs raw files (or a directory `ift prepare --val-split` wrote, with eval.pack)");
    IFT_CHECK(which != "train" || c.data.weights.empty(), "data.weights: mixture weights need raw files, not the "
              "prepared directory ", entries[0]);
    return entries[0];
  }
  PrepareOptions o;
  for (const std::string& e : entries) {
    IFT_CHECK(fs::is_regular_file(e), "data.", which, ": '", e, "' is not a file");
    o.data.push_back(e);
  }
  o.format = parse_format(c.data.format);
  o.tmpl = resolve_template(find_template(c.data.tmpl), tok);
  o.mask = parse_mask_mode(c.data.mask);
  o.train_on_eos = parse_eos_mode(c.data.train_on_eos);
  const bool is_train = which == "train";
  if (is_train) o.weights = c.data.weights, o.val_fraction = c.data.val_split;
  o.pack = parse_pack_mode(c.data.pack);
  o.on_long = parse_on_long(c.data.on_long);
  o.on_bad = parse_on_bad(c.data.on_bad);
  o.seq_len = c.seq_len;
  o.seed = c.seed;
  std::string key = c.data.format + "|" + c.data.tmpl + "|" + c.data.mask + "|" + c.data.pack + "|" + c.data.on_long +
                    "|" + c.data.on_bad + "|" + std::to_string(c.seq_len) + "|" + std::to_string(c.seed) + "|" +
                    std::to_string(tokenizer_hash(tok)) + "|" + c.data.train_on_eos + "|" +
                    std::to_string(fnv1a64(template_fingerprint(o.tmpl).data(), template_fingerprint(o.tmpl).size()));
  char number[32];
  for (double w : o.weights) std::snprintf(number, sizeof number, "|w%.17g", w), key += number;
  std::snprintf(number, sizeof number, "|v%.17g", o.val_fraction), key += number;
  for (const fs::path& f : o.data) {
    key.append("|").append(fs::absolute(f).string()).append(":").append(std::to_string(fs::file_size(f)));
    key.append(":").append(std::to_string(fs::last_write_time(f).time_since_epoch().count()));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(key.data(), key.size())));
  const fs::path dir = fs::path(c.out_dir) / "data" / (which + "-" + hex);
  if (fs::exists(dir / "train.pack")) return dir;
  Progress progress("prepare " + which, "tok");
  const PrepareReport r = prepare_dataset(o, tok, dir, [&](int64_t done, int64_t total, int64_t tokens) {
    progress.update(done, total, tokens);
  });
  progress.finish();
  std::fprintf(stderr, "prepared %s: %lld samples kept of %lld, %lld rows, %.1f%% packing efficiency -> %s\n",
               which.c_str(), static_cast<long long>(r.samples_kept), static_cast<long long>(r.samples_read),
               static_cast<long long>(r.rows), 100 * r.packing_efficiency, dir.c_str());
  return dir;
}

// The per-sequence loss weights of a batch's segments: 1 / trained tokens, 0 for a segment with none
// (padding, or a sample whose trained tokens were all cut). Returns the segments with a weight.
int64_t sequence_weights(const Batch& b, std::vector<float>& weights) {
  const size_t S = b.cu_seqlens.size() - 1;
  weights.assign(S, 0.0f);
  int64_t sequences = 0;
  for (size_t s = 0; s < S; ++s) {
    int64_t n = 0;
    for (int32_t t = b.cu_seqlens[s]; t < b.cu_seqlens[s + 1]; ++t) n += b.targets[t] >= 0;
    if (n > 0) weights[s] = 1.0f / static_cast<float>(n), ++sequences;
  }
  return sequences;
}

ModelConfig model_config(const TrainConfig& c, const Tokenizer& tok) {
  if (!c.model_path.empty()) return ModelConfig::load(resolve_model_dir(c.model_path) / "config.json");
  json j = c.model_init;
  if (!j.contains("vocab_size")) j["vocab_size"] = tok.vocab_size();
  if (!j.contains("bos_token_id") && tok.bos_id() >= 0) j["bos_token_id"] = tok.bos_id();
  if (!j.contains("eos_token_id") && tok.eos_id() >= 0) j["eos_token_id"] = tok.eos_id();
  const bool gpt2 = j.value("model_type", "") == "gpt2";
  const char* positions = gpt2 ? "n_positions" : "max_position_embeddings";
  if (!j.contains(positions)) j[positions] = c.seq_len;
  return ModelConfig::from_json(j, "model.init");
}

void append_line(const fs::path& path, const json& j) {
  std::ofstream out(path, std::ios::app);
  out << j.dump() << "\n";
  IFT_CHECK(out, path.string(), ": cannot append");
}

// On resume, metrics logged after the checkpoint would be logged again: drop them first.
void truncate_metrics(const fs::path& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (json::parse(line).value("step", int64_t(0)) > last_step) continue;
    } catch (const json::parse_error&) {
      continue;  // a line torn by the kill
    }
    kept += line + "\n";
  }
  in.close();
  write_text_atomically(path, kept);
}

}  // namespace

template <class B>
EvalResult evaluate(Model<B>& model, const PackedFile& file, int rows_per_batch, int64_t max_batches) {
  double total = 0;
  int64_t trained = 0, batches = 0;
  for (int64_t r = 0; r < file.n_rows() && (max_batches == 0 || batches < max_batches); ++batches) {
    Batch b;
    b.B = 0, b.T = file.seq_len();
    for (int i = 0; i < rows_per_batch && r < file.n_rows(); ++i, ++r, ++b.B)
      append_row(b, file.row_sample_lengths(r), file.row_tokens(r), file.row_trained(r), file.header().pad_id);
    const int64_t n = b.trained_tokens();
    if (n == 0) continue;
    total += model.forward({b.B * b.T, b.tokens, b.targets, b.positions, b.cu_seqlens}, 1.0);
    trained += n;
  }
  return {trained > 0 ? total / static_cast<double>(trained) : NAN, trained, batches};
}

template EvalResult evaluate(CpuModel<float>&, const PackedFile&, int, int64_t);
template EvalResult evaluate(Model<EmuBackend<float>>&, const PackedFile&, int, int64_t);
template EvalResult evaluate(Model<EmuBackend<__nv_bfloat16>>&, const PackedFile&, int, int64_t);
#if IFT_HAVE_CUDA
template EvalResult evaluate(Model<CudaBackend<float>>&, const PackedFile&, int, int64_t);
template EvalResult evaluate(Model<CudaBackend<__nv_bfloat16>>&, const PackedFile&, int, int64_t);
#endif

namespace {

template <class B>
TrainSummary train_on(const TrainConfig& c, bool resume, const std::atomic<bool>* stop, const TrainHooks& hooks) {
  const fs::path out(c.out_dir), ckpt_root = fs::path(c.out_dir) / "checkpoints";
  // Data parallelism (engine/dist/): one process unless a launcher started several. Rank 0 alone
  // writes files and prints; every rank reads the data and the checkpoint.
  dist::Communicator& comm = dist::process_communicator(B::kind, c.distributed.timeout_s);
  const bool lead = comm.rank() == 0;
  comm.check_same(fnv1a64(c.to_yaml().data(), c.to_yaml().size()), "the training configuration (config file and --set)");
  if (lead) fs::create_directories(out);
  const fs::path metrics = out / "metrics.jsonl", samples = out / "samples.jsonl";

  const std::unique_ptr<Tokenizer> tok = load_tokenizer(c.tokenizer);
  const ModelConfig mc = model_config(c, *tok);
  IFT_CHECK(tok->vocab_size() <= mc.vocab_size, "the tokenizer (", c.tokenizer, ") has ", tok->vocab_size(),
            " tokens, more than the model's vocab_size ", mc.vocab_size);
  if (c.lora.enabled()) c.lora.check(mc, "config: lora");
  ModelOptions options;
  options.recompute = c.recompute, options.fused_ce = c.fused_ce, options.lora = c.lora;
  options.attention = parse_attention_path(c.attention);
  Model<B> model(mc, options);
  dist::DataParallel<B> dp(comm, model, c.distributed.zero, c.adamw);  // enables the optimizer (sliced: at start)

  // Raw files are prepared once, by rank 0; the others then find them prepared.
  auto resolve_shared = [&](const std::vector<std::string>& entries, const std::string& which) {
    fs::path dir;
    if (lead) dir = resolve_data(entries, c, *tok, which);
    comm.barrier();
    return lead ? dir : resolve_data(entries, c, *tok, which);
  };
  const fs::path train_dir = resolve_shared(c.data.train, "train");
  const PackedFile train_file(train_dir / "train.pack");
  IFT_CHECK(train_file.seq_len() == c.seq_len, train_dir.string(), ": rows of ", train_file.seq_len(),
            " tokens, the config's seq_len is ", c.seq_len);
  IFT_CHECK(train_file.header().tokenizer_hash == tokenizer_hash(*tok), train_dir.string(),
            ": prepared with another tokenizer (", train_file.header().tokenizer_id, ")");
  IFT_CHECK(train_file.n_rows() > 0, train_dir.string(), ": no rows to train on");
  std::unique_ptr<PackedFile> eval_file;
  if (!c.data.eval.empty()) eval_file = std::make_unique<PackedFile>(resolve_shared(c.data.eval, "eval") / "train.pack");
  if (c.data.val_split > 0) eval_file = std::make_unique<PackedFile>(train_dir / "eval.pack");
  // The global step is world x micro_batch x grad_accum consecutive rows of one stream, whatever the
  // world size; rank r takes rows r*B..(r+1)*B-1 of every world*B (data/loader.h).
  Loader loader(train_file, c.micro_batch, c.seed, comm.rank(), comm.world());

  const int64_t rows_per_step = int64_t(c.micro_batch) * c.grad_accum * comm.world();
  const int64_t total_steps = c.max_steps > 0 ? c.max_steps
      : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(c.epochs * train_file.n_rows() / rows_per_step)));

  TrainSummary summary;
  int64_t step = 0, tokens_seen = 0, bad_in_row = 0;
  double elapsed_before = 0;
  const std::vector<fs::path> checkpoints = resume ? list_checkpoints(ckpt_root) : std::vector<fs::path>{};
  if (resume && checkpoints.empty()) {  // a requeued job's first attempt: the same command line works
    std::fprintf(stderr, "resume: no checkpoint in %s yet, starting from the beginning\n", ckpt_root.c_str());
    resume = false;
  }
  if (resume) {
    const fs::path last = checkpoints.back();
    verify_checkpoint(last);
    const json st = load_trainer_state(last);
    if (fs::exists(last / "config.yaml") && !c.resume_anyway) {
      std::vector<std::string> diff = result_changing_differences(read_text(last / "config.yaml"), c.to_yaml());
      // Another world size with grad_accum changed to keep the rows per step is the same training.
      if (diff == std::vector<std::string>{"grad_accum"} && st.value("rows_per_step", int64_t(-1)) == rows_per_step)
        diff.clear();
      if (!diff.empty()) {
        std::string fields;
        for (const std::string& f : diff) fields += (fields.empty() ? "" : ", ") + f;
        fail(last.string(), ": the config differs from the checkpoint's in fields that change the result (", fields,
             "); resume with the checkpoint's config, or pass --resume-anyway");
      }
    }
    if (c.lora.enabled()) {  // the frozen base from model.path, the adapters from the checkpoint
      std::vector<float> w = read_weights(resolve_model_dir(c.model_path) / "model.safetensors", model.layout());
      read_peft_adapter(last, model.layout(), w);
      model.load_params(w);
    } else {
      model.load_params(read_weights(last / "model.safetensors", model.layout()));
    }
    const OptimizerState opt = load_optimizer_state(last);
    dp.start(&opt);
    step = st.at("step").get<int64_t>();
    tokens_seen = st.at("tokens_seen").get<int64_t>();
    summary.skipped_steps = st.at("skipped_steps").get<int64_t>();
    elapsed_before = st.at("elapsed_s").get<double>();
    loader.restore(LoaderState::from_json(st.at("loader").get<std::string>()));
    if (lead) truncate_metrics(metrics, step);
    if (lead)
      std::fprintf(stderr, "resumed from %s (step %lld, saved with %lld rank(s))\n", last.c_str(), static_cast<long long>(step),
                   static_cast<long long>(st.value("world", int64_t(1))));
  } else {
    if (c.model_path.empty()) model.init_random(c.seed);
    else {
      std::vector<float> w = read_weights(resolve_model_dir(c.model_path) / "model.safetensors", model.layout());
      if (c.lora.enabled()) init_lora(model.layout(), w, c.seed);  // PEFT's init: A random, B zero
      model.load_params(w);
    }
    dp.start(nullptr);
    if (lead) fs::remove(metrics), fs::remove(samples);
  }
  if (lead) std::ofstream(out / "config.yaml") << c.to_yaml();
  if (lead && comm.world() > 1)
    std::fprintf(stderr, "data parallel: %d ranks (%s, %s), ZeRO %d: %d x %d x %d rows per step\n", comm.world(),
                 comm.name(), dist::name_of(dist::detect_launch().kind), c.distributed.zero, comm.world(), c.micro_batch,
                 c.grad_accum);
  if (lead) std::fprintf(stderr, "model: %s, %zu parameters on %s (%s%s%s%s); %lld rows of %d tokens; %lld steps of %lld rows\n",
               mc.model_type.c_str(), model.layout().parameters, c.backend.c_str(), c.precision.c_str(),
               c.recompute ? ", recompute" : "", options.fused(mc) ? ", fused cross-entropy" : "",
               options.attention == AttentionPath::cudnn ? ", cuDNN attention" : "", static_cast<long long>(train_file.n_rows()), c.seq_len,
               static_cast<long long>(total_steps), static_cast<long long>(rows_per_step));

  const std::string yaml = c.to_yaml();
  auto save = [&](int64_t at_step, double elapsed) {
    const OptimizerState opt = dp.optimizer_state();           // whole tensors (collective under ZeRO)
    const std::vector<float> params = dp.params_to_host();     // the fp32 master weights in bf16
    const fs::path dir = ckpt_root / checkpoint_name(at_step);
    summary.last_checkpoint = dir;
    if (!lead) return;
    CheckpointContents cc;
    cc.config = &mc, cc.layout = &model.layout(), cc.params = params, cc.optimizer = &opt;
    cc.trainer_state = {{"step", at_step},
                        {"tokens_seen", tokens_seen},
                        {"skipped_steps", summary.skipped_steps},
                        {"elapsed_s", elapsed},
                        {"loader", loader.state().to_json()},
                        {"world", comm.world()},
                        {"rows_per_step", rows_per_step}};
    cc.tokenizer_files = tok->files();
    cc.config_yaml = yaml;
    const std::string base = c.model_path.empty() ? "" : fs::absolute(resolve_model_dir(c.model_path)).string();
    if (c.lora.enabled()) cc.lora = &c.lora, cc.base_path = base;
    write_checkpoint(dir, cc);
    prune_checkpoints(ckpt_root, c.keep_last);
  };

  std::unique_ptr<ChatFormatter> formatter;
  if (!c.sample_prompts.empty()) formatter = std::make_unique<ChatFormatter>(find_template(c.data.tmpl), *tok);
  auto run_eval = [&](int64_t at_step, json& line, Progress& progress) {
    model.set_train_noise({});  // evaluation and sampling see the model without dropout or NEFTune
    if (eval_file) {
      summary.last_eval_loss = evaluate(model, *eval_file, c.micro_batch, c.eval_batches).loss;
      line["eval_loss"] = summary.last_eval_loss;  // every rank evaluates the same rows; rank 0 writes
      char buf[96];
      std::snprintf(buf, sizeof buf, "step %lld: eval loss %.4f", static_cast<long long>(at_step),
                    summary.last_eval_loss);
      progress.log(buf);
    }
    if (c.sample_prompts.empty() || !lead) return;
    // Decoding runs on the training backend, with the weights the forward pass uses.
    for (const std::string& prompt : c.sample_prompts) {
      const std::string output = greedy_answer(model, *tok, *formatter, {"", prompt, "", ""}, c.sample_max_tokens);
      append_line(samples, {{"step", at_step}, {"prompt", prompt}, {"output", output}});
    }
  };

  const std::vector<float> dropout_per_layer = residual_dropout_per_layer(c, mc.n_layers);
  const bool lora_dropout = c.lora.enabled() && c.lora.dropout > 0;
  const bool noisy = !dropout_per_layer.empty() || c.neftune_alpha > 0 || lora_dropout;

  static std::FILE* const quiet = std::fopen("/dev/null", "w");
  Progress progress("train", "tok", lead ? stderr : quiet);
  int64_t window_bytes_from = comm.bytes_sent();
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  double window_loss = 0;
  int64_t window_steps = 0, window_tokens = 0;
  auto window_start = std::chrono::steady_clock::now();
  std::vector<Batch> micro(c.grad_accum);
  const bool per_sequence = c.loss == "sequence";
  std::vector<std::vector<float>> weights(micro.size());  // per micro-batch, per segment
  while (step < total_steps) {
    const float lr = learning_rate(c, step, total_steps);
    int64_t trained = 0, tokens = 0;
    for (Batch& b : micro) {
      b = loader.next();
      trained += b.trained_tokens();
      tokens += int64_t(b.B) * b.T;
    }
    // Every rank divides by the trained tokens of the whole global step.
    trained = comm.sum(trained), tokens = comm.sum(tokens);
    model.zero_grads();
    double loss = 0;
    // Per-sequence averaging (Liger-Kernel #329): each sample's summed token loss times 1 / its
    // trained tokens, the step divided by its samples with a trained token: the mean over samples
    // of each sample's mean token loss, whatever the split into micro-batches.
    double loss_norm = static_cast<double>(trained);
    if (per_sequence) {
      int64_t sequences = 0;
      for (size_t i = 0; i < micro.size(); ++i) sequences += sequence_weights(micro[i], weights[i]);
      loss_norm = static_cast<double>(sequences);
    }
    if (trained > 0) {
      for (size_t i = 0; i < micro.size(); ++i) {
        const Batch& b = micro[i];
        // Every micro-batch of every step draws its own masks and noise, from the step count alone,
        // so a resumed run draws exactly what the uninterrupted one drew. The pass is the global
        // micro-batch's: rank r's micro-batch i holds the rows one process takes as its (i * world
        // + r)-th, so every world size draws the same masks for the same rows.
        if (noisy) {
          TrainNoise noise;
          const uint64_t world = uint64_t(comm.world());
          noise.seed = c.seed;
          noise.pass = (uint64_t(step) * uint64_t(c.grad_accum) + i) * world + uint64_t(comm.rank());
          noise.residual_dropout = dropout_per_layer, noise.neftune_alpha = c.neftune_alpha;
          noise.lora_dropout = lora_dropout;
          model.set_train_noise(std::move(noise));
        }
        const std::span<const float> w = per_sequence ? std::span<const float>(weights[i]) : std::span<const float>();
        loss += model.forward({b.B * b.T, b.tokens, b.targets, b.positions, b.cu_seqlens, w}, loss_norm);
        model.backward();
      }
    }
    loss = comm.sum(loss);  // in rank order: np=2 x accum 1 adds the same two numbers as np=1 x accum 2
    // The gradient hook: the place where data parallelism all-reduces each trainable group's
    // gradients, between the last backward and the step (one process: the hook given, if any).
    for (auto& g : model.optimizer().groups()) {
      if (!g.layout.trainable) continue;
      dp.reduce_gradients(g.grads.data(), g.layout.size);
      if (hooks.on_gradients) hooks.on_gradients(g.layout.name, g.grads.data(), g.layout.size, B::kind);
    }
    // The step: the global gradient norm across the groups, one clip factor, AdamW per group. The
    // loss is the global one, so every rank takes the same decision.
    const double norm = std::isfinite(loss) ? dp.step(lr) : NAN;
    ++step;
    tokens_seen += tokens;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      ++summary.skipped_steps;
      char buf[128];
      std::snprintf(buf, sizeof buf, "step %lld: non-finite %s, step skipped (%lld in a row)",
                    static_cast<long long>(step), std::isfinite(loss) ? "gradient" : "loss",
                    static_cast<long long>(bad_in_row + 1));
      progress.log(buf);
      IFT_CHECK(++bad_in_row < c.max_bad_steps, "training stopped: ", bad_in_row,
                " steps in a row had a non-finite loss or gradient (lower optimizer.lr, check the data)");
    } else {
      bad_in_row = 0;
      summary.last_loss = loss;
      window_loss += loss;
      ++window_steps;
    }
    window_tokens += tokens;

    const bool last = step == total_steps;
    const bool stopping = comm.any(stop && stop->load());  // a signal on any rank stops every rank
    char note[96];
    std::snprintf(note, sizeof note, "step %lld/%lld  loss %.4f  lr %.2e", static_cast<long long>(step),
                  static_cast<long long>(total_steps), loss, lr);
    progress.set_note(note);
    progress.update(step, total_steps, tokens_seen);
    if (step % c.log_every == 0 || last || stopping) {
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - window_start).count();
      json line = {{"step", step},
                   {"loss", window_steps ? window_loss / window_steps : NAN},
                   {"lr", lr},
                   {"grad_norm", norm},
                   {"tokens_per_s", secs > 0 ? window_tokens / secs : 0.0},
                   {"trained_tokens", trained},
                   {"elapsed_s", elapsed()}};
      if (comm.world() > 1) {  // what this rank sent per step since the last line
        line["comm_bytes_per_step"] = (comm.bytes_sent() - window_bytes_from) / std::max<int64_t>(1, window_steps);
        window_bytes_from = comm.bytes_sent();
      }
      if ((c.eval_every > 0 && step % c.eval_every == 0) || last) run_eval(step, line, progress);
      if (lead) append_line(metrics, line);
      window_loss = 0, window_steps = 0, window_tokens = 0, window_start = std::chrono::steady_clock::now();
    } else if (c.eval_every > 0 && step % c.eval_every == 0) {
      json line = {{"step", step}, {"lr", lr}, {"elapsed_s", elapsed()}};
      run_eval(step, line, progress);
      if (lead) append_line(metrics, line);
    }
    if (last || stopping) {
      save(step, elapsed());  // the run ends here: without this checkpoint its steps are lost
    } else if (c.save_every > 0 && step % c.save_every == 0) {
      try {
        save(step, elapsed());
      } catch (const Error& e) {
        if (c.on_save_error == "stop") throw;
        ++summary.failed_saves;
        progress.log(std::string("step ") + std::to_string(step) + ": " + e.what() +
                     "; training goes on (on_save_error: continue)");
      }
    }
    if (stopping && !last) {
      progress.log("interrupted: checkpoint saved at step " + std::to_string(step) + "; continue with --resume");
      summary.interrupted = true;
      break;
    }
  }
  progress.finish();
  comm.barrier();  // no rank leaves (and ends the job) before rank 0 has written its checkpoint
  summary.steps = step;
  return summary;
}

}  // namespace

TrainSummary train(const TrainConfig& c, bool resume, const std::atomic<bool>* stop, const TrainHooks& hooks) {
  if (c.threads > 0) omp_set_num_threads(c.threads);
  return with_backend(parse_backend(c.backend), parse_precision(c.precision),
                      [&]<class B>() { return train_on<B>(c, resume, stop, hooks); });
}

}  // namespace ift
