#!/usr/bin/env bash
# Function lengths in src/*.c (kernel style: a function body opens with "{"
# in column 0 and closes with "}" in column 0).  A function's length counts
# from the first line of its signature to its closing brace.
#
#   tools/fnlen.sh [N] [files...]     the N longest (default 10) of src/*.c
set -euo pipefail
n=${1:-10}; shift || true
[ $# -gt 0 ] || set -- src/*.c
for f in "$@"; do
	awk -v f="$f" '
		# the signature starts at the last line that begins in column 0
		# with something other than a brace, comment or preprocessor line
		/^[A-Za-z_]/ && !infn { sig = FNR; text = $0; next }
		/^[ \t]/ && !infn && sig { text = text " " $0; next }
		/^\{/ && !infn { infn = 1; start = sig ? sig : FNR; t = text; next }
		/^\}/ && infn {
			infn = 0
			name = t; gsub(/__attribute__\(\([^)]*\)*\)\)/, "", name); sub(/\(.*/, "", name); sub(/.*[ *]/, "", name)
			printf "%d %s:%d %s\n", FNR - start + 1, f, start, name
			sig = 0; next
		}
		!infn && !/^[ \t]/ { sig = 0 }'  "$f"
done | sort -rn | head -n "$n"
