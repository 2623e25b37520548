#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The uhmm command line: option parsing (--opt value and --opt=value, a
# missing or bad value refused with a message naming it, exit 2), the exit
# statuses (77 for "cannot run here: no userfaultfd", for every command),
# what "uhmm info" says in each userfaultfd mode, the demo's and the
# benchmark's labels, and that UHMM_LOG=1 prints no warning on a clean exit.
#
# usage: test_cli.sh PATH/TO/uhmm PATH/TO/no_uffd
# no_uffd runs a command under a seccomp filter refusing userfaultfd (all of
# it, or only full mode), as a container's profile or
# vm.unprivileged_userfaultfd=0 do.  Exit 0 pass, 1 fail, 77 skip.

UHMM=$1
NO_UFFD=$2
if [ ! -x "$UHMM" ] || [ ! -x "$NO_UFFD" ]; then
	echo "usage: $0 PATH/TO/uhmm PATH/TO/no_uffd"
	exit 2
fi
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
passed=0
failed=0
skipped=0

fail() {
	echo "FAIL: $what: $*"
	echo "  --- stdout:"; sed -n '1,30s/^/  | /p' "$T/out"
	echo "  --- stderr:"; sed -n '1,30s/^/  | /p' "$T/err"
	ok=0
}

# t WANTED_STATUS CMD...: run, stdout in $T/out, stderr in $T/err.
t() {
	want=$1
	shift
	what="$*"
	ok=1
	"$@" >"$T/out" 2>"$T/err" </dev/null
	rc=$?
	[ "$rc" -eq "$want" ] || fail "exit status $rc, expected $want"
}
# has out|err FIXED-STRING / hasnt out|err FIXED-STRING
has() { grep -qF -e "$2" "$T/$1" || fail "std$1 lacks '$2'"; }
hasnt() { ! grep -qF -e "$2" "$T/$1" || fail "std$1 has '$2'"; }
empty() { [ ! -s "$T/$1" ] || fail "std$1 is not empty"; }
# The end of one check (a command and what it must print): counted once.
done_() { if [ "$ok" -eq 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }
skip() { echo "SKIP: $*"; skipped=$((skipped + 1)); }

# ---- the command and its help -----------------------------------------------
t 0 "$UHMM" --help; has out "exit status"; has out "77"; has out "no userfaultfd"; done_
t 2 "$UHMM"; has err "usage"; done_
t 2 "$UHMM" nosuch; has err "unknown command 'nosuch'"; done_
t 0 "$UHMM" demo --help; has out "'adaptive' (the default"; hasnt out "default 32"
has out "simulator"; has out "77"; done_
t 0 "$UHMM" bench --help; has out "taskset"; has out "77"; done_
t 0 "$UHMM" info --help; has out "77"; done_

# ---- bad command lines: exit 2 with the option and the value named ---------
t 2 "$UHMM" demo --size; has err "--size needs a value"; hasnt err "unknown option"; empty out; done_
t 2 "$UHMM" demo --size=abc; has err "--size 'abc'"; empty out; done_
t 2 "$UHMM" demo --size 0; has err "--size '0': out of range"; done_
t 2 "$UHMM" demo --threads -1; has err "--threads '-1': out of range"; empty out; done_
t 2 "$UHMM" demo --threads=0; has err "--threads '0'"; done_
t 2 "$UHMM" demo --fault-around 3; has err "--fault-around '3'"; done_
t 2 "$UHMM" demo --policy=sideways; has err "--policy 'sideways'"; done_
t 2 "$UHMM" demo --quick=yes; has err "--quick takes no value"; done_
t 2 "$UHMM" demo --bogus; has err "unknown option '--bogus'"; done_
t 2 "$UHMM" demo extra; has err "unexpected argument 'extra'"; done_
t 2 "$UHMM" demo --size --quick; has err "--size needs a value"; done_
t 2 "$UHMM" bench --only 99; has err "--only '99'"; has err "no figure '99'"; empty out; done_
t 2 "$UHMM" bench --only=1,x; has err "no figure 'x'"; empty out; done_
t 2 "$UHMM" bench --only; has err "--only needs a value"; done_
t 2 "$UHMM" bench --reps 0; has err "--reps '0'"; done_
t 2 "$UHMM" demo --model pcie9; has err "--model 'pcie9': not a model"; empty out; done_
t 2 "$UHMM" bench --model; has err "--model needs a value"; done_
t 2 "$UHMM" bench --model=nvlink; has err "--model 'nvlink'"; empty out; done_
t 2 "$UHMM" bench --reps=17; has err "--reps '17'"; done_
t 2 "$UHMM" bench --reps abc; has err "--reps 'abc'"; done_
t 2 "$UHMM" bench --plot "$T/no/such/dir/x.svg"; has err "--plot"; done_
t 2 "$UHMM" stress --seconds abc; has err "--seconds 'abc'"; empty out; done_
t 2 "$UHMM" stress --seconds; has err "--seconds needs a value"; done_
t 2 "$UHMM" stress --seconds=-1; has err "--seconds '-1'"; done_
t 2 "$UHMM" stress --threads -1; has err "--threads '-1'"; empty out; done_
t 2 "$UHMM" stress --regions=0; has err "--regions '0'"; done_
t 2 "$UHMM" stress --seed=x; has err "--seed 'x'"; done_
t 2 "$UHMM" stress --only nosuch; has err "nosuch"; done_
t 2 "$UHMM" stress --no-fork=1; has err "--no-fork takes no value"; done_
t 2 "$UHMM" info --bogus; has err "unknown option '--bogus'"; done_

# ---- no userfaultfd at all: every command exits 77 and says why --------------
"$NO_UFFD" none true >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" -eq 77 ] || [ "$rc" -eq 127 ]; then
	skip "no seccomp filter here: the no-userfaultfd checks did not run ($(cat "$T/out" "$T/err"))"
else
	t 77 "$NO_UFFD" none "$UHMM" info
	has out "not available: no userfaultfd could be opened"; hasnt out "none (none)"
	has out "exit status 77"; has out "vm.unprivileged_userfaultfd=1"; done_
	for cmd in "demo --quick" "bench --quick" "stress --quick"; do
		# shellcheck disable=SC2086
		t 77 "$NO_UFFD" none "$UHMM" $cmd
		cat "$T/out" >>"$T/err"
		has err "userfaultfd"; done_
	done
	for cmd in demo bench; do
		t 77 "$NO_UFFD" none "$UHMM" $cmd --quick
		# The whole reason: its last sentence, and where to look next.
		has err "cannot run here: no userfaultfd"; has err "grant CAP_SYS_PTRACE."
		has err "'uhmm info'"; empty out; done_
	done

	# ---- user-mode-only because full mode is refused: how to get it ------
	t 0 "$NO_UFFD" full "$UHMM" info
	has out "user-mode-only"; has out "full mode not permitted here"
	has out "sysctl vm.unprivileged_userfaultfd=1"; has out "/dev/userfaultfd"
	has out "CAP_SYS_PTRACE"; has out "status:            ok"; done_
fi

# ---- the rest needs a userfaultfd --------------------------------------------
t 0 "$UHMM" info
if [ "$rc" -eq 77 ]; then
	skip "no userfaultfd on this machine: the runs below did not run"
	echo "cli: $passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ] || exit 1
	exit 77
fi
hasnt out "none (none)"; done_

# user-mode-only forced: said to be forced, not "refused"
UHMM_DISABLE=uffd_full t 0 "$UHMM" info
has out "user-mode-only"; has out "UHMM_DISABLE=uffd_full"; hasnt out "refused"
hasnt out "not permitted"; done_

# UHMM_LOG=1: a clean exit prints no warning
UHMM_LOG=1 t 0 "$UHMM" info; hasnt err "warning"; done_

# --opt=value and --opt value alike; the demo's figures labelled and adding up
t 0 "$UHMM" demo --size=2 --threads 2 --fault-around=adaptive --policy migrate
has out "check against the CPU        ok"; has out "the simulator's"
has out "CPU faults: each fault brings"; has out "on average"
has out "us per page brought back"; has out "pages left on the device"
hasnt out "GB/s of input"
awk '
/pages moved to the device/   { to = $6 }
/pages moved back to system/  { back = $6 }
/^ *by CPU faults/            { cpu = $4 }
/^ *evicted/                  { ev = $2 }
/pages left on the device/    { left = $6 }
END {
	if (back != cpu + ev) { print "back " back " != CPU faults " cpu " + evicted " ev; exit 1 }
	if (to != back + left) { print "to device " to " != back " back " + left " left; exit 1 }
}' "$T/out" >"$T/awk" || fail "figures do not add up: $(cat "$T/awk")"
done_
UHMM_LOG=1 t 0 "$UHMM" demo --size 2 --fault-around 16 --capacity=2
hasnt err "reader: stop"; has out "aligned"; has out "16 pages"; done_

# the benchmark: the noise caveat first, no negative figure
t 0 "$UHMM" bench --quick --reps=2 --only=inv
head -n 1 "$T/out" | grep -qF "median of 2 repetitions" || fail "the first line is not the caveat"
has out "same run"; has out "--reps 16"; has out "taskset"
grep -E '(^|[^0-9a-z.])-[0-9]' "$T/out" >"$T/neg" && fail "a negative figure: $(cat "$T/neg")"
done_
t 0 "$UHMM" bench --quick --reps 1 --only inv --json
has out '"below_noise":'; head -c 1 "$T/out" | grep -qF '{' || fail "not JSON"; done_

t 0 "$UHMM" stress --ops=200 --seconds=30 --seed=1 --threads=2 --regions 4 --no-fork
has out "uhmm stress: OK"; done_

echo "cli: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
