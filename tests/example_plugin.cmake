# Builds plugins/example out of tree against the installed SDK, loads it, and
# checks that a plugin built for another API version is refused.
# -DSOURCE_DIR -DBINARY_DIR -DQFORGE_BIN
set(work ${BINARY_DIR}/example-plugin-test)
file(REMOVE_RECURSE ${work})
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

must(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${work}/sdk)
foreach(variant good bad)
  set(extra "")
  if(variant STREQUAL "bad")
    set(extra -DQFORGE_TEST_API_VERSION=999)
  endif()
  must(${CMAKE_COMMAND} -S ${SOURCE_DIR}/plugins/example -B ${work}/${variant} -G Ninja
       -DCMAKE_BUILD_TYPE=Release -Dqforge_DIR=${work}/sdk/lib/cmake/qforge ${extra})
  must(${CMAKE_COMMAND} --build ${work}/${variant})
endforeach()

# The good one loads and registers its pass.
must(${QFORGE_BIN} --plugin ${work}/good/libqforge_tensor_stats.so list passes)
if(NOT out MATCHES "tensor-stats")
  message(FATAL_ERROR "the example plugin's pass is not listed:\n${out}")
endif()
must(${QFORGE_BIN} --plugin ${work}/good/libqforge_tensor_stats.so list plugins)
if(NOT out MATCHES "tensor-stats +1.0.0")
  message(FATAL_ERROR "the example plugin is not listed with its version:\n${out}")
endif()

# The mismatched one is refused with a clear message (exit 1, no crash).
run(${QFORGE_BIN} --plugin ${work}/bad/libqforge_tensor_stats.so list passes)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "a plugin built for API 999 should be refused with exit 1, got ${rc}\n${out}${err}")
endif()
if(NOT err MATCHES "plugin 'tensor-stats' 1.0.0 was built for qforge plugin API version 999, but this qforge expects version 1")
  message(FATAL_ERROR "unexpected refusal message:\n${err}")
endif()

# Loaded from QFORGE_PLUGIN_PATH too, and usable in a build.
set(ENV{QFORGE_PLUGIN_PATH} ${work}/good)
must(${QFORGE_BIN} list passes)
if(NOT out MATCHES "tensor-stats")
  message(FATAL_ERROR "not loaded from QFORGE_PLUGIN_PATH:\n${out}")
endif()
# Used by a build through a manifest's [plugins] paths: the pass's metrics
# reach the report.
unset(ENV{QFORGE_PLUGIN_PATH})
get_filename_component(bindir ${QFORGE_BIN} DIRECTORY)
must(${bindir}/make_tiny_llama ${work}/tiny.gguf)
file(WRITE ${work}/qforge.toml "[plugins]\npaths = [\"good\"]\n[models.m]\npath = \"tiny.gguf\"\n"
  "[[targets]]\nname = \"stats\"\nmodel = \"m\"\npipeline = [ { pass = \"tensor-stats\", top = 2 } ]\n")
must(${QFORGE_BIN} build -f ${work}/qforge.toml)
file(READ ${work}/dist/report.json report)
string(JSON tensors GET "${report}" targets 0 metrics tensors)
if(NOT tensors EQUAL 21)
  message(FATAL_ERROR "expected the plugin's metric tensors = 21 in the report, got '${tensors}'\n${report}")
endif()
message(STATUS "example plugin: built out of tree, loaded, mismatched API refused")
