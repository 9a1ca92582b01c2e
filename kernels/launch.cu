// The out-of-line part of the launch helper (kernels/launch.cuh) that host code calls.
#include "kernels/common.cuh"
#include "kernels/kernels.h"

IFT_KERNELS_BEGIN

void set_sync_after_launch(bool on) { sync_after_launch() = on; }

IFT_KERNELS_END
