#include "engine/train/progress.h"

#include <algorithm>

#include <unistd.h>

namespace ift {

Progress::Progress(std::string label, std::string rate_unit, std::FILE* out)
    : label_(std::move(label)), unit_(std::move(rate_unit)), out_(out), tty_(::isatty(::fileno(out)) != 0) {
  start_ = std::chrono::steady_clock::now();
  last_draw_ = start_ - std::chrono::seconds(1);
}

Progress::~Progress() { finish(); }

std::string Progress::human(double x) {
  char buf[32];
  if (x >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", x / 1e9);
  else if (x >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", x / 1e6);
  else if (x >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", x / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", x);
  return buf;
}

void Progress::update(int64_t done, int64_t total, int64_t count) {
  done_ = done;
  total_ = total;
  count_ = count;
  const auto now = std::chrono::steady_clock::now();
  if (tty_ && now - last_draw_ >= std::chrono::milliseconds(100)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::log(const std::string& line) {
  std::fprintf(out_, "%s%s\n", tty_ ? "\r\033[K" : "", line.c_str());
  if (tty_ && !finished_) draw(false);
  std::fflush(out_);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 0.0;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '#');
  bar.append(kWidth - filled, '.');
  const double rate = elapsed > 0 ? static_cast<double>(count_) / elapsed : 0.0;
  char eta[32] = "--:--:--";
  const double left = final ? elapsed : (frac > 0 ? elapsed * (1 - frac) / frac : -1);
  if (left >= 0) {
    const auto s = static_cast<int64_t>(left + 0.5);
    std::snprintf(eta, sizeof eta, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  }
  std::fprintf(out_, "%s%s [%s] %3d%%  %s %s/s  %s %s%s%s%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(),
               static_cast<int>(frac * 100 + 0.5), human(rate).c_str(), unit_.c_str(), final ? "took" : "ETA", eta,
               note_.empty() ? "" : "  ", note_.c_str(), tty_ ? "\033[K" : "");
  if (final) std::fputc('\n', out_);
  std::fflush(out_);
}

}  // namespace ift
