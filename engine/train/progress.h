// A one-line progress bar on a terminal stream, for long jobs (ift prepare, training):
//
//   prepare [##########..........]  52%  1.31M tok/s  ETA 0:00:12
//
// `done`/`total` measure the work (bytes, steps) and drive the bar and the ETA; `count` is what the
// rate is reported in (tokens). Redrawn at most 10 times a second; when the stream is not a
// terminal, only the final line is printed, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ift {

class Progress {
 public:
  Progress(std::string label, std::string rate_unit, std::FILE* out = stderr);
  void update(int64_t done, int64_t total, int64_t count);
  // A short status shown after the ETA ("loss 2.31 lr 3.0e-04").
  void set_note(std::string note) { note_ = std::move(note); }
  // Prints a whole line above the bar (the bar is redrawn below it on a terminal).
  void log(const std::string& line);
  void finish();  // draws the last state and ends the line; also called by the destructor
  ~Progress();

  // "1.31M", "532k", "17": the short form used for rates.
  static std::string human(double x);

 private:
  void draw(bool final);

  std::string label_, unit_, note_;
  std::FILE* out_;
  bool tty_;
  bool finished_ = false;
  int64_t done_ = 0, total_ = 0, count_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace ift
