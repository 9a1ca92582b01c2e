#include "engine/base/io.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <system_error>

#include "engine/base/error.h"

namespace ift {

void write_text_atomically(const std::filesystem::path& path, std::string_view text) {
  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    IFT_CHECK(out, tmp.string(), ": cannot create");
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    IFT_CHECK(out, tmp.string(), ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  IFT_CHECK(!ec, "cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message());
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path.string(), ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace ift
