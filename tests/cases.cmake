# SPDX-License-Identifier: MIT
cmake_minimum_required(VERSION 3.16)
# Run by the build right after a test program is linked (cmake -P, the
# way gtest_discover_tests works): asks the program for its cases
# (`PROG --list`, tests/cases.h) and writes the CTest entries, two per case:
#   PROG.CASE           normally
#   PROG.CASE.fallback  with every kernel feature's fallback forced on
# Nothing runs at configure time; CTest reads OUT through the include file
# that uhmm_add_test() registers (tests/CMakeLists.txt).
#
# -D EXE=  the program   -D PROG= its name   -D OUT= the file to write
# -D TIMEOUT= seconds per entry   -D FALLBACK=0 registers the normal entries only

execute_process(COMMAND "${EXE}" --list
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${PROG} --list failed (${_rc}): ${_err}")
endif()
string(REPLACE "\n" ";" _cases "${_out}")
set(_text "# Written by tests/cases.cmake from `${PROG} --list`.\n")
set(_seen "")
foreach(_c IN LISTS _cases)
  if(_c STREQUAL "")
    continue()
  endif()
  if(NOT _c MATCHES "^[A-Za-z0-9_]+$")
    message(FATAL_ERROR "${PROG}: case name \"${_c}\" is not [A-Za-z0-9_]+")
  endif()
  if(_c IN_LIST _seen)
    message(FATAL_ERROR "${PROG}: case \"${_c}\" listed twice")
  endif()
  list(APPEND _seen "${_c}")
  string(APPEND _text
    "add_test([=[${PROG}.${_c}]=] \"${EXE}\" [=[${_c}]=])\n"
    "set_tests_properties([=[${PROG}.${_c}]=] PROPERTIES"
    " SKIP_RETURN_CODE 77 TIMEOUT ${TIMEOUT} LABELS ${PROG})\n")
  if(NOT FALLBACK STREQUAL "0")
    string(APPEND _text
      "add_test([=[${PROG}.${_c}.fallback]=] \"${EXE}\" [=[${_c}]=])\n"
      "set_tests_properties([=[${PROG}.${_c}.fallback]=] PROPERTIES"
      " SKIP_RETURN_CODE 77 TIMEOUT ${TIMEOUT} LABELS ${PROG} ENVIRONMENT UHMM_DISABLE=all)\n")
  endif()
endforeach()
if(_seen STREQUAL "")
  message(FATAL_ERROR "${PROG} --list printed no case")
endif()
# Rewrite only on a change, so CTest's view is never half written.
set(_old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" _old)
endif()
if(NOT _old STREQUAL _text)
  file(WRITE "${OUT}.tmp" "${_text}")
  file(RENAME "${OUT}.tmp" "${OUT}")
endif()
