// `ift report RUN_DIR`: RUN_DIR/report.html, one self-contained page (inline SVG, no external
// assets) with the curves of metrics.jsonl (loss and eval loss, learning rate, gradient norm,
// tokens/s), the task scores of eval_tasks.json when present, the sample generations of
// samples.jsonl, and the config.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/base/io.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string num(double x) {
  char buf[32];
  if (x != 0 && (std::fabs(x) < 1e-2 || std::fabs(x) >= 1e5)) std::snprintf(buf, sizeof buf, "%.2e", x);
  else std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::exception& e) {
      fail(path.string(), ":", n, ": not valid JSON (", e.what(), ")");
    }
  }
  return out;
}

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;  // (step, value)
};

// The points of `key` in the metrics lines that have it as a finite number.
Series series(const std::vector<json>& metrics, const std::string& key, std::string name, std::string color) {
  Series s{std::move(name), std::move(color), {}};
  for (const json& m : metrics)
    if (m.contains(key) && m[key].is_number() && std::isfinite(m[key].get<double>()))
      s.points.push_back({m.at("step").get<double>(), m[key].get<double>()});
  return s;
}

// A line chart of several series sharing axes, as an inline SVG.
std::string chart(const std::string& title, const std::vector<Series>& all) {
  const double W = 460, H = 240, left = 62, right = 12, top = 28, bottom = 36;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : all)
    for (auto [x, y] : s.points) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  std::string svg = "<svg xmlns='http://www.w3.org/2000/svg' width='" + num(W) + "' height='" + num(H) + "'>";
  svg += "<text x='" + num(W / 2) + "' y='18' text-anchor='middle' font-weight='bold'>" + escape(title) + "</text>";
  if (!std::isfinite(x0)) return svg + "<text x='" + num(W / 2) + "' y='" + num(H / 2) + "' text-anchor='middle'>no data</text></svg>";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + std::max(1e-12, std::fabs(y0) * 0.1);
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom); };
  svg += "<rect x='" + num(left) + "' y='" + num(top) + "' width='" + num(W - left - right) + "' height='" +
         num(H - top - bottom) + "' fill='none' stroke='#bbb'/>";
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    svg += "<text x='" + num(left - 4) + "' y='" + num(py(y) + 4) + "' text-anchor='end' font-size='11'>" + num(y) + "</text>";
    svg += "<text x='" + num(px(x)) + "' y='" + num(H - bottom + 14) + "' text-anchor='middle' font-size='11'>" + num(x) + "</text>";
  }
  svg += "<text x='" + num((left + W - right) / 2) + "' y='" + num(H - 4) + "' text-anchor='middle' font-size='11'>step</text>";
  double legend_x = left + 6;
  for (const Series& s : all) {
    if (s.points.empty()) continue;
    std::string pts;
    for (auto [x, y] : s.points) pts += num(px(x)) + "," + num(py(y)) + " ";
    svg += "<polyline fill='none' stroke='" + s.color + "' stroke-width='1.5' points='" + pts + "'/>";
    if (s.points.size() == 1)
      svg += "<circle cx='" + num(px(s.points[0].first)) + "' cy='" + num(py(s.points[0].second)) + "' r='3' fill='" + s.color + "'/>";
    svg += "<text x='" + num(legend_x) + "' y='" + num(top + 14) + "' font-size='11' fill='" + s.color + "'>" + escape(s.name) + "</text>";
    legend_x += 8 * double(s.name.size()) + 16;
  }
  return svg + "</svg>";
}

std::string task_table(const json& r) {
  std::string h = "<table><tr><th>task</th><th>correct</th><th>exact match</th></tr>";
  auto row = [&](const std::string& name, const json& s) {
    h += "<tr><td>" + escape(name) + "</td><td>" + std::to_string(s.at("correct").get<int64_t>()) + "/" +
         std::to_string(s.at("total").get<int64_t>()) + "</td><td>" + num(100 * s.at("accuracy").get<double>()) + "%</td></tr>";
  };
  for (auto& [name, s] : r.at("tasks").items()) row(name, s);
  row("overall", r.at("overall"));
  h += "</table><h3>Examples</h3><table><tr><th>task</th><th>instruction</th><th>input</th><th>expected</th><th>answer</th></tr>";
  for (auto& [name, s] : r.at("tasks").items())
    for (const json& e : s.value("examples", json::array()))
      h += "<tr class='" + std::string(e.at("correct").get<bool>() ? "ok" : "bad") + "'><td>" + escape(name) + "</td><td>" +
           escape(e.at("instruction").get<std::string>()) + "</td><td>" + escape(e.at("input").get<std::string>()) +
           "</td><td>" + escape(e.at("expected").get<std::string>()) + "</td><td>" + escape(e.at("answer").get<std::string>()) +
           "</td></tr>";
  return h + "</table>";
}

}  // namespace

int report(Args args) {
  cli::Parser p("ift report", "Write RUN_DIR/report.html: training curves, task scores, sample generations, config.");
  p.positional("RUN_DIR", "a training run's out_dir (holds metrics.jsonl)", 1, 1);
  if (!p.parse(args)) return 0;
  const fs::path run(p.positionals()[0]);
  IFT_CHECK(fs::exists(run / "metrics.jsonl"), (run / "metrics.jsonl").string(), ": not found (is ", run.string(),
            " a training run's out_dir?)");
  const std::vector<json> metrics = read_jsonl(run / "metrics.jsonl");

  std::string html =
      "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ift report: " + escape(run.string()) +
      "</title><style>body{font-family:sans-serif;max-width:980px;margin:auto}svg{margin:4px}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
      "tr.bad td{background:#fee}pre{background:#f6f6f6;padding:8px;overflow:auto}</style></head><body>";
  html += "<h1>ift run " + escape(run.string()) + "</h1>";
  html += "<p>" + std::to_string(metrics.size()) + " metrics lines";
  if (!metrics.empty()) {
    const json& last = metrics.back();
    html += "; last step " + std::to_string(last.at("step").get<int64_t>());
    if (last.contains("elapsed_s")) html += " after " + num(last["elapsed_s"].get<double>()) + " s";
  }
  html += "</p><h2>Training</h2><div>";
  html += chart("loss per trained token", {series(metrics, "loss", "train", "#1f77b4"), series(metrics, "eval_loss", "eval", "#d62728")});
  html += chart("learning rate", {series(metrics, "lr", "lr", "#2ca02c")});
  html += chart("gradient norm (before clipping)", {series(metrics, "grad_norm", "grad norm", "#9467bd")});
  html += chart("throughput (tokens/s)", {series(metrics, "tokens_per_s", "tokens/s", "#ff7f0e")});
  html += "</div>";
  if (fs::exists(run / "eval_tasks.json")) {
    html += "<h2>Instruction following (exact match, held-out phrasings)</h2>";
    html += task_table(json::parse(read_text(run / "eval_tasks.json")));
  }
  if (fs::exists(run / "samples.jsonl")) {
    html += "<h2>Sample generations</h2><table><tr><th>step</th><th>prompt</th><th>output</th></tr>";
    for (const json& s : read_jsonl(run / "samples.jsonl"))
      html += "<tr><td>" + std::to_string(s.at("step").get<int64_t>()) + "</td><td>" + escape(s.at("prompt").get<std::string>()) +
              "</td><td>" + escape(s.at("output").get<std::string>()) + "</td></tr>";
    html += "</table>";
  }
  if (fs::exists(run / "config.yaml")) html += "<h2>Config</h2><pre>" + escape(read_text(run / "config.yaml")) + "</pre>";
  html += "</body></html>\n";
  write_text_atomically(run / "report.html", html);
  std::printf("wrote %s\n", (run / "report.html").c_str());
  return 0;
}

}  // namespace ift::cmd
