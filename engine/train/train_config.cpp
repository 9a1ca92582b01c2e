#include "engine/train/train_config.h"

#include <cmath>
#include <map>
#include <numbers>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "engine/base/error.h"
#include "engine/base/io.h"

namespace ift {

namespace {

// A YAML map whose keys are read one by one; finish() rejects every key nobody asked for.
class Section {
 public:
  Section(YAML::Node node, std::string path, std::string where)
      : node_(std::move(node)), path_(std::move(path)), where_(std::move(where)) {
    IFT_CHECK(!node_ || node_.IsNull() || node_.IsMap(), where_, ": '", path_, "' must be a map of keys");
  }

  bool has(const std::string& key) {
    known_.insert(key);
    return node_ && node_.IsMap() && node_[key] && !node_[key].IsNull();
  }

  template <class T>
  T get(const std::string& key, T fallback) {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    try {
      IFT_CHECK(v.IsScalar(), where_, ": '", name(key), "' must be a single value");
      return v.as<T>();
    } catch (const YAML::Exception&) {
      fail(where_, ": '", name(key), "' must be ", kind<T>(), ", got '", v.Scalar(), "'");
    }
  }

  std::vector<std::string> strings(const std::string& key) {
    if (!has(key)) return {};
    const YAML::Node v = node_[key];
    if (v.IsScalar()) return {v.as<std::string>()};
    IFT_CHECK(v.IsSequence(), where_, ": '", name(key), "' must be a string or a list of strings");
    std::vector<std::string> out;
    for (const YAML::Node& e : v) {
      IFT_CHECK(e.IsScalar(), where_, ": '", name(key), "' must hold strings only");
      out.push_back(e.as<std::string>());
    }
    return out;
  }

  Section sub(const std::string& key) {
    known_.insert(key);
    return Section(node_ && node_.IsMap() ? node_[key] : YAML::Node(), name(key), where_);
  }
  YAML::Node raw(const std::string& key) {
    known_.insert(key);
    return node_ && node_.IsMap() ? node_[key] : YAML::Node();
  }

  void finish() const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      IFT_CHECK(known_.count(key), where_, ": unknown key '", name(key), "' (see docs/training.md for the fields)");
    }
  }

  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& where() const { return where_; }

 private:
  template <class T>
  static const char* kind() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a string";
  }

  YAML::Node node_;
  std::string path_, where_;
  std::set<std::string> known_;
};

// YAML -> JSON for model.init (a config.json written as YAML): integers stay integers.
nlohmann::json to_json(const YAML::Node& n, const std::string& where, const std::string& path) {
  if (!n || n.IsNull()) return nullptr;
  if (n.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& kv : n) {
      const std::string k = kv.first.as<std::string>();
      j[k] = to_json(kv.second, where, path + "." + k);
    }
    return j;
  }
  if (n.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (const YAML::Node& e : n) j.push_back(to_json(e, where, path));
    return j;
  }
  const std::string s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: a string whatever it looks like
  int64_t i;
  double d;
  bool b;
  if (YAML::convert<int64_t>::decode(n, i)) return i;
  if (YAML::convert<double>::decode(n, d)) return d;
  if (YAML::convert<bool>::decode(n, b)) return b;
  return s;
}

void apply_override(YAML::Node& root, const std::string& assignment, const std::string& where) {
  const auto eq = assignment.find('=');
  IFT_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment, "': expected key=value (e.g. optimizer.lr=1e-4)");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("--set '", assignment, "': the value is not valid YAML (", e.what(), ")");
  }
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  // Walk down with fresh handles (yaml-cpp nodes alias on assignment), creating maps as needed.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = chain.back()[parts[i]];
    IFT_CHECK(!child.IsDefined() || child.IsNull() || child.IsMap(), "--set '", assignment, "': '", parts[i],
              "' is not a map in ", where);
    chain.push_back(child);
  }
  chain.back()[parts.back()] = value;
}

}  // namespace

TrainConfig TrainConfig::parse(const std::string& yaml_text, const std::string& where,
                               const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    fail(where, ":", e.mark.line + 1, ": not valid YAML (", e.msg, ")");
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  for (const std::string& o : overrides) apply_override(root, o, where);

  TrainConfig c;
  Section top(root, "", where);
  c.out_dir = top.get<std::string>("out_dir", c.out_dir);
  c.seed = top.get<uint64_t>("seed", c.seed);
  c.backend = top.get<std::string>("backend", c.backend);
  c.precision = top.get<std::string>("precision", c.precision);
  c.attention = top.get<std::string>("attention", c.attention);
  c.recompute = top.get<bool>("recompute", c.recompute);
  c.threads = top.get<int>("threads", c.threads);

  Section loss = top.sub("loss");
  if (loss.has("fused")) c.fused_ce = loss.get<bool>("fused", false);
  c.loss = loss.get<std::string>("average", c.loss);
  loss.finish();

  Section model = top.sub("model");
  c.model_path = model.get<std::string>("path", "");
  if (model.has("init")) c.model_init = to_json(model.raw("init"), where, "model.init");
  model.finish();
  c.tokenizer = top.get<std::string>("tokenizer", c.model_path);

  Section data = top.sub("data");
  c.data.train = data.strings("train");
  c.data.eval = data.strings("eval");
  c.data.format = data.get<std::string>("format", c.data.format);
  c.data.tmpl = data.get<std::string>("template", c.data.tmpl);
  c.data.mask = data.get<std::string>("mask", c.data.mask);
  c.data.pack = data.get<std::string>("pack", c.data.pack);
  c.data.on_long = data.get<std::string>("on_long", c.data.on_long);
  c.data.on_bad = data.get<std::string>("on_bad", c.data.on_bad);
  c.data.train_on_eos = data.get<std::string>("train_on_eos", c.data.train_on_eos);
  c.data.val_split = data.get<double>("val_split", c.data.val_split);
  for (const std::string& w : data.strings("weights")) {
    try {
      c.data.weights.push_back(std::stod(w));
    } catch (const std::exception&) {
      fail(where, ": 'data.weights' must hold numbers, got '", w, "'");
    }
  }
  data.finish();

  c.seq_len = top.get<int>("seq_len", c.seq_len);
  c.micro_batch = top.get<int>("micro_batch", c.micro_batch);
  c.grad_accum = top.get<int>("grad_accum", c.grad_accum);
  c.max_steps = top.get<int64_t>("max_steps", c.max_steps);
  c.epochs = top.get<double>("epochs", c.epochs);

  Section opt = top.sub("optimizer");
  c.lr = opt.get<float>("lr", c.lr);
  c.adamw.beta1 = opt.get<float>("beta1", 0.9f);
  c.adamw.beta2 = opt.get<float>("beta2", 0.95f);
  c.adamw.eps = opt.get<float>("eps", 1e-8f);
  c.adamw.weight_decay = opt.get<float>("weight_decay", 0.1f);
  c.adamw.decay_embeddings = opt.get<bool>("decay_embeddings", true);
  c.adamw.max_grad_norm = opt.get<float>("max_grad_norm", 1.0f);
  opt.finish();

  Section dist = top.sub("distributed");
  c.distributed.zero = dist.get<int>("zero", c.distributed.zero);
  c.distributed.timeout_s = dist.get<double>("timeout_s", c.distributed.timeout_s);
  dist.finish();

  Section sched = top.sub("schedule");
  c.schedule.warmup_steps = sched.get<int64_t>("warmup_steps", 0);
  c.schedule.decay = sched.get<std::string>("decay", c.schedule.decay);
  c.schedule.min_lr = sched.get<float>("min_lr", 0.0f);
  c.schedule.warmup_ratio = sched.get<double>("warmup_ratio", 0.0);
  sched.finish();
  c.residual_dropout = top.get<float>("residual_dropout", c.residual_dropout);
  c.residual_dropout_schedule = top.get<std::string>("residual_dropout_schedule", c.residual_dropout_schedule);
  c.neftune_alpha = top.get<float>("neftune_alpha", c.neftune_alpha);

  c.log_every = top.get<int64_t>("log_every", c.log_every);
  c.eval_every = top.get<int64_t>("eval_every", c.eval_every);
  c.eval_batches = top.get<int64_t>("eval_batches", c.eval_batches);
  c.save_every = top.get<int64_t>("save_every", c.save_every);
  c.keep_last = top.get<int>("keep_last", c.keep_last);
  c.on_save_error = top.get<std::string>("on_save_error", c.on_save_error);
  c.sample_prompts = top.strings("sample_prompts");
  c.sample_max_tokens = top.get<int>("sample_max_tokens", c.sample_max_tokens);
  c.max_bad_steps = top.get<int>("max_bad_steps", c.max_bad_steps);
  if (top.has("lora")) {
    Section lora = top.sub("lora");
    c.lora.r = lora.get<int>("r", 8);
    c.lora.alpha = lora.get<double>("alpha", 16.0);
    c.lora.dropout = lora.get<double>("dropout", 0.0);
    c.lora.targets = lora.strings("targets");
    c.lora.rslora = lora.get<bool>("rslora", false);
    c.lora.quantize = lora.get<std::string>("quantize", "none");
    lora.finish();
  }
  top.finish();

  // Values no run could use.
  auto check = [&](bool ok, const char* key, const auto&... why) { IFT_CHECK(ok, where, ": '", key, "' ", why...); };
  check(c.model_path.empty() != c.model_init.is_null(), "model",
        "needs exactly one of 'path' (fine-tune) or 'init' (train from scratch)");
  check(c.model_init.is_null() || c.model_init.is_object(), "model.init", "must be a map of config.json fields");
  check(!c.tokenizer.empty(), "tokenizer", "is required when training from scratch");
  check(!c.data.train.empty(), "data.train", "is required");
  check(c.backend == "cpu" || c.backend == "emu" || c.backend == "cuda", "backend", "must be cpu, emu or cuda (got '",
        c.backend, "')");
  check(c.precision == "fp32" || c.precision == "bf16", "precision", "must be fp32 or bf16 (got '", c.precision, "')");
  check(c.backend != "cpu" || c.precision == "fp32", "precision", "must be fp32 on the cpu backend (bf16 runs on emu "
        "or cuda)");
  check(c.attention == "ift" || c.attention == "cudnn", "attention", "must be ift or cudnn (got '", c.attention, "')");
  // The head dim, and whether this build has cuDNN at all, are checked when the model is made
  // (check_attention_path, engine/backend.h): the config parser links no engine (tests/fuzz).
  if (c.attention == "cudnn") {
    check(c.backend == "cuda", "attention", "cudnn runs on backend cuda only (backend is ", c.backend, ")");
    check(c.precision == "bf16", "attention", "cudnn runs in precision bf16 only (precision is ", c.precision, ")");
  }
  check(c.threads >= 0, "threads", "must be >= 0");
  check(c.distributed.zero == 0 || c.distributed.zero == 1, "distributed.zero", "must be 0 or 1");
  check(c.distributed.timeout_s > 0, "distributed.timeout_s", "must be positive");
  check(c.seq_len >= 2, "seq_len", "must be at least 2");
  check(c.micro_batch >= 1, "micro_batch", "must be at least 1");
  check(c.grad_accum >= 1, "grad_accum", "must be at least 1");
  check(c.max_steps >= 0, "max_steps", "must be >= 0");
  check(c.max_steps > 0 || c.epochs > 0, "epochs", "must be positive when max_steps is 0");
  check(c.lr > 0 && std::isfinite(c.lr), "optimizer.lr", "must be positive");
  check(c.adamw.beta1 >= 0 && c.adamw.beta1 < 1, "optimizer.beta1", "must be in [0, 1)");
  check(c.adamw.beta2 >= 0 && c.adamw.beta2 < 1, "optimizer.beta2", "must be in [0, 1)");
  check(c.adamw.eps > 0, "optimizer.eps", "must be positive");
  check(c.adamw.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0");
  check(c.schedule.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0");
  check(c.schedule.decay == "cosine" || c.schedule.decay == "linear" || c.schedule.decay == "constant",
        "schedule.decay", "must be cosine, linear or constant (got '", c.schedule.decay, "')");
  check(c.schedule.min_lr >= 0 && c.schedule.min_lr <= c.lr, "schedule.min_lr", "must be in [0, optimizer.lr]");
  check(c.schedule.warmup_ratio >= 0 && c.schedule.warmup_ratio < 1, "schedule.warmup_ratio", "must be in [0, 1)");
  check(c.schedule.warmup_ratio == 0 || c.schedule.warmup_steps == 0, "schedule.warmup_ratio",
        "and schedule.warmup_steps cannot both be set");
  check(c.data.train_on_eos == "all" || c.data.train_on_eos == "last" || c.data.train_on_eos == "none",
        "data.train_on_eos", "must be all, last or none (got '", c.data.train_on_eos, "')");
  check(c.data.weights.empty() || c.data.weights.size() == c.data.train.size(), "data.weights", "needs one weight per "
        "data.train file (", c.data.weights.size(), " weights for ", c.data.train.size(), " files)");
  for (double w : c.data.weights) check(w >= 0 && std::isfinite(w), "data.weights", "must be >= 0 (got ", w, ")");
  check(c.data.val_split >= 0 && c.data.val_split < 1, "data.val_split", "must be in [0, 1)");
  check(c.data.val_split == 0 || c.data.eval.empty(), "data.val_split", "and data.eval cannot both be set");
  check(c.loss == "token" || c.loss == "sequence", "loss.average", "must be token or sequence (got '", c.loss, "')");
  check(c.residual_dropout >= 0 && c.residual_dropout < 1, "residual_dropout", "must be in [0, 1)");
  check(c.residual_dropout_schedule == "linear" || c.residual_dropout_schedule == "constant",
        "residual_dropout_schedule", "must be linear or constant (got '", c.residual_dropout_schedule, "')");
  check(c.neftune_alpha >= 0 && std::isfinite(c.neftune_alpha), "neftune_alpha", "must be >= 0");
  check(c.log_every >= 1, "log_every", "must be at least 1");
  check(c.eval_every >= 0 && c.eval_batches >= 0 && c.save_every >= 0, "eval_every/eval_batches/save_every",
        "must be >= 0");
  check(c.keep_last >= 1, "keep_last", "must be at least 1");
  check(c.on_save_error == "stop" || c.on_save_error == "continue", "on_save_error", "must be stop or continue (got '",
        c.on_save_error, "')");
  check(c.sample_max_tokens >= 1, "sample_max_tokens", "must be at least 1");
  check(c.max_bad_steps >= 1, "max_bad_steps", "must be at least 1");
  check(!c.lora.enabled() || !c.model_path.empty(), "lora", "needs model.path (the frozen base to adapt)");
  check(c.lora.r >= 0, "lora.r", "must be >= 0");
  // The targets are checked against the model's family when the model is known (the trainer).
  return c;
}

TrainConfig TrainConfig::load(const std::filesystem::path& path, const std::vector<std::string>& overrides) {
  return parse(read_text(path), path.string(), overrides);
}

namespace {

void emit_json(YAML::Emitter& e, const nlohmann::json& j) {
  if (j.is_object()) {
    e << YAML::BeginMap;
    for (const auto& [k, v] : j.items()) {
      e << YAML::Key << k << YAML::Value;
      emit_json(e, v);
    }
    e << YAML::EndMap;
  } else if (j.is_array()) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const auto& v : j) emit_json(e, v);
    e << YAML::EndSeq;
  } else if (j.is_string()) {
    e << j.get<std::string>();
  } else if (j.is_boolean()) {
    e << j.get<bool>();
  } else if (j.is_number_integer()) {
    e << j.get<int64_t>();
  } else if (j.is_number()) {
    e << j.get<double>();
  } else {
    e << YAML::Null;
  }
}

}  // namespace

std::string TrainConfig::to_yaml() const {
  YAML::Emitter e;
  auto list = [&](const std::vector<std::string>& v) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : v) e << s;
    e << YAML::EndSeq;
  };
  e << YAML::BeginMap;
  e << YAML::Key << "out_dir" << YAML::Value << out_dir << YAML::Key << "seed" << YAML::Value << seed;
  e << YAML::Key << "backend" << YAML::Value << backend << YAML::Key << "precision" << YAML::Value << precision;
  e << YAML::Key << "attention" << YAML::Value << attention;
  e << YAML::Key << "recompute" << YAML::Value << recompute;
  e << YAML::Key << "threads" << YAML::Value << threads;
  e << YAML::Key << "loss" << YAML::Value << YAML::BeginMap << YAML::Key << "average" << YAML::Value << loss;
  if (fused_ce) e << YAML::Key << "fused" << YAML::Value << *fused_ce;
  e << YAML::EndMap;
  e << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  if (!model_path.empty()) e << YAML::Key << "path" << YAML::Value << model_path;
  if (!model_init.is_null()) {
    e << YAML::Key << "init" << YAML::Value;
    emit_json(e, model_init);
  }
  e << YAML::EndMap;
  e << YAML::Key << "tokenizer" << YAML::Value << tokenizer;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "train" << YAML::Value;
  list(data.train);
  e << YAML::Key << "eval" << YAML::Value;
  list(data.eval);
  e << YAML::Key << "format" << YAML::Value << data.format << YAML::Key << "template" << YAML::Value << data.tmpl;
  e << YAML::Key << "mask" << YAML::Value << data.mask << YAML::Key << "pack" << YAML::Value << data.pack;
  e << YAML::Key << "on_long" << YAML::Value << data.on_long << YAML::Key << "on_bad" << YAML::Value << data.on_bad;
  e << YAML::Key << "train_on_eos" << YAML::Value << data.train_on_eos;
  if (!data.weights.empty()) {
    e << YAML::Key << "weights" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (double w : data.weights) e << w;
    e << YAML::EndSeq;
  }
  e << YAML::Key << "val_split" << YAML::Value << data.val_split;
  e << YAML::EndMap;
  e << YAML::Key << "seq_len" << YAML::Value << seq_len << YAML::Key << "micro_batch" << YAML::Value << micro_batch;
  e << YAML::Key << "grad_accum" << YAML::Value << grad_accum << YAML::Key << "max_steps" << YAML::Value << max_steps;
  e << YAML::Key << "epochs" << YAML::Value << epochs;
  e << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "lr" << YAML::Value << lr << YAML::Key << "beta1" << YAML::Value << adamw.beta1;
  e << YAML::Key << "beta2" << YAML::Value << adamw.beta2 << YAML::Key << "eps" << YAML::Value << adamw.eps;
  e << YAML::Key << "weight_decay" << YAML::Value << adamw.weight_decay;
  e << YAML::Key << "decay_embeddings" << YAML::Value << adamw.decay_embeddings;
  e << YAML::Key << "max_grad_norm" << YAML::Value << adamw.max_grad_norm << YAML::EndMap;
  e << YAML::Key << "schedule" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "warmup_steps" << YAML::Value << schedule.warmup_steps;
  e << YAML::Key << "decay" << YAML::Value << schedule.decay << YAML::Key << "min_lr" << YAML::Value
    << schedule.min_lr << YAML::Key << "warmup_ratio" << YAML::Value << schedule.warmup_ratio << YAML::EndMap;
  e << YAML::Key << "residual_dropout" << YAML::Value << residual_dropout;
  e << YAML::Key << "residual_dropout_schedule" << YAML::Value << residual_dropout_schedule;
  e << YAML::Key << "neftune_alpha" << YAML::Value << neftune_alpha;
  e << YAML::Key << "log_every" << YAML::Value << log_every << YAML::Key << "eval_every" << YAML::Value
    << eval_every;
  e << YAML::Key << "eval_batches" << YAML::Value << eval_batches << YAML::Key << "save_every" << YAML::Value
    << save_every;
  e << YAML::Key << "keep_last" << YAML::Value << keep_last;
  e << YAML::Key << "on_save_error" << YAML::Value << on_save_error;
  e << YAML::Key << "sample_prompts" << YAML::Value;
  list(sample_prompts);
  e << YAML::Key << "sample_max_tokens" << YAML::Value << sample_max_tokens;
  if (lora.enabled()) {
    e << YAML::Key << "lora" << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "r" << YAML::Value << lora.r << YAML::Key << "alpha" << YAML::Value << lora.alpha;
    e << YAML::Key << "dropout" << YAML::Value << lora.dropout << YAML::Key << "targets" << YAML::Value;
    list(lora.targets);
    e << YAML::Key << "rslora" << YAML::Value << lora.rslora << YAML::Key << "quantize" << YAML::Value
      << lora.quantize << YAML::EndMap;
  }
  e << YAML::Key << "max_bad_steps" << YAML::Value << max_bad_steps;
  e << YAML::Key << "distributed" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "zero" << YAML::Value << distributed.zero << YAML::Key << "timeout_s" << YAML::Value
    << distributed.timeout_s << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

int64_t warmup_steps(const TrainConfig& c, int64_t total) {
  if (c.schedule.warmup_ratio > 0) return static_cast<int64_t>(std::ceil(c.schedule.warmup_ratio * double(total)));
  return c.schedule.warmup_steps;
}

std::vector<float> residual_dropout_per_layer(const TrainConfig& c, int n_layers) {
  if (c.residual_dropout == 0) return {};
  std::vector<float> p(size_t(n_layers), c.residual_dropout);
  if (c.residual_dropout_schedule == "linear" && n_layers > 1)
    for (int l = 0; l < n_layers; ++l)
      p[l] = static_cast<float>(double(c.residual_dropout) * l / (n_layers - 1));
  return p;
}

float learning_rate(const TrainConfig& c, int64_t step, int64_t total) {
  const int64_t warm = warmup_steps(c, total);
  if (step < warm) return c.lr * static_cast<float>(step + 1) / static_cast<float>(warm);
  if (c.schedule.decay == "constant") return c.lr;
  // As Hugging Face's schedulers: min_lr is reached just after the last step, not at it.
  const double progress = std::min(1.0, static_cast<double>(step - warm) / static_cast<double>(total - warm));
  const double shape = c.schedule.decay == "cosine" ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
  return static_cast<float>(c.schedule.min_lr + (c.lr - c.schedule.min_lr) * shape);
}

namespace {

void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else {
    YAML::Emitter e;
    e << YAML::Flow << n;
    out[prefix] = e.c_str();
  }
}

}  // namespace

std::vector<std::string> result_changing_differences(const std::string& saved_yaml, const std::string& current_yaml) {
  static const std::set<std::string> harmless = {"out_dir",       "log_every",      "eval_every",
                                                 "eval_batches",  "save_every",     "keep_last",
                                                 "on_save_error", "sample_prompts", "sample_max_tokens",
                                                 "threads",       "max_bad_steps",
                                                 // how the ranks share the work, not what is computed
                                                 "distributed.zero", "distributed.timeout_s"};
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(saved_yaml), "", a);
  flatten(YAML::Load(current_yaml), "", b);
  std::vector<std::string> out;
  for (const auto& [key, value] : b) {
    if (harmless.count(key)) continue;
    auto it = a.find(key);
    if (it == a.end() || it->second != value) out.push_back(key);
  }
  for (const auto& [key, value] : a)
    if (!harmless.count(key) && !b.count(key)) out.push_back(key);
  return out;
}

}  // namespace ift
