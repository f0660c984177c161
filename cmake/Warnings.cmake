# sessiond_warnings(<target>): the project's warning set; errors when SESSIOND_WERROR is on
# (the CMake presets turn it on, so CI builds with warnings as errors).
function(sessiond_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                                           -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
                                           -Woverloaded-virtual -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 reports impossible overlaps in inlined std::string appends at -O3 (GCC bug 105329).
    target_compile_options(${target} PRIVATE -Wno-restrict)
    if(SESSIOND_SANITIZE)
      # With sanitizer instrumentation GCC 12 also reports uninitialized reads inside
      # libstdc++ (std::regex's std::function members) that its analysis cannot rule out;
      # the release build keeps the warning.
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
  endif()
  if(SESSIOND_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
