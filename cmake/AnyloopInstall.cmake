# cmake --install: libraries, headers and a CMake package config, so that a
# consumer writes find_package(anyloop CONFIG REQUIRED) and links anyloop::backends.
include(CMakePackageConfigHelpers)
# Components record what their installed targets need found again
# (e.g. "OpenSSL 3.0"); the package config turns each into find_dependency().
get_property(_deps GLOBAL PROPERTY ANYLOOP_FIND_DEPENDENCIES)
set(ANYLOOP_CONFIG_DEPENDENCIES "")
foreach(_dep IN LISTS _deps)
  string(APPEND ANYLOOP_CONFIG_DEPENDENCIES "find_dependency(${_dep})\n")
endforeach()
get_property(_targets GLOBAL PROPERTY ANYLOOP_EXPORTED_TARGETS)
install(TARGETS ${_targets} EXPORT anyloopTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT anyloopTargets NAMESPACE anyloop:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/anyloop)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/anyloopConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/anyloopConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/anyloop)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/anyloopConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/anyloopConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/anyloopConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/anyloop)
