# qforge_add_plugin(<name> <sources>...): a qforge plugin (a shared library
# exporting `qforge_plugin`, see qforge/plugin.h), built with the flags the
# host expects. Install it into a directory on QFORGE_PLUGIN_PATH, or name it
# in a manifest's [plugins] paths.
function(qforge_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE qforge::qforge)
  set_target_properties(${name} PROPERTIES
    CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden PREFIX "lib")
endfunction()
