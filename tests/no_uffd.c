// SPDX-License-Identifier: MIT
/*
 * no_uffd - run a command where userfaultfd is refused, as a container's
 * seccomp profile refuses it: "no_uffd none CMD..." refuses every way of
 * opening one (the userfaultfd system call and /dev/userfaultfd's
 * USERFAULTFD_IOC_NEW), "no_uffd full CMD..." only full mode (the system
 * call without UFFD_USER_MODE_ONLY, and USERFAULTFD_IOC_NEW), as
 * vm.unprivileged_userfaultfd=0 does for an unprivileged user.  Both fail
 * with EPERM.  Used by test_cli.sh; exit 77 where seccomp is unavailable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "no_uffd: unknown architecture"
#endif

#define ARG_LO(n) (offsetof(struct seccomp_data, args[n]))	/* little endian */
#define REFUSE (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

int main(int argc, char **argv)
{
	int only_full;

	if (argc < 3 || (strcmp(argv[1], "none") && strcmp(argv[1], "full"))) {
		fprintf(stderr, "usage: no_uffd none|full COMMAND [ARG...]\n");
		return 2;
	}
	only_full = !strcmp(argv[1], "full");
	{
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 4),
			/* userfaultfd(flags): in "full", allow UFFD_USER_MODE_ONLY. */
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0)),
			BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, UFFD_USER_MODE_ONLY,
				 (unsigned char)only_full, 0),
			BPF_STMT(BPF_RET | BPF_K, REFUSE),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, USERFAULTFD_IOC_NEW, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, REFUSE),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
			printf("no_uffd: skipped: cannot install a seccomp filter: %s\n",
			       strerror(errno));
			return 77;
		}
	}
	execvp(argv[2], argv + 2);
	fprintf(stderr, "no_uffd: %s: %s\n", argv[2], strerror(errno));
	return 127;
}
