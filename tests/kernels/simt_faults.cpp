// simt_faults <case>: runs one faulty kernel through the emulator, for tests that must watch the
// process from outside (it aborts, or a sanitizer reports and fails it). Prints "finished" when the
// kernel ran to the end.
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

namespace ift::test {
void fault_stack_overflow(int* out);
void fault_global_oob(const float* in, float* out, int n);
void fault_static_shared_oob(const float* in, float* out);
void fault_dynamic_shared_oob(const float* in, float* out);
void fault_reduction(bool racy, const float* in, float* out, int blocks);
void fault_shared(bool with_static, bool opt_in, size_t dynamic_bytes, float* out);
void fault_cp_async(bool racy, const float* in, float* out);
}  // namespace ift::test

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: simt_faults stack_overflow|global_oob|static_shared_oob|dynamic_shared_oob|racy_reduction|clean_reduction|"
                 "shared_over_48k|shared_static_over_48k|shared_opt_in|shared_static_opt_in|shared_opt_in_over_device|"
                 "racy_cp_async|clean_cp_async\n");
    return 2;
  }
  const char* which = argv[1];
  try {
    std::vector<float> in(64, 1.0f), out(64);
    std::vector<int> iout(64);
    if (std::strcmp(which, "stack_overflow") == 0) {
      ift::test::fault_stack_overflow(iout.data());
    } else if (std::strcmp(which, "global_oob") == 0) {
      std::vector<float> exact(32, 1.0f);
      ift::test::fault_global_oob(exact.data(), out.data(), 32);
    } else if (std::strcmp(which, "static_shared_oob") == 0) {
      ift::test::fault_static_shared_oob(in.data(), out.data());
    } else if (std::strcmp(which, "dynamic_shared_oob") == 0) {
      ift::test::fault_dynamic_shared_oob(in.data(), out.data());
    } else if (std::strcmp(which, "racy_reduction") == 0 || std::strcmp(which, "clean_reduction") == 0) {
      std::vector<float> big(2 * 128, 1.0f);
      ift::test::fault_reduction(which[0] == 'r', big.data(), out.data(), 2);
      std::printf("sums %g %g\n", out[0], out[1]);
    } else if (std::strcmp(which, "racy_cp_async") == 0 || std::strcmp(which, "clean_cp_async") == 0) {
      std::vector<float> big(128 * 4);
      for (size_t i = 0; i < big.size(); ++i) big[i] = float(i);
      std::vector<float> got(128);
      ift::test::fault_cp_async(which[0] == 'r', big.data(), got.data());
      std::printf("out[0] %g out[127] %g\n", got[0], got[127]);
    } else if (std::strcmp(which, "shared_over_48k") == 0) {
      ift::test::fault_shared(false, false, 48 * 1024 + 16, out.data());  // dynamic alone over the line
    } else if (std::strcmp(which, "shared_static_over_48k") == 0) {
      ift::test::fault_shared(true, false, 48 * 1024, out.data());  // norm.cu's old case: 48 KiB dynamic + static
    } else if (std::strcmp(which, "shared_opt_in") == 0 || std::strcmp(which, "shared_static_opt_in") == 0) {
      ift::test::fault_shared(which[7] == 's', true, 100 * 1024, out.data());
      std::printf("out[0] %g out[31] %g\n", out[0], out[31]);
    } else if (std::strcmp(which, "shared_opt_in_over_device") == 0) {
      ift::test::fault_shared(true, true, 227 * 1024, out.data());  // opt-in to the maximum, then static on top
    } else {
      std::fprintf(stderr, "simt_faults: unknown case '%s'\n", which);
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "simt_faults: %s\n", e.what());
    return 1;
  }
  std::printf("finished\n");
  return 0;
}
