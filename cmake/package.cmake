# The Debian package (cpack -G DEB in the build directory, or
# `ninja package`): plasmon_VERSION_ARCH.deb with everything install.cmake
# installs, under /usr, plus the systemd unit plasmon-store.service and its
# flags in /etc/default/plasmon-store. tests/package/deb_test.sh checks it.
# Whatever else has an install() rule joins the package by itself (the
# Python module, once python/ installs it).

# The unit and its defaults have absolute destinations: a component of
# their own that a plain `cmake --install --prefix P` leaves out (it would
# write to this machine's /etc), and that the package carries.
install(FILES packaging/plasmon-store.service DESTINATION /lib/systemd/system
  COMPONENT system EXCLUDE_FROM_ALL)
install(FILES packaging/plasmon-store.default DESTINATION /etc/default RENAME plasmon-store
  COMPONENT system EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME plasmon)
set(CPACK_PACKAGE_VENDOR plasmon)
set(CPACK_PACKAGE_CONTACT "plasmon developers <plasmon@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "in-memory object store for clusters (Plasma/Lightning line)")
set(CPACK_PACKAGE_DESCRIPTION "plasmon-store, a per-node daemon that owns a shared-memory \
arena of immutable objects, fetches objects from other nodes over TCP or RDMA, and exports \
Prometheus metrics; the plasmon CLI, plasmon-bench, plasmon-cluster; libplasmon with its \
headers, CMake package and pkg-config file.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL Unspecified system)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # plasmon_0.1.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
# Library dependencies from the binaries themselves (dpkg-shlibdeps).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")  # postinst makes the service's user
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "redis-server")  # the cluster directory
if(PLASMON_DEB_PYTHON_DEPENDS)  # the Python module (python/), built for one python3
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", ${PLASMON_DEB_PYTHON_DEPENDS}")
  string(APPEND CPACK_DEBIAN_PACKAGE_RECOMMENDS ", python3-numpy")
endif()
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "prometheus, iperf3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/prerm
  ${PROJECT_SOURCE_DIR}/packaging/postrm ${PROJECT_SOURCE_DIR}/packaging/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
