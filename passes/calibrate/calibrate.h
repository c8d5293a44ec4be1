// The calibrate pass: runs the model over a dataset with the build's executor
// and turns every float activation it observes into a range (a `ranges/1`
// Table, passes/common/range_table.h) with minmax, moving-average minmax,
// percentile, entropy (KL) or mse. Activations are folded into fixed-size
// collectors as they stream by (passes/calibrate/collector.h): memory does not
// grow with the number of samples. With `channel_stats` (the default) it
// also records per-channel min, max and mean of the values that feed or
// leave Conv, ConvTranspose, Gemm and MatMul nodes (collector.h,
// ChannelCollector), which bias correction, cross-layer equalization and
// smooth-quant read.
#pragma once

#include "qforge/pass.h"

namespace qforge::passes {
PassInfo calibrate_pass_info();
}
