// The `ift` subcommands. Each lives in its own tools/cmd_<name>.cpp, takes the arguments after its
// name, returns the process exit code, and may throw ift::Error (main prints it and exits 1).
#pragma once

#include <span>

namespace ift::cmd {

using Args = std::span<char* const>;

int dump(Args args);

}  // namespace ift::cmd
