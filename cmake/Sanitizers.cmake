# Applies SESSIOND_SANITIZE to every target (the asan and tsan presets set it).
if(SESSIOND_SANITIZE)
  list(JOIN SESSIOND_SANITIZE "," _sessiond_sanitizers)
  add_compile_options(-fsanitize=${_sessiond_sanitizers} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_sessiond_sanitizers})
  if("thread" IN_LIST SESSIOND_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # gcc 12 warns that TSan does not model atomic_thread_fence (used inside libraries).
    add_compile_options(-Wno-tsan)
  endif()
endif()
