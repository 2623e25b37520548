// SPDX-License-Identifier: MIT
/*
 * Read-mostly duplication, on two simdev devices with real memory and real
 * threads.  Each case builds its own state (rm_setup(): a layer, two
 * devices, a 16-page read-mostly range with a known pattern) and, where it
 * needs copies, makes them first (rm_duplicate()).
 *
 *  - duplicate: both devices read every word of a 16-page range: each gets
 *    read-only copies in its own memory (16 copies each), the pages stay in
 *    system memory, the sums are right;
 *  - collapse on a CPU write: the write (caught as a write-protection
 *    fault) drops both devices' copies of that page's granule only; both
 *    devices then read the new bytes, every byte of every page compared;
 *  - collapse on a device write: device 1 writes a page, device 0 then reads
 *    device 1's bytes;
 *  - no stale copy under concurrency: a CPU thread keeps writing a
 *    sequence number over a whole page and publishing it; device kernels on
 *    both devices read the published number first and then the page: the
 *    page must never be older than what was published before the read
 *    (a copy that outlived a write would be), and never torn across a
 *    granule's copy; then the range's attributes are cleared and every
 *    byte checked;
 *  - discard of a read-mostly range drops the copies; clearing read-mostly
 *    drops the rest and gives write access back;
 *  - a write fault outside any read-mostly range still reaches the handler
 *    that was there before.
 */
#include "policy_common.h"

#define NPG	16

struct readall {
	const uint64_t *p;
	uint64_t *out;		/* NPG * words: what the device read */
	size_t words;
};

static void readall_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct readall *k = arg;

	for (size_t w = 0; w < k->words; w++)
		k->out[item * k->words + w] = uhmm_simdev_load64(t, k->p + item * k->words + w);
}

static void dev_read_all(struct uhmm_simdev *d, const char *p, uint64_t *out)
{
	struct readall k = { .p = (const uint64_t *)(const void *)p, .out = out,
			     .words = page_size / 8 };

	CHECK_EQ(uhmm_simdev_launch(d, NPG, readall_kernel, &k, NULL), 0);
}

static void check_same(const char *p, const uint64_t *seen, const char *who)
{
	for (size_t i = 0; i < NPG * page_size / 8; i++)
		if (((const uint64_t *)(const void *)p)[i] != seen[i]) {
			fprintf(stderr, "%s: first difference: page %zu word %zu: memory %#llx, "
				"device %#llx\n", who, i / (page_size / 8), i % (page_size / 8),
				(unsigned long long)((const uint64_t *)(const void *)p)[i],
				(unsigned long long)seen[i]);
			break;
		}
	CHECK(!memcmp(p, seen, NPG * page_size), "%s read different bytes than memory holds", who);
}

struct wr {
	uint64_t *p;
	uint64_t v;
};

static void write_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct wr *k = arg;

	uhmm_simdev_store64(t, k->p + item, k->v + item);
}

/* Concurrency: a CPU writer publishing sequence numbers, device readers. */
struct seq {
	char *p;			/* page 0 of the range is written */
	_Atomic uint64_t published;
	atomic_int stop;
	atomic_int bad;
	uint64_t writes;
};

static void *writer(void *arg)
{
	struct seq *s = arg;
	uint64_t v = 1;

	while (!atomic_load(&s->stop)) {
		uint64_t *w = (uint64_t *)(void *)s->p;

		for (size_t i = 0; i < page_size / 8; i++)
			__atomic_store_n(&w[i], v, __ATOMIC_RELAXED);
		atomic_store(&s->published, v);
		v++;
		s->writes++;
	}
	return NULL;
}

static void seq_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct seq *s = arg;
	uint64_t pub = atomic_load(&s->published);	/* the test's own memory */
	const uint64_t *w = (const uint64_t *)(const void *)s->p;
	uint64_t first = uhmm_simdev_load64(t, &w[item % (page_size / 8)]);

	if (first < pub)
		atomic_fetch_add(&s->bad, 1);
	/* Pages 1..NPG-1 are never written: their copies stay right. */
	if (uhmm_simdev_load64(t, (const char *)s->p + (1 + item % (NPG - 1)) * page_size) !=
	    0x5a5a5a5a5a5a5a5aull)
		atomic_fetch_add(&s->bad, 1);
}

/* One case's state: the layer, two devices, the read-mostly range. */
struct rm {
	struct uhmm_policy *pol;
	struct uhmm_policy_range *r;
	struct uhmm_simdev *d[2];
	struct uhmm_policy_attr at;
	int id[2];
	char *p;		/* NPG pages of the range, in a 2 MiB block */
	uint64_t *seen;		/* what a device read: NPG pages */
};

/* A layer, two devices and a read-mostly range of NPG pages (word i: 0x1000000 + i). */
static void rm_setup(struct rm *s)
{
	*s = (struct rm){ .at = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				  .granularity = 1 } };
	s->seen = malloc(NPG * page_size);
	CHECK(s->seen != NULL, "malloc");
	s->pol = ppol(NULL);
	s->d[0] = pdev(s->pol, 1024, 2, &s->id[0]);
	s->d[1] = pdev(s->pol, 1024, 2, &s->id[1]);
	s->p = map_aligned_2m(BLK, RW);
	for (size_t i = 0; i < NPG * page_size / 8; i++)
		((uint64_t *)(void *)s->p)[i] = 0x1000000 + i;
	CHECK_EQ(uhmm_policy_range_add(s->pol, s->p, NPG * page_size, &s->at, &s->r), 0);
}

static void rm_teardown(struct rm *s)
{
	pteardown(s->pol, s->d, 2);
	munmap(s->p, BLK);
	free(s->seen);
}

/* Both devices read every byte: each holds NPG read-only copies. */
static void rm_duplicate(struct rm *s)
{
	struct uhmm_policy_stats st;

	dev_read_all(s->d[0], s->p, s->seen);
	check_same(s->p, s->seen, "device 0");
	dev_read_all(s->d[1], s->p, s->seen);
	check_same(s->p, s->seen, "device 1");
	st = pstats(s->r, true);
	CHECK_EQ(st.copies_dev[s->id[0]], NPG);
	CHECK_EQ(st.copies_dev[s->id[1]], NPG);
}

static void test_duplicate(void)
{
	struct uhmm_policy_stats st;
	struct rm s;

	rm_setup(&s);
	rm_duplicate(&s);
	st = pstats(s.r, true);
	CHECK_EQ(st.resident_cpu, NPG);
	CHECK_EQ(st.duplicated, 2 * NPG);
	CHECK_EQ(on_dev(s.d[0], s.p, NPG), 0);
	CHECK_EQ(uhmm_policy_tenant_pages(s.pol, 0, s.id[0]), NPG);
	printf("%s: ok: duplicate: %d read-only copies on each device, pages stay home, "
	       "every byte read right\n", test_name, NPG);
	rm_teardown(&s);
}

static void test_collapse_cpu_write(void)
{
	struct uhmm_policy_stats st;
	struct rm s;

	rm_setup(&s);
	rm_duplicate(&s);
	((uint64_t *)(void *)(s.p + 3 * page_size))[7] = 0xC0FFEE;
	st = pstats(s.r, false);
	CHECK_EQ(st.collapses, 1);
	CHECK_EQ(st.copies_dev[s.id[0]], NPG - 1);
	CHECK_EQ(st.copies_dev[s.id[1]], NPG - 1);
	dev_read_all(s.d[0], s.p, s.seen);
	check_same(s.p, s.seen, "device 0 after the CPU write");
	CHECK_EQ(s.seen[3 * page_size / 8 + 7], 0xC0FFEE);
	dev_read_all(s.d[1], s.p, s.seen);
	check_same(s.p, s.seen, "device 1 after the CPU write");
	st = pstats(s.r, false);
	CHECK_EQ(st.copies_dev[s.id[0]], NPG);	/* copied again on the next read */
	printf("%s: ok: collapse on a CPU write: one granule's copies dropped on both "
	       "devices, both read the new bytes\n", test_name);
	rm_teardown(&s);
}

static void test_collapse_device_write(void)
{
	struct uhmm_policy_stats st;
	struct rm s;
	struct wr k;

	rm_setup(&s);
	rm_duplicate(&s);
	k = (struct wr){ .p = (uint64_t *)(void *)(s.p + 5 * page_size), .v = 0xD1D1 };
	CHECK_EQ(uhmm_simdev_launch(s.d[1], 4, write_kernel, &k, NULL), 0);
	st = pstats(s.r, false);
	CHECK_EQ(st.collapses, 1);
	CHECK_EQ(st.copies_dev[s.id[0]], NPG - 1);
	dev_read_all(s.d[0], s.p, s.seen);
	check_same(s.p, s.seen, "device 0 after device 1's write");
	CHECK_EQ(s.seen[5 * page_size / 8 + 2], 0xD1D1 + 2);
	CHECK_EQ(((uint64_t *)(void *)(s.p + 5 * page_size))[3], 0xD1D1 + 3);
	printf("%s: ok: collapse on a device write: device 0 reads device 1's bytes\n",
	       test_name);
	rm_teardown(&s);
}

/* No stale copy while a CPU thread writes and both devices read. */
static void test_no_stale_copy(void)
{
	const size_t items = 3000;
	struct uhmm_policy_stats st;
	struct rm s;
	struct seq q;
	pthread_t th;

	rm_setup(&s);
	rm_duplicate(&s);
	q = (struct seq){ .p = s.p };
	for (size_t i = page_size / 8; i < NPG * page_size / 8; i++)
		((uint64_t *)(void *)s.p)[i] = 0x5a5a5a5a5a5a5a5aull;
	CHECK_EQ(pthread_create(&th, NULL, writer, &q), 0);
	for (int l = 0; l < 6; l++)
		CHECK_EQ(uhmm_simdev_launch(s.d[l % 2], items, seq_kernel, &q, NULL), 0);
	atomic_store(&q.stop, 1);
	pthread_join(th, NULL);
	st = pstats(s.r, false);
	CHECK(atomic_load(&q.bad) == 0, "%d device reads saw a stale or wrong copy",
	      atomic_load(&q.bad));
	printf("%s: ok: %zu device reads against %llu CPU page writes: none stale "
	       "(%llu collapses, %llu copies made)\n", test_name, 6 * items,
	       (unsigned long long)q.writes, (unsigned long long)st.collapses,
	       (unsigned long long)st.duplicated);
	rm_teardown(&s);
}

/* Discard drops the copies; clearing read-mostly gives write access back. */
static void test_discard_and_clear(void)
{
	struct uhmm_policy_stats st;
	struct rm s;

	rm_setup(&s);
	rm_duplicate(&s);
	CHECK_EQ(uhmm_policy_discard(s.pol, s.p + 8 * page_size, 4 * page_size), 0);
	st = pstats(s.r, false);
	CHECK(st.copies_dev[s.id[0]] <= NPG - 4, "copies %llu after discard",
	      (unsigned long long)st.copies_dev[s.id[0]]);
	CHECK(st.copies_dev[s.id[1]] <= NPG - 4, "device 1: copies %llu after discard",
	      (unsigned long long)st.copies_dev[s.id[1]]);
	for (size_t i = 8 * page_size / 8; i < 12 * page_size / 8; i++)
		CHECK_EQ(((uint64_t *)(void *)s.p)[i], 0);
	dev_read_all(s.d[0], s.p, s.seen);
	check_same(s.p, s.seen, "device 0 after the discard");
	dev_read_all(s.d[1], s.p, s.seen);
	check_same(s.p, s.seen, "device 1 after the discard");
	s.at.read_mostly = false;
	CHECK_EQ(uhmm_policy_range_set(s.r, &s.at), 0);
	st = pstats(s.r, false);
	CHECK_EQ(st.copies_dev[s.id[0]] + st.copies_dev[s.id[1]], 0);
	CHECK_EQ(uhmm_policy_tenant_pages(s.pol, 0, s.id[0]), 0);
	memset(s.p, 0x77, NPG * page_size);	/* writable again, no fault to catch */
	dev_read_all(s.d[0], s.p, s.seen);
	check_same(s.p, s.seen, "device 0 after read-mostly was cleared");
	printf("%s: ok: discard drops copies; clearing read-mostly restores write access\n",
	       test_name);
	rm_teardown(&s);
}

/* A write fault outside any read-mostly range still kills. */
static void test_other_write_faults(void)
{
	struct rm s;
	pid_t pid;
	int status;

	rm_setup(&s);
	rm_duplicate(&s);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char *ro = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);

		ro[0] = 1;
		_exit(0);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	/*
	 * The handler that was there before runs (a sanitizer's reports
	 * and exits), or the default kills: never a silent success.
	 */
	CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) ||
	      (WIFEXITED(status) && WEXITSTATUS(status) != 0),
	      "a write to read-only memory elsewhere did not fault (status %#x)", status);
	printf("%s: ok: other write faults still reach the previous handler\n", test_name);
	rm_teardown(&s);
}

static const struct test_case cases[] = {
	TEST_CASE(test_duplicate),
	TEST_CASE(test_collapse_cpu_write),
	TEST_CASE(test_collapse_device_write),
	TEST_CASE(test_no_stale_copy),
	TEST_CASE(test_discard_and_clear),
	TEST_CASE(test_other_write_faults),
};

TEST_MAIN("test_policy_readmostly", NULL, NULL)
