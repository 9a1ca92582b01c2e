// simt_bench [rows] [cols] [workers]: speed of the SIMT emulator on a real kernel (softmax over
// rows, 256 threads per block, 2 block reductions: each CUDA thread passes 4 barriers and 10 shuffles), against
// the same softmax as a plain single-threaded loop, the ceiling an emulator can approach.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "kernels/simt/runtime.h"
#include "tests/kernels/simt_kernels.h"

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 4096;
  const int cols = argc > 2 ? std::atoi(argv[2]) : 1024;
  ift::simt::Options o = ift::simt::options();
  if (argc > 3) o.workers = std::atoi(argv[3]);
  ift::simt::set_options(o);
  std::vector<float> in(static_cast<size_t>(rows) * cols), out(in.size()), ref(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>((i * 2654435761u) % 1000) / 100.0f - 5.0f;

  using clock = std::chrono::steady_clock;
  ift::test::softmax_rows(in.data(), out.data(), std::min(rows, 16), cols, nullptr);  // warm up: fibers, pool
  const auto t0 = clock::now();
  const std::clock_t c0 = std::clock();
  ift::test::softmax_rows(in.data(), out.data(), rows, cols, nullptr);
  const double emu = std::chrono::duration<double>(clock::now() - t0).count();
  // CPU time of all threads: on a shared machine, wall time also counts other processes' turns.
  const double emu_cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;

  const auto t1 = clock::now();
  for (int r = 0; r < rows; ++r) {
    const float* x = &in[static_cast<size_t>(r) * cols];
    float* y = &ref[static_cast<size_t>(r) * cols];
    float m = -INFINITY, s = 0.0f;
    for (int j = 0; j < cols; ++j) m = std::max(m, x[j]);
    for (int j = 0; j < cols; ++j) s += std::exp(x[j] - m);
    for (int j = 0; j < cols; ++j) y[j] = std::exp(x[j] - m) / s;
  }
  const double loop = std::chrono::duration<double>(clock::now() - t1).count();

  double worst = 0;
  for (size_t i = 0; i < in.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(out[i] - ref[i])));
  const double bytes = 2.0 * sizeof(float) * in.size();
  const int workers = ift::simt::options().workers;
  std::printf("softmax %d x %d, 256 threads/block, %s workers\n", rows, cols, workers > 0 ? std::to_string(workers).c_str() : "all-core");
  std::printf("  emulated:   %8.3f s  %8.0f rows/s  %7.3f GB/s  (wall time)\n", emu, rows / emu, bytes / emu / 1e9);
  std::printf("              %8.3f s CPU: %.0f rows per CPU-second, %.0f ns per CUDA thread per barrier or shuffle\n", emu_cpu,
              rows / emu_cpu, emu_cpu / (rows * 256.0 * 14) * 1e9);
  std::printf("  plain loop: %8.3f s  %8.0f rows/s  %7.3f GB/s  (1 OS thread; the ceiling)\n", loop, rows / loop, bytes / loop / 1e9);
  std::printf("  max |emulated - loop| = %.3g\n", worst);
  return worst < 1e-5 ? 0 : 1;
}
