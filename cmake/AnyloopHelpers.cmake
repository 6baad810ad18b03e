# Helpers shared by every component's CMakeLists.txt.

# Warnings at zero in our own code.
function(anyloop_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
endfunction()

# anyloop_library(NAME <name> SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
# One component library: target anyloop_<name>, alias anyloop::<name>,
# public headers under <component>/include (installed as <anyloop/...>).
function(anyloop_library)
  cmake_parse_arguments(ARG "" "NAME;INCLUDE_DIR" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(anyloop_${ARG_NAME} ${ARG_SOURCES})
  add_library(anyloop::${ARG_NAME} ALIAS anyloop_${ARG_NAME})
  set_target_properties(anyloop_${ARG_NAME} PROPERTIES EXPORT_NAME ${ARG_NAME} POSITION_INDEPENDENT_CODE ON)
  if(ARG_INCLUDE_DIR)
    target_include_directories(anyloop_${ARG_NAME} PUBLIC
      $<BUILD_INTERFACE:${ARG_INCLUDE_DIR}>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endif()
  target_link_libraries(anyloop_${ARG_NAME} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  anyloop_warnings(anyloop_${ARG_NAME})
  set_property(GLOBAL APPEND PROPERTY ANYLOOP_EXPORTED_TARGETS anyloop_${ARG_NAME})
endfunction()

# anyloop_gtest(NAME <exe> COMPONENT <label> SOURCES ... [LIBS ...])
# A GoogleTest executable whose cases become CTest tests, one per case.
# Cases of a backend carry its label: value-parameterized instances end in
# "/<backend>" and backend-specific suites end in "_<backend>", so that
# `ctest -L <backend>` runs exactly one backend's share.
function(anyloop_gtest)
  cmake_parse_arguments(ARG "" "NAME;COMPONENT;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_LIBS} anyloop_test_support GTest::gtest_main Threads::Threads)
  anyloop_warnings(${ARG_NAME})
  get_property(backends GLOBAL PROPERTY ANYLOOP_BUILT_BACKENDS)
  set(others "")
  # gtest_discover_tests (CMake 3.25) flattens list-valued PROPERTIES, so the
  # two labels are set again by a script that runs once the cases are known.
  set(labels_script "")
  foreach(backend IN LISTS backends)
    gtest_discover_tests(${ARG_NAME}
      TEST_FILTER "*/${backend}:*_${backend}.*"
      TEST_LIST ${ARG_NAME}_${backend}_tests
      DISCOVERY_TIMEOUT 60 NO_PRETTY_VALUES
      PROPERTIES TIMEOUT ${ARG_TIMEOUT})
    string(APPEND others ":*/${backend}:*_${backend}.*")
  endforeach()
  gtest_discover_tests(${ARG_NAME}
    TEST_FILTER "-${others}"
    TEST_LIST ${ARG_NAME}_common_tests
    DISCOVERY_TIMEOUT 60 NO_PRETTY_VALUES
    PROPERTIES TIMEOUT ${ARG_TIMEOUT})
  foreach(label IN LISTS backends ITEMS common)
    string(APPEND labels_script
      "foreach(test IN LISTS ${ARG_NAME}_${label}_tests)\n"
      "  set_tests_properties(\"\${test}\" PROPERTIES LABELS \"${label};${ARG_COMPONENT}\")\n"
      "endforeach()\n")
  endforeach()
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}_labels.cmake "${labels_script}")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}_labels.cmake)
endfunction()
