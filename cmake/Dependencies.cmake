# Every third-party dependency comes from Debian's packages (scripts/setup installs them);
# nothing is vendored or downloaded.
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(RocksDB CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(Protobuf REQUIRED)  # module mode: protobuf::libprotobuf(-lite), protobuf_generate

find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_LIBRARY xxhash REQUIRED)
add_library(sessiond_xxhash INTERFACE)
target_include_directories(sessiond_xxhash SYSTEM INTERFACE ${XXHASH_INCLUDE_DIR})
target_link_libraries(sessiond_xxhash INTERFACE ${XXHASH_LIBRARY})

if(SESSIOND_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
if(SESSIOND_BUILD_BENCH)
  find_package(benchmark CONFIG REQUIRED)
endif()
