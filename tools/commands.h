// The `ift` subcommands. Each lives in its own tools/cmd_<name>.cpp, takes the arguments after its
// name, returns the process exit code, and may throw ift::Error (main prints it and exits 1).
#pragma once

#include <span>

namespace ift::cmd {

using Args = std::span<char* const>;

int bench(Args args);
int bench_kernels(Args args);  // `ift bench kernels` (tools/cmd_bench_kernels.cpp)
int chat(Args args);
int dump(Args args);
int eval(Args args);
int export_model(Args args);  // `ift export` (tools/cmd_export.cpp)
int generate(Args args);
int info(Args args);
int inspect(Args args);
int train(Args args);
int prepare(Args args);
int report(Args args);
int synth(Args args);
int tokenize(Args args);
int tokenizer(Args args);

}  // namespace ift::cmd
