// Typed reads of pass options and schema entries, shared by the ONNX
// quantization passes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qforge/pass.h"
#include "qforge/value.h"

namespace qforge::quant {

// ---------------------------------------------------------------- options
// Typed reads of validated pass options; throw Error naming the pass and
// option when a value has the wrong kind.
bool opt_bool(const Options& o, const std::string& pass, const std::string& name, bool dflt);
int64_t opt_int(const Options& o, const std::string& pass, const std::string& name, int64_t dflt);
std::string opt_string(const Options& o, const std::string& pass, const std::string& name,
                       const std::string& dflt);
std::vector<std::string> opt_list(const Options& o, const std::string& pass, const std::string& name,
                                  std::vector<std::string> dflt);
bool opt_has(const Options& o, const std::string& name);
// "manifest.toml:12:5: " when the option's value came from a file, else "".
std::string opt_where(const Options& o, const std::string& name);

// An entry of a pass's option schema (PassInfo::options).
OptionSpec option_spec(std::string name, OptType type, std::string help, Value dflt = {},
                       std::vector<std::string> choices = {});
// A Value of kind List holding `items` as strings.
Value string_list(const std::vector<std::string>& items);

// Constraints on a schema entry, checked at plan time (OptionSpec).
OptionSpec int_choices(OptionSpec s, std::vector<int64_t> choices);
OptionSpec at_least(OptionSpec s, double min);
OptionSpec in_range(OptionSpec s, double min, double max);

// A PassInfo::validate hook from `check`, which lists the problems of an
// option combination and may throw (a wrong kind of value, which the schema
// check reports anyway): the hook never throws, an exception becomes a
// problem of the step as a whole.
std::function<std::vector<OptionProblem>(const Options&)> validate_hook(
    std::function<std::vector<OptionProblem>(const Options&)> check);

// Throws the first of `problems` as an Error located at its option
// ("file:line:col: option 'x' ..."): the run-time twin of the plan-time
// validate hook, so that both say the same.
void throw_first_problem(const Options& o, const std::vector<OptionProblem>& problems);

}  // namespace qforge::quant
