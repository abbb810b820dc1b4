# What `cmake --install` and the Debian package (cmake/package.cmake) carry:
# the programs, the client library (shared and static), its public headers
# only, a CMake package (plasmon::client), plasmon.pc, the docs and the man
# pages. tests/install_test.sh builds an application against them.
include(CMakePackageConfigHelpers)

install(TARGETS plasmon-store plasmon plasmon-bench plasmon-cluster
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS plasmon_client_shared plasmon_client_static EXPORT plasmonTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
# The API is plasmon/*.h of these two directories; nothing internal.
install(DIRECTORY client/include/plasmon core/include/plasmon
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")

set(PLASMON_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/plasmon)
install(EXPORT plasmonTargets NAMESPACE plasmon:: DESTINATION ${PLASMON_CMAKE_DIR})
configure_package_config_file(cmake/plasmonConfig.cmake.in
  ${PROJECT_BINARY_DIR}/plasmonConfig.cmake INSTALL_DESTINATION ${PLASMON_CMAKE_DIR})
# 0.x: a new minor version may change the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/plasmonConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/plasmonConfig.cmake
  ${PROJECT_BINARY_DIR}/plasmonConfigVersion.cmake DESTINATION ${PLASMON_CMAKE_DIR})

# Relocatable: the .pc names its prefix relative to its own directory.
file(RELATIVE_PATH PLASMON_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" PLASMON_PC_TO_PREFIX "${PLASMON_PC_TO_PREFIX}")
configure_file(cmake/plasmon.pc.in ${PROJECT_BINARY_DIR}/plasmon.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/plasmon.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")

# Man pages from the programs' own --help and --version (Debian's help2man),
# so that they cannot drift from the flags.
find_program(HELP2MAN help2man)
if(HELP2MAN)
  set(PLASMON_MAN_PAGES)
  foreach(prog_desc "plasmon-store|the plasmon object store daemon for one node"
                    "plasmon|command-line client of the plasmon object store")
    string(REPLACE "|" ";" pd "${prog_desc}")
    list(GET pd 0 prog)
    list(GET pd 1 desc)
    add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/man/${prog}.1
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND ${HELP2MAN} --no-info --no-discard-stderr --name=${desc}
              --output=${PROJECT_BINARY_DIR}/man/${prog}.1 $<TARGET_FILE:${prog}>
      DEPENDS ${prog} VERBATIM)
    list(APPEND PLASMON_MAN_PAGES ${PROJECT_BINARY_DIR}/man/${prog}.1)
  endforeach()
  add_custom_target(plasmon-man ALL DEPENDS ${PLASMON_MAN_PAGES})
  install(FILES ${PLASMON_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
else()
  message(STATUS "help2man not found: no man pages (tools/setup.sh installs it)")
endif()
