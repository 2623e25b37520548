#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every code block of docs/GUIDE.md that starts with "/* examples/NAME */"
# quotes examples/NAME: each of its lines (but "...") must be a line of that
# file, so the guide cannot drift from the code the test suite runs.
# Usage: check_guide.sh SOURCE_DIR
src=$1 fail=0 blocks=0 lines=0
while IFS=$'\x1f' read -r file line; do
	if [ "$line" = "@@BLOCK" ]; then
		blocks=$((blocks + 1))
		[ -f "$src/$file" ] || { echo "FAIL: GUIDE.md quotes $file, which does not exist"; fail=1; }
		continue
	fi
	lines=$((lines + 1))
	if ! grep -Fxq -- "$line" "$src/$file" 2>/dev/null; then
		echo "FAIL: GUIDE.md quotes a line that is not in $file:"
		echo "    $line"
		fail=1
	fi
done < <(awk '
	/^ *```/ {
		if (inblk) { inblk = 0; file = ""; next }
		inblk = 1; indent = match($0, /[^ ]/) - 1; first = 1; next
	}
	inblk {
		l = substr($0, indent + 1)
		if (first) {
			first = 0
			if (l ~ /^\/\* examples\/[a-z_.]+ \*\/$/) {
				file = l; sub(/^\/\* /, "", file); sub(/ \*\/$/, "", file)
				printf "%s\x1f@@BLOCK\n", file
			}
			next
		}
		if (file == "" || l ~ /^[ \t]*\.\.\.$/ || l == "") next
		printf "%s\x1f%s\n", file, l
	}' "$src/docs/GUIDE.md")
echo "$blocks quoted blocks, $lines lines checked against examples/"
[ $blocks -ge 8 ] || { echo "FAIL: expected the guide to quote the examples"; fail=1; }
[ $fail -eq 0 ] && echo PASS
exit $fail
