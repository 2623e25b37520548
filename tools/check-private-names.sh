#!/usr/bin/env bash
# The library's private names must not look public (CONTRIBUTING.md,
# "Names"):
#  1. every macro src/ defines with the UHMM_ prefix is one of the public
#     headers' (include/uhmm/); private ones are UHMM__* (or lowercase);
#  2. every global symbol the library's objects define is either public
#     (uhmm_*, not hidden), one of the interposed libc functions, or
#     private: uhmm__* and hidden visibility.  No other global name.
# Exit 0 when both hold, 1 with each offender listed.
#
#   tools/check-private-names.sh <source-dir> <build-dir>
set -euo pipefail
src=${1:?source dir}
build=${2:?build dir}
objdir=$build/CMakeFiles/uhmm_obj.dir/src
bad=0

public=$(grep -rhoE '^[[:space:]]*#[[:space:]]*define[[:space:]]+UHMM_[A-Za-z0-9_]+' \
	"$src/include/uhmm" | awk '{ print $NF }' | sed 's/^define//' | sort -u)
while read -r file name; do
	if ! grep -qxF "$name" <<<"$public"; then
		echo "private macro with a public-looking name: $name ($file); use UHMM__${name#UHMM_}"
		bad=1
	fi
done < <(grep -rHoE '^[[:space:]]*#[[:space:]]*define[[:space:]]+UHMM_[A-Z0-9][A-Za-z0-9_]*' \
		"$src/src" | sed -E 's/^([^:]*):.*define[[:space:]]+/\1 /')

[ -d "$objdir" ] || { echo "no $objdir: build first" >&2; exit 1; }
for o in "$objdir"/*.o; do
	readelf -sW "$o" | awk -v f="$(basename "$o" .o)" '
		# Num: Value Size Type Bind Vis Ndx Name
		$5 != "GLOBAL" && $5 != "WEAK" { next }
		$7 == "UND" || ($4 != "FUNC" && $4 != "OBJECT" && $4 != "TLS") { next }
		$8 ~ /^__(asan|tsan|ubsan|sanitizer|odr_asan)/ { next }
		$8 ~ /^uhmm__/ { if ($6 != "HIDDEN") print f ": " $8 " is private but not hidden"; next }
		$8 ~ /^uhmm_[a-z0-9]/ { if ($6 == "HIDDEN") print f ": " $8 " is hidden: name it uhmm__"; next }
		$8 ~ /^(mmap|mmap64|munmap|mremap|mprotect|pkey_mprotect|madvise|brk|sbrk)$/ { next }
		{ print f ": global symbol " $8 " is neither uhmm_ (public) nor uhmm__ (hidden)" }'
done > "$build/check-private-names.out"
if [ -s "$build/check-private-names.out" ]; then
	cat "$build/check-private-names.out"
	bad=1
fi
[ "$bad" = 0 ] && echo "private names: ok (macros of src/ and symbols of $objdir)"
exit "$bad"
