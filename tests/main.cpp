// Catch2 main for every test binary. A run whose test spec matches no test case fails (exit 2), as
// `--warn NoTests` makes it: Catch's default counts it a success, and ctest registers a test case
// by its name, so a name ctest cannot pass through intact (CMake cuts it at a ';') would otherwise
// pass without running anything.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  Catch::ConfigData& config = session.configData();
  config.warnings = static_cast<Catch::WarnAbout::What>(config.warnings | Catch::WarnAbout::NoTests);
  return session.run();
}
