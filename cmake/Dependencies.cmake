# Every third-party dependency comes from Debian's packages (scripts/setup installs them);
# nothing is vendored or downloaded.
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(RocksDB CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(Protobuf REQUIRED)  # module mode: protobuf::libprotobuf(-lite), protobuf_generate

find_package(spdlog CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)

# cpp-httplib (etcd's JSON gateway) and xxHash (the ring) ship pkg-config files, no CMake
# packages.
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
add_library(sessiond_httplib INTERFACE)
target_link_libraries(sessiond_httplib INTERFACE PkgConfig::HTTPLIB)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
add_library(sessiond_xxhash INTERFACE)
target_link_libraries(sessiond_xxhash INTERFACE PkgConfig::XXHASH)
# libsystemd: sd_notify (READY, STOPPING, WATCHDOG) under systemd's Type=notify.
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
add_library(sessiond_systemd INTERFACE)
target_link_libraries(sessiond_systemd INTERFACE PkgConfig::SYSTEMD)
# Chart.js for the web console, compiled into the binary (daemon/console_assets.h).
find_file(SESSIOND_CHART_JS chart.min.js PATHS /usr/share/javascript/chart.js NO_DEFAULT_PATH)
if(NOT SESSIOND_CHART_JS)
  message(FATAL_ERROR "Chart.js not found in /usr/share/javascript/chart.js: install Debian's "
                      "libjs-chart.js (scripts/setup does)")
endif()
# zstd compresses the batches shipped to peer regions (replication/region_shipper.h).
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
add_library(sessiond_zstd INTERFACE)
target_link_libraries(sessiond_zstd INTERFACE PkgConfig::ZSTD)

# Standalone Asio has no CMake package: an INTERFACE target with the header path. asio 1.22
# keeps as_tuple & co. in asio::experimental; clang 14 needs ASIO_HAS_CO_AWAIT to see
# coroutines.
find_path(ASIO_INCLUDE_DIR asio.hpp REQUIRED)
add_library(sessiond_asio INTERFACE)
target_include_directories(sessiond_asio SYSTEM INTERFACE ${ASIO_INCLUDE_DIR})
target_compile_definitions(sessiond_asio INTERFACE ASIO_NO_DEPRECATED ASIO_HAS_CO_AWAIT=1)
target_link_libraries(sessiond_asio INTERFACE Threads::Threads)


if(SESSIOND_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
if(SESSIOND_BUILD_BENCH)
  find_package(benchmark CONFIG REQUIRED)
  # sessiond-bench drives Redis through hiredis (issue 18); Debian ships a pkg-config file.
  pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
endif()
