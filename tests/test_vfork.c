// SPDX-License-Identifier: MIT
/*
 * vfork and posix_spawn children touching device-resident memory.
 *
 * Such a child shares the address space but is another thread group: its
 * faults reach uhmm's userfaultfd with a thread id /proc/self/task cannot
 * name (KERNEL-FACTS.md section 11).  In the kernel the child's fault is
 * served like any other; uhmm must serve it too, never take the thread
 * for gone and drop the fault (it would fault again forever while the
 * parent waits in vfork: issue 12.3).
 *
 * (Under ThreadSanitizer vfork is a fork: only the read and the spawn are
 * what they claim there.)
 *
 * The page is served once for the parent and migrated again first: that
 * makes the child's fault one on a recently served page, which is when
 * uhmm asks whether the faulting thread still waits.  Each round runs in
 * a watched child process: a hang fails the test.
 */
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "watchdog.h"

extern char **environ;

#define NPAGES 4
#define SEED 0x5eedu
#define CHILD_MARK 0xc0ffee11u

static const char spawn_arg[] = "uhmm-device-resident-argv-string-0123456789";

/* Device-resident pages, with the first one served once and migrated again. */
static char *device_pages(struct tdev *d)
{
	char *buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	volatile uint32_t *w = (volatile uint32_t *)buf;

	fill_pattern(buf, NPAGES, SEED);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)buf, (uintptr_t)buf + NPAGES * page_size, NULL),
		 NPAGES);
	/* Served once for this thread... */
	CHECK(w[1] == SEED * 2654435761u + 1, "pattern after the first fault");
	/* ...and on the device again. */
	CHECK(tdev_to_dev(d, (uintptr_t)buf, (uintptr_t)buf + NPAGES * page_size, NULL) >= 1,
	      "migrate again");
	CHECK(!(page_state_of(d->mm, buf) & UHMM_PS_PRESENT), "page 0 is on the device");
	return buf;
}

static int round_vfork(void *arg)
{
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, 64, 1);
	char *buf = device_pages(d);
	volatile uint32_t *w0 = (volatile uint32_t *)buf;
	volatile uint32_t *w1 = (volatile uint32_t *)(buf + page_size);
	int status;
	pid_t pid;

	(void)arg;
	pid = vfork();
	if (pid == 0) {
		/* Shares the memory: read page 0, write page 1, both on the device. */
		if (w0[7] != SEED * 2654435761u + 7)
			_exit(3);
		w1[0] = CHILD_MARK;
		_exit(0);
	}
	CHECK(pid > 0, "vfork: %s", strerror(errno));
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "vfork child status %#x", status);
#if !defined(__SANITIZE_THREAD__)
	/* The child's write is the parent's (one address space); the rest intact. */
	CHECK_EQ(w1[0], CHILD_MARK);
	w1[0] = SEED * 2654435761u + (uint32_t)(page_size / 4);
#else
	/* ThreadSanitizer runs vfork as fork: the child's write stayed its own. */
#endif
	CHECK_EQ(check_pattern(buf, NPAGES, SEED), -1);
	munmap(buf, NPAGES * page_size);
	tdev_destroy(d);
	uhmm_mm_put(mm);
	return 0;
}

static int round_spawn(void *arg)
{
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, 64, 1);
	char *buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	volatile char *v = buf;
	struct uhmm_sysinfo si;
	char *argv[4];
	pid_t pid;
	int ret, status;

	(void)arg;
	uhmm_sysinfo(&si);
	memset(buf, 0, NPAGES * page_size);
	memcpy(buf + 64, spawn_arg, sizeof(spawn_arg));
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)buf, (uintptr_t)buf + NPAGES * page_size, NULL),
		 NPAGES);
	CHECK(v[64] == spawn_arg[0], "served once");
	CHECK(tdev_to_dev(d, (uintptr_t)buf, (uintptr_t)buf + NPAGES * page_size, NULL) >= 1,
	      "migrate again");
	CHECK(!(page_state_of(mm, buf) & UHMM_PS_PRESENT), "page 0 is on the device");
	argv[0] = (char *)"test_vfork";
	argv[1] = (char *)"--check-arg";
	argv[2] = buf + 64;	/* read by the kernel from the spawned child */
	argv[3] = NULL;
	ret = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ);
	if (si.uffd_mode == UHMM_UFFD_USER_ONLY && ret == EFAULT) {
		/* User-mode-only userfaultfd: kernel-mode access fails (documented). */
	} else {
		CHECK(ret == 0, "posix_spawn: %s", strerror(ret));
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "spawned child status %#x", status);
	}
	CHECK(memcmp(buf + 64, spawn_arg, sizeof(spawn_arg)) == 0, "the string is intact");
	munmap(buf, NPAGES * page_size);
	tdev_destroy(d);
	uhmm_mm_put(mm);
	return 0;
}

static int bad;	/* rounds failed or hung: the program fails at the end */

static void test_vfork_child(void)
{
	bad += run_rounds(round_vfork, NULL, 20, "vfork child reads and writes device pages");
}

static void test_posix_spawn(void)
{
	bad += run_rounds(round_spawn, NULL, 20, "posix_spawn argv string in a device page");
}

static int finish(void)
{
	return bad ? 1 : 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_vfork_child),
	TEST_CASE(test_posix_spawn),
};

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--check-arg"))
		return strcmp(argv[2], spawn_arg) == 0 ? 0 : 4;
	return test_main(argc, argv, "test_vfork", TEST_CASES(cases), NULL, finish);
}
