# Builds plugins/safetensors out of tree against the installed SDK (warnings are
# errors), then uses it through a manifest's [plugins] paths:
#   1. a safetensors model made by tests/tools/safetensors_files.py (F16, BF16,
#      F32; llama.cpp names; typed llama.* metadata) -> quantize-gguf Q8_0 -> GGUF,
#      which `qforge inspect` loads;
#   2. GGUF -> safetensors (F32, and F16 after quantize-gguf type = "F16") and
#      back to GGUF: the same bytes as the GGUF it came from; the Python model
#      through GGUF and back: the same tensor bytes;
#   3. every emitted file read again by Python (json + numpy, and the
#      `safetensors` package when the interpreter has it);
#   4. a quantized type cannot be emitted (the error names the tensor and what to
#      do), and hostile files make `qforge inspect` exit 1 with an error naming the
#      file.
# -DSOURCE_DIR -DBINARY_DIR -DQFORGE_BIN -DPYTHON
set(work ${BINARY_DIR}/safetensors-plugin-test)
file(REMOVE_RECURSE ${work})
file(MAKE_DIRECTORY ${work}/hostile)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(rc ${rc} PARENT_SCOPE)
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()
function(must)
  run(${ARGN})
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()
function(same_bytes a b what)
  file(SHA256 ${a} ha)
  file(SHA256 ${b} hb)
  if(NOT ha STREQUAL hb)
    message(FATAL_ERROR "${what}: ${a} and ${b} differ")
  endif()
endfunction()
set(tool ${SOURCE_DIR}/tests/tools/safetensors_files.py)
get_filename_component(bindir ${QFORGE_BIN} DIRECTORY)

# ---- the plugin, out of tree
must(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${work}/sdk)
must(${CMAKE_COMMAND} -S ${SOURCE_DIR}/plugins/safetensors -B ${work}/plugin -G Ninja -DCMAKE_BUILD_TYPE=Release
     -Dqforge_DIR=${work}/sdk/lib/cmake/qforge "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror")
must(${CMAKE_COMMAND} --build ${work}/plugin)
set(plugin ${work}/plugin/libqforge_safetensors.so)
must(${QFORGE_BIN} --plugin ${plugin} list plugins)
if(NOT out MATCHES "safetensors +1.0.0")
  message(FATAL_ERROR "the safetensors plugin is not listed with its version:\n${out}")
endif()
must(${QFORGE_BIN} --plugin ${plugin} list formats)
if(NOT out MATCHES "safetensors")
  message(FATAL_ERROR "the safetensors format is not listed:\n${out}")
endif()

# ---- inputs
must(${PYTHON} ${tool} tiny ${work}/tiny.safetensors)
must(${bindir}/make_tiny_llama ${work}/tiny.gguf)

# ---- 1 and 2: one build, the plugin named in the manifest
file(WRITE ${work}/qforge.toml "[plugins]\npaths = [\"plugin\"]\n"
  "[models.st]\npath = \"tiny.safetensors\"\n[models.gguf]\npath = \"tiny.gguf\"\n"
  "[[targets]]\nname = \"st-q8\"\nmodel = \"st\"\nemit = \"gguf\"\n"
  "pipeline = [ { pass = \"quantize-gguf\", type = \"Q8_0\", pure = true } ]\n"
  "[[targets]]\nname = \"st-gguf\"\nmodel = \"st\"\nemit = \"gguf\"\n"
  "[[targets]]\nname = \"gguf-st\"\nmodel = \"gguf\"\nemit = \"safetensors\"\n"
  "[[targets]]\nname = \"gguf-f16\"\nmodel = \"gguf\"\npipeline = [ { pass = \"quantize-gguf\", type = \"F16\" } ]\n"
  "[[targets]]\nname = \"gguf-f16-st\"\nmodel = \"gguf\"\nemit = \"safetensors\"\n"
  "pipeline = [ { pass = \"quantize-gguf\", type = \"F16\" } ]\n")
must(${QFORGE_BIN} build -f ${work}/qforge.toml)
set(dist ${work}/dist)

# 1: the quantized GGUF loads, its 2-D weights are q8_0, the metadata came through.
must(${QFORGE_BIN} inspect --json ${dist}/st-q8.gguf)
set(j "${out}")
string(JSON fmt GET "${j}" format)
string(JSON n GET "${j}" totals tensors)
if(NOT fmt STREQUAL "gguf" OR NOT n EQUAL 21)
  message(FATAL_ERROR "st-q8.gguf: expected a GGUF with 21 tensors, found ${fmt} with ${n}\n${j}")
endif()
set(q8 0)
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  string(JSON type GET "${j}" tensors ${i} type)
  string(JSON dims LENGTH "${j}" tensors ${i} shape)
  if(dims EQUAL 2 AND type STREQUAL "q8_0")
    math(EXPR q8 "${q8} + 1")
  elseif(dims EQUAL 2 OR NOT type STREQUAL "f32")
    string(JSON name GET "${j}" tensors ${i} name)
    message(FATAL_ERROR "st-q8.gguf: tensor ${name}: ${dims} dims, type ${type}\n${j}")
  endif()
endforeach()
if(NOT q8 EQUAL 16)
  message(FATAL_ERROR "st-q8.gguf: expected 16 q8_0 tensors, found ${q8}")
endif()
if(NOT j MATCHES "\"key\": \"general.architecture\"" OR NOT j MATCHES "\"key\": \"llama.block_count\",[^}]*\"type\": \"u32\"")
  message(FATAL_ERROR "st-q8.gguf: the safetensors metadata did not come through typed:\n${j}")
endif()

# 3: the emitted files, read independently.
must(${PYTHON} ${tool} verify ${dist}/gguf-st.safetensors --dtypes F32)
message(STATUS "${out}")
must(${PYTHON} ${tool} verify ${dist}/gguf-f16-st.safetensors --dtypes F16,F32)
message(STATUS "${out}")

# 2: back again, from the emitted files.
file(WRITE ${work}/back.toml "[plugins]\npaths = [\"plugin\"]\n[build]\noutput = \"back\"\n"
  "[models.a]\npath = \"dist/gguf-st.safetensors\"\n[models.b]\npath = \"dist/gguf-f16-st.safetensors\"\n"
  "[models.c]\npath = \"dist/st-gguf.gguf\"\n"
  "[[targets]]\nname = \"a\"\nmodel = \"a\"\nemit = \"gguf\"\n"
  "[[targets]]\nname = \"a-again\"\nmodel = \"a\"\n"
  "[[targets]]\nname = \"b\"\nmodel = \"b\"\nemit = \"gguf\"\n"
  "[[targets]]\nname = \"c\"\nmodel = \"c\"\nemit = \"safetensors\"\n")
must(${QFORGE_BIN} build -f ${work}/back.toml)
same_bytes(${work}/back/a.gguf ${work}/tiny.gguf "GGUF -> safetensors -> GGUF")
same_bytes(${work}/back/b.gguf ${dist}/gguf-f16.gguf "F16 GGUF -> safetensors -> GGUF")
same_bytes(${work}/back/a-again.safetensors ${dist}/gguf-st.safetensors "safetensors re-emitted")
must(${PYTHON} ${tool} verify ${work}/back/c.safetensors --same-tensors-as ${work}/tiny.safetensors)

# 4: a quantized tensor cannot be written as safetensors.
# Nor a model with a graph (the graph would be lost).
must(${bindir}/make_tiny_onnx mlp ${work}/mlp.onnx)
file(WRITE ${work}/q.toml "[plugins]\npaths = [\"plugin\"]\n[build]\noutput = \"q\"\n"
  "[models.st]\npath = \"tiny.safetensors\"\n[models.onnx]\npath = \"mlp.onnx\"\n"
  "[[targets]]\nname = \"q\"\nmodel = \"st\"\nemit = \"safetensors\"\n"
  "pipeline = [ { pass = \"quantize-gguf\", type = \"Q8_0\" } ]\n"
  "[[targets]]\nname = \"onnx\"\nmodel = \"onnx\"\nemit = \"safetensors\"\n")
run(${QFORGE_BIN} build -f ${work}/q.toml)
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "onnx.safetensors: cannot write safetensors: model: expected a table of tensors, found a model with a graph")
  message(FATAL_ERROR "emitting an ONNX model as safetensors should fail (rc ${rc}):\n${out}\n${err}")
endif()
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "q.safetensors: cannot write safetensors: tensor '[^']+': cannot store type q8_0: .*emit = \"gguf\"")
  message(FATAL_ERROR "emitting Q8_0 as safetensors should fail naming the tensor (rc ${rc}):\n${out}\n${err}")
endif()
if(EXISTS ${work}/q/q.safetensors)
  message(FATAL_ERROR "a failed emit left ${work}/q/q.safetensors")
endif()

# 4: hostile files.
must(${PYTHON} ${tool} hostile ${work}/hostile)
string(REPLACE "\n" ";" cases "${out}")
set(count 0)
foreach(line ${cases})
  if(line STREQUAL "")
    continue()
  endif()
  string(REPLACE "\t" ";" fields "${line}")
  list(GET fields 0 f)
  list(GET fields 1 expect)
  run(${QFORGE_BIN} --plugin ${plugin} inspect ${work}/hostile/${f})
  string(FIND "${err}" "error: ${work}/hostile/${f}: " at_file)
  string(FIND "${err}" "${expect}" at_expect)
  if(NOT rc EQUAL 1 OR at_file EQUAL -1 OR at_expect EQUAL -1)
    message(FATAL_ERROR "${f}: expected exit 1 and an error naming the file with '${expect}', found exit ${rc}:\n${out}${err}")
  endif()
  math(EXPR count "${count} + 1")
endforeach()
if(count LESS 20)
  message(FATAL_ERROR "expected at least 20 hostile files, found ${count}")
endif()
# Damaged copies of a small file: each is read (exit 0) or refused (exit 1, an
# error naming the file); nothing else.
file(MAKE_DIRECTORY ${work}/mutants)
must(${PYTHON} ${tool} mutants ${work}/mutants)
string(REPLACE "\n" ";" mutants "${out}")
set(read 0)
set(refused 0)
foreach(f ${mutants})
  if(f STREQUAL "")
    continue()
  endif()
  run(${QFORGE_BIN} --plugin ${plugin} inspect ${work}/mutants/${f})
  string(FIND "${err}" "error: ${work}/mutants/${f}: " at_file)
  if(rc EQUAL 0)
    math(EXPR read "${read} + 1")
  elseif(rc EQUAL 1 AND at_file EQUAL 0)
    math(EXPR refused "${refused} + 1")
  else()
    message(FATAL_ERROR "${f}: expected exit 0, or exit 1 with an error naming the file; found exit ${rc}:\n${out}${err}")
  endif()
endforeach()
if(read LESS 1 OR refused LESS 32)
  message(FATAL_ERROR "mutants: ${read} read, ${refused} refused; expected the base file read and most refused")
endif()
message(STATUS "safetensors plugin: built out of tree; quantized, round-tripped byte for byte; "
  "${count} hostile files refused; of the damaged copies ${read} read, ${refused} refused")
