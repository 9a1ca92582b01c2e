// The SIMT emulator against plain loops, and its checks against deliberately broken kernels.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_bf16.h>

#include "engine/base/error.h"
#include "kernels/simt/runtime.h"
#include "tests/kernels/simt_kernels.h"
#include "tests/support.h"

using ift::simt::Options;
using ift::simt::Schedule;
using ift::simt::ScopedOptions;

namespace {

Options with_schedule(Schedule s, uint64_t seed = 1) {
  Options o = ift::simt::options();
  o.schedule = s;
  o.seed = seed;
  return o;
}

const char* schedule_name(Schedule s) { return s == Schedule::forward ? "forward" : s == Schedule::reverse ? "reverse" : "random"; }

// The launch must throw ift::Error whose message holds every one of `parts`.
template <class F>
void require_launch_error(F&& launch, std::vector<std::string> parts) {
  std::string message;
  try {
    launch();
  } catch (const ift::Error& e) {
    message = e.what();
  }
  INFO("error message: " << message);
  REQUIRE(!message.empty());
  for (const auto& p : parts) CHECK(message.find(p) != std::string::npos);
}

// shfl.sync per the PTX ISA, as a plain loop over the lanes of one warp.
int shuffle_ref(ift::test::ShuffleKind kind, const int* warp, int lane, int arg, int width) {
  const int seg_start = lane & ~(width - 1), seg_end = seg_start + width - 1;
  int src = lane;
  switch (kind) {
    case ift::test::ShuffleKind::idx: src = seg_start + arg % width; break;
    case ift::test::ShuffleKind::up: src = lane - arg >= seg_start ? lane - arg : lane; break;
    case ift::test::ShuffleKind::down: src = lane + arg <= seg_end ? lane + arg : lane; break;
    case ift::test::ShuffleKind::xor_: src = (lane ^ arg) <= seg_end ? lane ^ arg : lane; break;
  }
  return warp[src];
}

}  // namespace

TEST_CASE("simt: built-in variables in 1, 2 and 3 dimensions", "[simt]") {
  const dim3 cases[][2] = {{dim3(3), dim3(64)}, {dim3(2, 3), dim3(8, 4)}, {dim3(2, 2, 3), dim3(4, 3, 5)}, {dim3(1), dim3(1)}, {dim3(5, 1, 2), dim3(33)}};
  for (const auto& c : cases) {
    const dim3 grid = c[0], block = c[1];
    const int nthreads = block.x * block.y * block.z, nblocks = grid.x * grid.y * grid.z;
    std::vector<int> out(12 * nthreads * nblocks, -1);
    for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
      ScopedOptions scope(with_schedule(s));
      ift::test::simt_write_indices(grid, block, out.data());
      int bad = 0;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx)
            for (unsigned tz = 0; tz < block.z; ++tz)
              for (unsigned ty = 0; ty < block.y; ++ty)
                for (unsigned tx = 0; tx < block.x; ++tx) {
                  const size_t b = bx + grid.x * (by + grid.y * bz), t = tx + block.x * (ty + block.y * tz);
                  const int* o = &out[12 * (b * nthreads + t)];
                  const unsigned want[12] = {tx, ty, tz, bx, by, bz, block.x, block.y, block.z, grid.x, grid.y, grid.z};
                  for (int k = 0; k < 12; ++k) bad += o[k] != static_cast<int>(want[k]);
                }
      INFO("grid (" << grid.x << "," << grid.y << "," << grid.z << ") block (" << block.x << "," << block.y << "," << block.z
                    << ") schedule " << schedule_name(s));
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("simt: shuffles with every width against the PTX rules", "[simt]") {
  using ift::test::ShuffleKind;
  const int block = 96, n = 3 * block;
  std::vector<int> in(n), out(n);
  for (int i = 0; i < n; ++i) in[i] = 1000 + i * 7;
  for (ShuffleKind kind : {ShuffleKind::idx, ShuffleKind::up, ShuffleKind::down, ShuffleKind::xor_}) {
    for (int width : {1, 2, 4, 8, 16, 32}) {
      for (int arg : {0, 1, 3, 5, 16, 31}) {
        ift::test::simt_shuffle(kind, in.data(), out.data(), n, block, arg, width);
        int bad = 0;
        for (int w = 0; w < n / 32; ++w)
          for (int lane = 0; lane < 32; ++lane) bad += out[32 * w + lane] != shuffle_ref(kind, &in[32 * w], lane, arg, width);
        INFO("kind " << static_cast<int>(kind) << " width " << width << " arg " << arg);
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("simt: ballot, any, all", "[simt]") {
  const int block = 64, n = 4 * block;
  std::vector<int> pred(n, 0);
  // warp 0: none; warp 1: all; warp 2: lanes 3, 17, 31; the rest: random
  for (int lane = 0; lane < 32; ++lane) pred[32 + lane] = 1;
  pred[64 + 3] = pred[64 + 17] = 5, pred[64 + 31] = -1;
  auto rnd = ift::test::random_vector<double>(n, 7);
  for (int i = 96; i < n; ++i) pred[i] = rnd[i] > 0;
  std::vector<unsigned> ballot(n);
  std::vector<int> any(n), all(n), popc(n), ffs(n);
  ift::test::simt_vote(pred.data(), ballot.data(), any.data(), all.data(), popc.data(), ffs.data(), n, block);
  for (int w = 0; w < n / 32; ++w) {
    unsigned want = 0;
    for (int lane = 0; lane < 32; ++lane) want |= (pred[32 * w + lane] != 0 ? 1u : 0u) << lane;
    for (int lane = 0; lane < 32; ++lane) {
      const int i = 32 * w + lane;
      INFO("warp " << w << " lane " << lane);
      CHECK(ballot[i] == want);
      CHECK(any[i] == (want != 0));
      CHECK(all[i] == (want == 0xffffffffu));
      CHECK(popc[i] == std::popcount(want));
      CHECK(ffs[i] == (want == 0 ? 0 : std::countr_zero(want) + 1));
    }
  }
}

TEST_CASE("simt: block reductions for several block shapes", "[simt]") {
  const int blocks = 5;
  for (dim3 block : {dim3(32), dim3(96), dim3(256), dim3(1024), dim3(32, 2, 2)}) {
    for (int per_block : {1, 97, 1025}) {
      const auto in = ift::test::random_vector<float>(static_cast<size_t>(blocks) * per_block, 11 + per_block);
      std::vector<float> sums(blocks), maxes(blocks), want_sums(blocks), want_maxes(blocks);
      ift::test::simt_block_reduce(in.data(), sums.data(), maxes.data(), per_block, blocks, block);
      for (int b = 0; b < blocks; ++b) {
        double s = 0;
        float m = -INFINITY;
        for (int j = 0; j < per_block; ++j) s += in[b * per_block + j], m = std::max(m, in[b * per_block + j]);
        want_sums[b] = static_cast<float>(s);
        want_maxes[b] = m;
      }
      INFO("block " << block.x << "x" << block.y << "x" << block.z << ", " << per_block << " values per block");
      ift::test::require_close("sums", sums, want_sums, 1e-5, 1e-5);
      CHECK(maxes == want_maxes);
    }
  }
}

TEST_CASE("simt: atomics from many blocks on several OS threads", "[simt]") {
  const int n = 10000;
  std::vector<int> keys(n);
  std::vector<float> vals(n);
  const auto r = ift::test::random_vector<double>(n, 3, 0.0, 1.0);
  for (int i = 0; i < n; ++i) keys[i] = (i * 7 + 3) % 13, vals[i] = static_cast<float>(r[i]);  // keys 0..12, bins 13..15 stay empty
  std::vector<float> sums(16, 0.0f);
  std::vector<int> counts(16, 0);
  int max_key = -1;
  float max_val = -1.0f;
  Options o = ift::simt::options();
  o.workers = 4;
  ScopedOptions scope(o);
  ift::test::simt_atomics(keys.data(), vals.data(), n, sums.data(), counts.data(), &max_key, &max_val);
  std::vector<double> want_sums(16, 0.0);
  std::vector<int> want_counts(16, 0);
  for (int i = 0; i < n; ++i) want_sums[keys[i]] += vals[i], ++want_counts[keys[i]];
  CHECK(counts == want_counts);
  ift::test::require_close("sums", sums, want_sums, 1e-3, 1e-5);  // fp32 accumulation in any order
  CHECK(max_key == 12);
  CHECK(max_val == *std::max_element(vals.begin(), vals.end()));
}

TEST_CASE("simt: dynamic shared memory", "[simt]") {
  for (int cols : {1, 63, 64, 1000}) {
    const int rows = 7;
    const auto in = ift::test::random_vector<float>(rows * cols, cols);
    std::vector<float> out(rows * cols), want(rows * cols);
    ift::test::simt_reverse_rows(in.data(), out.data(), rows, cols);
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < cols; ++j) want[r * cols + j] = in[r * cols + cols - 1 - j];
    INFO("cols " << cols);
    CHECK(out == want);
  }
}

TEST_CASE("simt: math intrinsics and bf16 conversions", "[simt]") {
  std::vector<float> in = ift::test::random_vector<float>(100, 5, -4.0, 4.0);
  in.push_back(-0.0f);
  in.push_back(1e-40f);  // a denormal
  in.push_back(2.0f);
  in.push_back(NAN);
  const int n = static_cast<int>(in.size());
  std::vector<float> out(14 * n);
  ift::test::simt_math(in.data(), out.data(), n);
  for (int i = 0; i < n; ++i) {
    const float x = in[i];
    const float* o = &out[14 * i];
    // bf16: round to nearest even, by hand
    uint32_t bits = std::bit_cast<uint32_t>(x);
    bits = std::isnan(x) ? 0x7fc00000u : (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    const float want[14] = {std::exp(x), 1.0f / std::sqrt(std::fabs(x) + 1.0f), x / 3.0f, 1.0f / (x + 10.0f), std::tanh(x),
                            std::bit_cast<float>(bits), std::bit_cast<float>(bits), std::log(std::fabs(x) + 1.0f),
                            std::pow(std::fabs(x), 1.5f), std::sin(x) + std::cos(x), std::sqrt(std::fabs(x)), std::fma(x, 2.0f, 1.0f),
                            std::isnan(x) ? 0.0f : std::clamp(x, 0.0f, 1.0f), x};
    for (int k = 0; k < 14; ++k) {
      INFO("input " << x << " result " << k);
      if (std::isnan(want[k])) CHECK(std::isnan(o[k]));
      else CHECK(std::bit_cast<uint32_t>(o[k]) == std::bit_cast<uint32_t>(want[k]));
    }
  }
}

TEST_CASE("simt: every schedule order gives the same results for a correct kernel", "[simt]") {
  const int block = 128, n = 4 * block;
  std::vector<int> in(n), out(n), want(n);
  for (int i = 0; i < n; ++i) in[i] = i * i % 1009;
  for (int i = 0; i < n; ++i) want[i] = in[i] + (i % block > 0 ? in[i - 1] : 0);
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
    for (uint64_t seed : {1, 2, 3}) {
      ScopedOptions scope(with_schedule(s, seed));
      std::fill(out.begin(), out.end(), -1);
      ift::test::simt_neighbour_sum(in.data(), out.data(), n, block, /*with_barrier=*/true);
      INFO("schedule " << schedule_name(s) << " seed " << seed);
      CHECK(out == want);
    }
  }
}

// ThreadSanitizer reports this race whatever the order (and fails the process): the TSan build
// checks it with simt_faults:racy_reduction instead.
#if !defined(IFT_SIMT_SANITIZE_THREAD)
TEST_CASE("simt: a missing barrier passes in forward order and fails in reverse and random order", "[simt]") {
  const int block = 128, n = 4 * block;
  std::vector<int> in(n), out(n), want(n);
  for (int i = 0; i < n; ++i) in[i] = i + 1;
  for (int i = 0; i < n; ++i) want[i] = in[i] + (i % block > 0 ? in[i - 1] : 0);
  {
    // Forward order runs thread t - 1 to completion before thread t: the race stays hidden.
    ScopedOptions scope(with_schedule(Schedule::forward));
    ift::test::simt_neighbour_sum(in.data(), out.data(), n, block, /*with_barrier=*/false);
    CHECK(out == want);
  }
  for (Schedule s : {Schedule::reverse, Schedule::random}) {
    ScopedOptions scope(with_schedule(s, 42));
    ift::test::simt_neighbour_sum(in.data(), out.data(), n, block, /*with_barrier=*/false);
    INFO("schedule " << schedule_name(s));
    CHECK(out != want);
  }
}
#endif

TEST_CASE("simt: divergent barrier is reported with both call sites", "[simt]") {
  std::vector<int> out(64);
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
    ScopedOptions scope(with_schedule(s));
    require_launch_error([&] { ift::test::simt_divergent_barrier(out.data()); },
                         {"divergent __syncthreads", "simt_kernels.cu", "divergent_barrier_kernel", "block (0,0,0)", "simt_divergent_barrier"});
  }
}

TEST_CASE("simt: a thread that exits before a barrier is reported (strict) or tolerated (lenient)", "[simt]") {
  std::vector<int> out(64, 0);
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
    ScopedOptions scope(with_schedule(s));
    require_launch_error([&] { ift::test::simt_exit_before_barrier(out.data()); }, {"exited", "__syncthreads", "exit_before_barrier_kernel"});
  }
  Options o = ift::simt::options();
  o.strict_exit = false;
  ScopedOptions scope(o);
  ift::test::simt_exit_before_barrier(out.data());
  CHECK(out[0] == 0);
  CHECK(std::count(out.begin(), out.end(), 1) == 63);
}

TEST_CASE("simt: shuffle mask mismatch is reported", "[simt]") {
  std::vector<int> out(32);
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
    ScopedOptions scope(with_schedule(s));
    INFO("schedule " << schedule_name(s));
    require_launch_error([&] { ift::test::simt_shuffle_mask_mismatch(out.data()); }, {"__shfl_xor_sync", "mask", "shuffle_mask_mismatch_kernel"});
  }
}

TEST_CASE("simt: a barrier and a shuffle waiting for each other are a deadlock", "[simt]") {
  std::vector<int> out(32);
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::random}) {
    ScopedOptions scope(with_schedule(s));
    require_launch_error([&] { ift::test::simt_barrier_in_warp_divergence(out.data()); }, {"deadlock", "__syncthreads", "__shfl_down_sync"});
  }
}

TEST_CASE("simt: a shuffle reading a lane outside its mask is reported", "[simt]") {
  std::vector<int> out(32);
  require_launch_error([&] { ift::test::simt_shuffle_outside_mask(out.data()); }, {"lane 3 reads lane 20", "not in the mask"});
}

TEST_CASE("simt: misaligned vector load is reported", "[simt]") {
  std::vector<float> in(64, 1.0f), out(32);
  require_launch_error([&] { ift::test::simt_misaligned_load(in.data() + (reinterpret_cast<uintptr_t>(in.data()) % 16 == 0 ? 0 : 3), out.data()); },
                       {"not 16-byte aligned", "block (0,0,0) thread ("});
}

TEST_CASE("simt: invalid launch configurations are reported, and launches work after errors", "[simt]") {
  std::vector<int> out(1024, 0);
  require_launch_error([&] { ift::test::simt_launch_block(2048, out.data()); }, {"invalid configuration", "1024 threads", "simt_launch_block"});
  require_launch_error([&] { ift::test::simt_launch_block(0, out.data()); }, {"invalid configuration"});
  require_launch_error([&] { ift::test::simt_divergent_barrier(out.data()); }, {"divergent"});
  ift::test::simt_launch_block(1024, out.data());
  CHECK(std::count(out.begin(), out.end(), 1) == 1024);
}

TEST_CASE("simt: softmax example against a plain loop", "[simt]") {
  for (int cols : {1, 97, 1025}) {
    const int rows = 9;
    const auto in = ift::test::random_vector<float>(rows * cols, cols, -5.0, 5.0);
    std::vector<float> out(rows * cols);
    std::vector<double> want(rows * cols);
    ift::test::softmax_rows(in.data(), out.data(), rows, cols, nullptr);
    for (int r = 0; r < rows; ++r) {
      double m = -INFINITY, s = 0;
      for (int j = 0; j < cols; ++j) m = std::max(m, double{in[r * cols + j]});
      for (int j = 0; j < cols; ++j) s += std::exp(in[r * cols + j] - m);
      for (int j = 0; j < cols; ++j) want[r * cols + j] = std::exp(in[r * cols + j] - m) / s;
    }
    INFO("cols " << cols);
    ift::test::require_close("softmax", out, want, 1e-7, 1e-5);
  }
}
