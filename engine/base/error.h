// The one error type of ift, and its check macros.
//
// Library code never exits: anything bad input can reach is reported by throwing ift::Error with a
// message a user can act on ("data/train.jsonl:17: field 'output' is missing"). Only tools/ prints
// and exits. Two tiers: IFT_CHECK is always on (user input, files, shapes); IFT_ASSERT is for
// internal invariants and compiles away in release builds.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ift {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds a message from any streamable parts: fail("tensor '", name, "' has shape ", shape).
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

}  // namespace ift

#define IFT_CHECK(cond, ...)                \
  do {                                      \
    if (!(cond)) ::ift::fail(__VA_ARGS__);  \
  } while (0)

#ifdef NDEBUG
#define IFT_ASSERT(cond) ((void)0)
#else
#define IFT_ASSERT(cond)                                                                        \
  do {                                                                                          \
    if (!(cond)) ::ift::fail(__FILE__, ":", __LINE__, ": internal invariant failed: ", #cond); \
  } while (0)
#endif
