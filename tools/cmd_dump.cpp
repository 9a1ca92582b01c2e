#include "tools/commands.h"
#include "engine/error.h"
namespace ift::cmd {
int dump(Args) { fail("not implemented yet"); }
}
