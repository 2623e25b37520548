// SPDX-License-Identifier: MIT
/*
 * The process context: get/put reference counting, re-creation after
 * teardown, teardown with notifiers still registered (they get RELEASE and
 * are detached), sysinfo, user-mode-only operation after dropping privileges,
 * the "no userfaultfd" path under a seccomp filter, and close-on-exec.
 */
#include "common.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <dirent.h>

struct rec {
	struct uhmm_interval_notifier mni;
	int releases;
	int others;
	uintptr_t rs, re;
};

static bool rec_inv(struct uhmm_interval_notifier *mni,
		    const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct rec *rc = (struct rec *)mni;

	uhmm_interval_set_seq(mni, seq);
	if (r->event == UHMM_NOTIFY_RELEASE) {
		rc->releases++;
		rc->rs = r->start;
		rc->re = r->end;
	} else {
		rc->others++;
	}
	return true;
}

static const struct uhmm_interval_notifier_ops rec_ops = { .invalidate = rec_inv };

/*
 * Threads of this process named @name (/proc/self/task/<tid>/comm).  A
 * thread's name is set by the thread itself, at its start.
 */
static int count_threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;

	CHECK(d, "opendir /proc/self/task: %s", strerror(errno));
	while ((de = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;	/* exited meanwhile */
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
		n += !strcmp(comm, name);
	}
	closedir(d);
	return n;
}

/*
 * The service threads have started and set themselves up when the first
 * reference is handed out (docs/CONCURRENCY.md, "Startup"): their names,
 * which each sets first thing, are all there at once.
 */
static void check_service_threads_up(void)
{
	CHECK_EQ(count_threads_named("uhmm-reader"), 1);
	CHECK_EQ(count_threads_named("uhmm-worker"), 1);
	CHECK_EQ(count_threads_named("uhmm-rescue"), 1);
	CHECK_EQ(count_threads_named("uhmm-memwait"), 1);
}

static void test_refcount(void)
{
	struct uhmm_mm *a, *b;

	CHECK_EQ(count_uffds(), 0);
	a = test_mm();
	check_service_threads_up();
	b = test_mm();
	CHECK(a == b, "one context per process");
	CHECK_EQ(count_uffds(), 1);
	uhmm_mm_put(a);
	CHECK_EQ(count_uffds(), 1);
	uhmm_mm_put(b);
	CHECK_EQ(count_uffds(), 0);
	/* Re-created after teardown. */
	a = test_mm();
	check_service_threads_up();
	CHECK_EQ(count_uffds(), 1);
	uhmm_mm_put(a);
	CHECK_EQ(count_uffds(), 0);
	CHECK_EQ(uhmm_mm_get(NULL), -EINVAL);
	CHECK(strlen(uhmm_last_error()) > 0, "an error reason is recorded");
	uhmm_mm_put(NULL);
}

static void test_teardown_with_notifiers(void)
{
	struct uhmm_mm *mm = test_mm();
	struct rec r1 = { 0 }, r2 = { 0 };
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);

	CHECK_EQ(uhmm_interval_notifier_insert(&r1.mni, mm, (uintptr_t)p,
					       4 * page_size, &rec_ops), 0);
	CHECK_EQ(uhmm_interval_notifier_insert(&r2.mni, mm, (uintptr_t)p + page_size,
					       page_size, &rec_ops), 0);
	CHECK_EQ(uhmm_interval_notifier_insert(&r2.mni, mm, (uintptr_t)p, page_size,
					       &rec_ops), -EINVAL);
	uhmm_mm_put(mm);	/* last reference: teardown */
	CHECK_EQ(r1.releases, 1);
	CHECK_EQ(r2.releases, 1);
	CHECK(r1.rs == (uintptr_t)p && r1.re == (uintptr_t)p + 4 * page_size,
	      "release covers the whole interval");
	CHECK_EQ(r1.others, 0);
	/* Detached: remove is a no-op, munmap notifies nobody. */
	uhmm_interval_notifier_remove(&r1.mni);
	uhmm_interval_notifier_remove(&r2.mni);
	CHECK_EQ(munmap(p, 4 * page_size), 0);
	CHECK_EQ(r1.others, 0);
	CHECK_EQ(count_uffds(), 0);
}

/* Runs in a fresh process (exec'd), so the probe is its own. */
static int exec_user_mode(void)
{
	struct uhmm_sysinfo si;
	struct uhmm_mm *mm;
	char *p;

	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_USER_ONLY) {
		fprintf(stderr, "unprivileged: mode %d source %s\n", si.uffd_mode,
			si.uffd_source);
		return si.uffd_mode == UHMM_UFFD_FULL ? 78 : 1;
	}
	if (uhmm_mm_get(&mm))
		return 2;
	p = map_anon(page_size, PROT_READ | PROT_WRITE);
	p[0] = 1;
	{
		uint32_t st;

		if (uhmm_page_state(mm, (uintptr_t)p, 1, &st) || !(st & UHMM_PS_PRESENT))
			return 3;
	}
	uhmm_mm_put(mm);
	return 0;
}

static int child_user_mode(void *arg)
{
	if (setgid(65534) || setuid(65534))
		return 77;
	execl("/proc/self/exe", "test_context", "user-mode", (char *)NULL);
	return 4;
}

static void test_user_mode_only(void)
{
	int st;

	if (geteuid() != 0)
		SKIP_CASE("%s: not root: user-mode-only is what this run already uses",
			  test_name);
	st = run_child(child_user_mode, NULL);
	if (st == 78)
		SKIP_CASE("%s: unprivileged processes get full userfaultfd here "
			  "(vm.unprivileged_userfaultfd=1): user-mode-only not exercised",
			  test_name);
	CHECK(st == 0 || st == 77, "unprivileged child failed with %d", st);
}

/* seccomp: userfaultfd(2) -> ENOSYS and ioctl(USERFAULTFD_IOC_NEW) -> EPERM. */
static int child_no_uffd(void *arg)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xAA00, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	(void)arg;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 77;
	execl("/proc/self/exe", "test_context", "no-uffd", (char *)NULL);
	return 4;
}

static int exec_no_uffd(void)
{
	struct uhmm_sysinfo si;
	struct uhmm_mm *mm = NULL;
	int ret;

	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_NONE || !strlen(si.advice))
		return 1;
	ret = uhmm_mm_get(&mm);
	if (ret != -ENOSYS || mm)
		return 2;
	if (!strstr(uhmm_last_error(), "userfaultfd"))
		return 3;
	return 0;
}

static void test_no_uffd(void)
{
	int st = run_child(child_no_uffd, NULL);

	CHECK(st == 0 || st == 77, "no-userfaultfd child failed with %d", st);
}

static void test_sysinfo(void)
{
	struct uhmm_sysinfo si;

	CHECK_EQ(uhmm_sysinfo(NULL), -EINVAL);
	CHECK_EQ(uhmm_sysinfo(&si), 0);
	CHECK_EQ(si.page_size, page_size);
	CHECK(si.uffd_mode != UHMM_UFFD_NONE, "mode");
	CHECK((si.active & ~si.features) == 0, "active is a subset of features");
	if (getenv("UHMM_DISABLE") && !strcmp(getenv("UHMM_DISABLE"), "all"))
		CHECK_EQ(si.active, 0);
	CHECK(!strcmp(uhmm_feature_name(UHMM_FEAT_MOVE), "move"), "name");
}

/* In the exec'd child: is any of uhmm's descriptors still open? */
static int exec_fd_check(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	int leaked = 0;

	if (!dir)
		return 2;
	while ((de = readdir(dir))) {
		char path[300], target[256];
		ssize_t len;

		if (atoi(de->d_name) == dirfd(dir))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (strstr(target, "userfaultfd") || strstr(target, "eventfd") ||
		    strstr(target, "/pagemap") || strstr(target, "/maps")) {
			fprintf(stderr, "test_context: exec'd child inherited fd %s -> %s\n",
				de->d_name, target);
			leaked++;
		}
	}
	closedir(dir);
	return leaked ? 1 : 0;
}

/*
 * Every descriptor uhmm opens (the userfaultfd, the service eventfd,
 * pagemap, maps) is close-on-exec: a program the process execs inherits
 * none of them.
 */
static void test_exec_no_leak(void)
{
	struct uhmm_mm *mm = test_mm();
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	uint32_t st[4];
	pid_t pid;
	int status;

	memset(p, 1, 2 * page_size);
	/* Opens the pagemap (and maps, where PROCMAP_QUERY is used) fds too. */
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 4, st), 0);
	CHECK_EQ(count_uffds(), 1);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		execl("/proc/self/exe", "test_context", "fd-check", (char *)NULL);
		_exit(3);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "exec'd child saw uhmm's descriptors (status %#x)", status);
	munmap(p, 4 * page_size);
	uhmm_mm_put(mm);
	printf("test_context: an exec'd child inherits none of uhmm's descriptors "
	       "(userfaultfd, eventfd, pagemap, maps): ok\n");
}

static const struct test_case cases[] = {
	TEST_CASE(test_user_mode_only),
	TEST_CASE(test_no_uffd),
	TEST_CASE(test_sysinfo),
	TEST_CASE(test_refcount),
	TEST_CASE(test_teardown_with_notifiers),
	TEST_CASE(test_exec_no_leak),
};

int main(int argc, char **argv)
{
	test_name = "test_context";
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	/* Children exec this program again so that they probe afresh. */
	if (argc > 1 && !strcmp(argv[1], "user-mode"))
		return exec_user_mode();
	if (argc > 1 && !strcmp(argv[1], "no-uffd"))
		return exec_no_uffd();
	if (argc > 1 && !strcmp(argv[1], "fd-check"))
		return exec_fd_check();
	return test_main(argc, argv, "test_context", TEST_CASES(cases), NULL, NULL);
}
