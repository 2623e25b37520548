#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Each public header, alone and all together, compiles as C++17 and C++20
# with every C++ compiler here (g++, clang++), warnings as errors, and as
# C11 with -pedantic.  Usage: test_cxx_headers.sh INCLUDE_DIR [CXX...]
set -u
inc=$1; shift
cxxs=("$@")
for c in g++ clang++; do
	command -v "$c" >/dev/null 2>&1 && cxxs+=("$c")
done
mapfile -t cxxs < <(printf '%s\n' "${cxxs[@]}" | awk 'NF && !seen[$0]++')
if [ ${#cxxs[@]} -eq 0 ]; then
	echo "SKIP: no C++ compiler"
	exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

headers=()
for h in "$inc"/uhmm/*.h; do
	headers+=("uhmm/$(basename "$h")")
done
[ ${#headers[@]} -ge 11 ] || { echo "FAIL: only ${#headers[@]} headers in $inc/uhmm"; exit 1; }
printf '#include <%s>\n' "${headers[@]}" > "$tmp/all.h"

fail=0 n=0
compile() {	# compiler, language flags..., source
	local out
	if ! out=$("$@" -fsyntax-only -Wall -Wextra -Werror -pedantic -I"$inc" 2>&1); then
		echo "FAIL: $*"
		echo "$out" | head -20
		fail=1
	fi
	n=$((n + 1))
}
for h in "${headers[@]}" all; do
	src=$tmp/${h//\//_}.cc
	if [ "$h" = all ]; then
		# Twice: include guards; any order works.
		cat "$tmp/all.h" "$tmp/all.h" > "$src"
	else
		printf '#include <%s>\n#include <%s>\nint main() { return 0; }\n' "$h" "$h" > "$src"
	fi
	for cxx in "${cxxs[@]}"; do
		for std in c++17 c++20; do
			compile "$cxx" -std=$std -x c++ "$src"
		done
	done
	compile "${CC:-cc}" -std=c11 -x c "$src"
done
echo "$n compilations of ${#headers[@]} headers (alone and together) with ${cxxs[*]} (C++17, C++20) and ${CC:-cc} (C11)"
[ $fail -eq 0 ] && echo PASS
exit $fail
