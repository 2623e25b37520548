// SPDX-License-Identifier: MIT
/*
 * Read-mostly duplication, on two simdev devices with real memory and real
 * threads.
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
 *  - discard of a read-mostly range drops the copies.
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

static void test_read_mostly(void)
{
	struct uhmm_policy *pol;
	struct uhmm_policy_range *r;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d[2];
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				       .granularity = 1 };
	int id[2];
	char *p;
	uint64_t *seen;

	seen = malloc(NPG * page_size);
	CHECK(seen != NULL, "malloc");
	pol = ppol(NULL);
	d[0] = pdev(pol, 1024, 2, &id[0]);
	d[1] = pdev(pol, 1024, 2, &id[1]);
	p = map_aligned_2m(BLK, RW);
	for (size_t i = 0; i < NPG * page_size / 8; i++)
		((uint64_t *)(void *)p)[i] = 0x1000000 + i;

	/* Duplicate. */
	CHECK_EQ(uhmm_policy_range_add(pol, p, NPG * page_size, &at, &r), 0);
	dev_read_all(d[0], p, seen);
	check_same(p, seen, "device 0");
	dev_read_all(d[1], p, seen);
	check_same(p, seen, "device 1");
	st = pstats(r, true);
	CHECK_EQ(st.copies_dev[id[0]], NPG);
	CHECK_EQ(st.copies_dev[id[1]], NPG);
	CHECK_EQ(st.resident_cpu, NPG);
	CHECK_EQ(st.duplicated, 2 * NPG);
	CHECK_EQ(on_dev(d[0], p, NPG), 0);
	CHECK_EQ(uhmm_policy_tenant_pages(pol, 0, id[0]), NPG);
	printf("%s: ok: duplicate: %d read-only copies on each device, pages stay home, "
	       "every byte read right\n", test_name, NPG);

	/* Collapse on a CPU write. */
	((uint64_t *)(void *)(p + 3 * page_size))[7] = 0xC0FFEE;
	st = pstats(r, false);
	CHECK_EQ(st.collapses, 1);
	CHECK_EQ(st.copies_dev[id[0]], NPG - 1);
	CHECK_EQ(st.copies_dev[id[1]], NPG - 1);
	dev_read_all(d[0], p, seen);
	check_same(p, seen, "device 0 after the CPU write");
	CHECK_EQ(seen[3 * page_size / 8 + 7], 0xC0FFEE);
	dev_read_all(d[1], p, seen);
	check_same(p, seen, "device 1 after the CPU write");
	st = pstats(r, false);
	CHECK_EQ(st.copies_dev[id[0]], NPG);	/* copied again on the next read */
	printf("%s: ok: collapse on a CPU write: one granule's copies dropped on both "
	       "devices, both read the new bytes\n", test_name);

	/* Collapse on a device write. */
	{
		struct wr k = { .p = (uint64_t *)(void *)(p + 5 * page_size), .v = 0xD1D1 };

		CHECK_EQ(uhmm_simdev_launch(d[1], 4, write_kernel, &k, NULL), 0);
		st = pstats(r, false);
		CHECK_EQ(st.collapses, 2);
		CHECK_EQ(st.copies_dev[id[0]], NPG - 1);
		dev_read_all(d[0], p, seen);
		check_same(p, seen, "device 0 after device 1's write");
		CHECK_EQ(seen[5 * page_size / 8 + 2], 0xD1D1 + 2);
		CHECK_EQ(((uint64_t *)(void *)(p + 5 * page_size))[3], 0xD1D1 + 3);
	}
	printf("%s: ok: collapse on a device write: device 0 reads device 1's bytes\n",
	       test_name);

	/* No stale copy while a CPU thread writes and both devices read. */
	{
		struct seq s = { .p = p };
		pthread_t th;
		const size_t items = 3000;

		for (size_t i = page_size / 8; i < NPG * page_size / 8; i++)
			((uint64_t *)(void *)p)[i] = 0x5a5a5a5a5a5a5a5aull;
		CHECK_EQ(pthread_create(&th, NULL, writer, &s), 0);
		for (int l = 0; l < 6; l++)
			CHECK_EQ(uhmm_simdev_launch(d[l % 2], items, seq_kernel, &s, NULL), 0);
		atomic_store(&s.stop, 1);
		pthread_join(th, NULL);
		st = pstats(r, false);
		CHECK(atomic_load(&s.bad) == 0, "%d device reads saw a stale or wrong copy",
		      atomic_load(&s.bad));
		printf("%s: ok: %zu device reads against %llu CPU page writes: none stale "
		       "(%llu collapses, %llu copies made)\n", test_name, 6 * items,
		       (unsigned long long)s.writes, (unsigned long long)st.collapses,
		       (unsigned long long)st.duplicated);
	}

	/* Discard drops the copies; clearing read-mostly gives write access back. */
	dev_read_all(d[0], p, seen);
	CHECK_EQ(uhmm_policy_discard(pol, p + 8 * page_size, 4 * page_size), 0);
	st = pstats(r, false);
	CHECK(st.copies_dev[id[0]] <= NPG - 4, "copies %llu after discard",
	      (unsigned long long)st.copies_dev[id[0]]);
	for (size_t i = 8 * page_size / 8; i < 12 * page_size / 8; i++)
		CHECK_EQ(((uint64_t *)(void *)p)[i], 0);
	dev_read_all(d[1], p, seen);
	check_same(p, seen, "device 1 after the discard");
	at.read_mostly = false;
	CHECK_EQ(uhmm_policy_range_set(r, &at), 0);
	st = pstats(r, false);
	CHECK_EQ(st.copies_dev[id[0]] + st.copies_dev[id[1]], 0);
	CHECK_EQ(uhmm_policy_tenant_pages(pol, 0, id[0]), 0);
	memset(p, 0x77, NPG * page_size);	/* writable again, no fault to catch */
	dev_read_all(d[0], p, seen);
	check_same(p, seen, "device 0 after read-mostly was cleared");
	printf("%s: ok: discard drops copies; clearing read-mostly restores write access\n",
	       test_name);

	/* A write fault outside any read-mostly range still kills. */
	{
		pid_t pid = fork();
		int status;

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
	}
	printf("%s: ok: other write faults still reach the previous handler\n", test_name);

	pteardown(pol, d, 2);
	munmap(p, BLK);
	free(seen);
}

static const struct test_case cases[] = {
	TEST_CASE(test_read_mostly),
};

TEST_MAIN("test_policy_readmostly", NULL, NULL)
