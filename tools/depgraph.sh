#!/usr/bin/env bash
# The module dependency picture of src/, from the object files: for each
# src/X.c, the other src/*.c whose functions or data it uses (its undefined
# uhmm_ / uhmm__ symbols resolved to the object that defines them), then the
# strongly connected components (files that depend on each other in a
# cycle) and the size of the largest.  Static inline functions in headers
# are not symbols and do not count.
#
#   tools/depgraph.sh [build-dir]      (default: build)
set -euo pipefail
build=${1:-build}
objdir=$build/CMakeFiles/uhmm_obj.dir/src
[ -d "$objdir" ] || { echo "no $objdir: build first" >&2; exit 1; }
for o in "$objdir"/*.o; do
	m=$(basename "$o" .c.o)
	nm "$o" | awk -v m="$m" '
		$1 == "U" && $2 ~ /^uhmm_/ { print "U", m, $2; next }
		NF == 3 && $2 ~ /^[TDBRVWtdbr]$/ && $3 ~ /^uhmm_/ { print "D", m, $3 }'
done | awk '
	$1 == "D" { def[$3] = $2; mods[$2] = 1; next }
	$1 == "U" { use[$2 " " $3] = 1; mods[$2] = 1 }
	END {
		n = 0
		for (m in mods) name[n++] = m
		# sort the names (insertion sort, a few dozen files)
		for (i = 1; i < n; i++) { v = name[i]; for (j = i - 1; j >= 0 && name[j] > v; j--) name[j + 1] = name[j]; name[j + 1] = v }
		for (i = 0; i < n; i++) idx[name[i]] = i
		for (k in use) {
			split(k, p, " ")
			if (!(p[2] in def) || def[p[2]] == p[1]) continue
			e[idx[p[1]], idx[def[p[2]]]] = 1
		}
		print "# X.c -> the src/*.c it calls"
		for (i = 0; i < n; i++) {
			line = sprintf("%-12s ->", name[i] ".c")
			for (j = 0; j < n; j++) if ((i, j) in e) line = line " " name[j]
			print line
		}
		# reachability (Warshall) for the strongly connected components
		for (i = 0; i < n; i++) for (j = 0; j < n; j++) r[i, j] = ((i, j) in e) || i == j
		for (k = 0; k < n; k++) for (i = 0; i < n; i++) if (r[i, k]) for (j = 0; j < n; j++) if (r[k, j]) r[i, j] = 1
		big = 0
		print "# dependency cycles (strongly connected components of more than one file)"
		for (i = 0; i < n; i++) {
			if (i in done) continue
			c = ""; cnt = 0
			for (j = 0; j < n; j++) if (r[i, j] && r[j, i]) { done[j] = 1; c = c " " name[j]; cnt++ }
			if (cnt > 1) print cnt ":" c
			if (cnt > big) big = cnt
		}
		print "largest cycle: " big " files"
	}'
