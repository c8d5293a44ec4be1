// The evaluate pass: runs the model as imported (the float reference) and the
// model at this point of the pipeline (the variant) on the same samples of a
// dataset, with the build's executor, and measures each output of the variant
// against the reference's (qforge/fidelity.h): cosine, SQNR in dB, max
// absolute error, argmax agreement. Sums are accumulated sample by sample, so
// memory does not grow with the number of samples.
//
// It produces a `fidelity/1` Table and changes no model: the target's
// artifact stays the variant. Its metrics land in the report through
// PassResult::metrics: the worst over the outputs as `cosine`, `sqnr_db`,
// `max_abs_err`, `argmax_agreement`, and each output's as `cosine[<output>]`
// and so on (report.cc shows those as a per-output breakdown).
#pragma once

#include "qforge/pass.h"

namespace qforge::passes {

constexpr const char* kFidelitySchema = "fidelity/1";

PassInfo evaluate_pass_info();

}  // namespace qforge::passes
