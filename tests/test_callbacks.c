// SPDX-License-Identifier: MIT
/*
 * What application callbacks may do (docs/CONCURRENCY.md, "What callbacks
 * may do"): each callback here reads and writes memory uhmm manages, pages
 * that sit in device memory among them, and must neither deadlock nor see
 * wrong data:
 *  - an invalidate callback run on the application's thread (wrapped
 *    munmap) and one run on uhmm's worker (a raw munmap seen as an event);
 *  - a device's migrate_to_ram (on the worker, for a CPU fault) that
 *    touches another device-resident page;
 *  - a device's page_free (on the worker, inside a finalize) that does.
 * A hang is a failure (CTest's timeout); nothing here waits on time.
 */
#include <sys/syscall.h>

#include "common.h"

#define NAME "test_callbacks"
#define N 8

static struct uhmm_mm *mm;
static struct tdev *dev;
static char *victim;		/* device-resident memory the callbacks read */
static atomic_long cb_reads;	/* callback reads that saw the right data */
static atomic_long cb_bad;	/* callback reads that saw wrong data */

/* Read page @i of the victim from a callback and check it. */
static void callback_touch(size_t i)
{
	volatile uint32_t *w = (volatile uint32_t *)(victim + i * page_size);

	if (w[0] == 77u * 2654435761u + (uint32_t)(i * page_size / 4))
		atomic_fetch_add(&cb_reads, 1);
	else
		atomic_fetch_add(&cb_bad, 1);
}

static void victim_to_device(void)
{
	CHECK_EQ(check_pattern(victim, N, 77), -1);	/* all home first */
	CHECK_EQ(tdev_to_dev(dev, (uintptr_t)victim, (uintptr_t)victim + N * page_size, NULL), N);
	CHECK(page_state_of(mm, victim) & UHMM_PS_DEVICE_PRIVATE, "victim on the device");
}

/* ---- invalidate callbacks --------------------------------------------------- */

static atomic_int inv_next;	/* which victim page the next callback reads */

static bool inv_touch(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		      unsigned long seq)
{
	(void)r;
	uhmm_interval_set_seq(mni, seq);
	callback_touch((size_t)atomic_fetch_add(&inv_next, 1) % N);
	return true;
}
static const struct uhmm_interval_notifier_ops touch_ops = { .invalidate = inv_touch };

static void test_invalidate(bool raw)
{
	struct uhmm_interval_notifier mni = { 0 };
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	long before = atomic_load(&cb_reads);

	memset(p, 1, 4 * page_size);
	victim_to_device();
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, 4 * page_size,
					       &touch_ops), 0);
	if (raw) {
		/*
		 * A raw munmap bypasses the wrappers: the worker sees the
		 * UNMAP event and runs the callback, which faults on a page
		 * the device holds: that fault must still be served.
		 */
		struct uhmm_sysinfo si;

		uhmm_sysinfo(&si);
		if (!(si.active & UHMM_FEAT_UFFD_WP)) {
			uhmm_interval_notifier_remove(&mni);
			CHECK_EQ(munmap(p, 4 * page_size), 0);
			SKIP_CASE("%s: invalidate on the worker: not seen without uffd "
				  "write-protect (fallback)", NAME);
		}
		CHECK_EQ(syscall(SYS_munmap, p + page_size, page_size), 0);
		/* A wrapped call after it waits for the event to be processed. */
		CHECK_EQ(munmap(p + 3 * page_size, page_size), 0);
	} else {
		CHECK_EQ(munmap(p + page_size, page_size), 0);
	}
	CHECK(atomic_load(&cb_reads) > before, "the callback ran and read the device page");
	CHECK_EQ(atomic_load(&cb_bad), 0);
	uhmm_interval_notifier_remove(&mni);
	/*
	 * Only the pages still ours: another thread (uhmm's, a sanitizer
	 * runtime's) may have mapped memory of its own into the holes, and
	 * unmapping it under that thread is what made this test hang under
	 * ASan (the rescue thread's TLS bookkeeping was unmapped here, the
	 * next mapping reused its address and was migrated to the device).
	 */
	CHECK_EQ(munmap(p, page_size), 0);
	CHECK_EQ(munmap(p + 2 * page_size, page_size), 0);
	if (!raw)
		CHECK_EQ(munmap(p + 3 * page_size, page_size), 0);
	printf("%s: invalidate callback on the %s reads a device-resident page: served, "
	       "data right: ok\n", NAME, raw ? "worker (raw munmap event)" : "calling thread");
}

/* ---- device callbacks ------------------------------------------------------- */

static const struct uhmm_devmem_ops *plain_ops;
static atomic_bool touch_in_to_ram, touch_in_free;

static int to_ram_touching(struct uhmm_vm_fault *vmf)
{
	if (atomic_exchange(&touch_in_to_ram, false))
		callback_touch(N - 1);	/* another device page, outside the window */
	return plain_ops->migrate_to_ram(vmf);
}

static void free_touching(struct uhmm_page *page)
{
	if (atomic_exchange(&touch_in_free, false))
		callback_touch(N - 2);
	plain_ops->page_free(page);
}

static const struct uhmm_devmem_ops touching_ops = {
	.page_free = free_touching,
	.migrate_to_ram = to_ram_touching,
};

static void test_device_callbacks(void)
{
	struct tdev *other = tdev_create(mm, 64, 1);
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	long before;

	plain_ops = other->pgmap.ops;
	other->pgmap.ops = &touching_ops;
	fill_pattern(p, 4, 5);
	CHECK_EQ(tdev_to_dev(other, (uintptr_t)p, (uintptr_t)p + 4 * page_size, NULL), 4);

	/* migrate_to_ram of page 0 (worker) touches the victim's device page. */
	victim_to_device();
	before = atomic_load(&cb_reads);
	atomic_store(&touch_in_to_ram, true);
	CHECK_EQ(check_pattern(p, 1, 5), -1);
	CHECK(!atomic_load(&touch_in_to_ram), "migrate_to_ram ran");
	CHECK_EQ(atomic_load(&cb_reads), before + 1);
	printf("%s: migrate_to_ram (worker) reads another device-resident page: served: ok\n",
	       NAME);

	/* page_free (worker, in the fault's finalize) does the same. */
	victim_to_device();
	before = atomic_load(&cb_reads);
	atomic_store(&touch_in_free, true);
	CHECK_EQ(check_pattern(p, 4, 5), -1);
	CHECK(!atomic_load(&touch_in_free), "page_free ran");
	CHECK_EQ(atomic_load(&cb_reads), before + 1);
	CHECK_EQ(atomic_load(&cb_bad), 0);
	printf("%s: page_free (worker) reads another device-resident page: served: ok\n", NAME);

	CHECK_EQ(munmap(p, 4 * page_size), 0);
	other->pgmap.ops = plain_ops;
	tdev_destroy(other);
}

static void case_invalidate_calling_thread(void)
{
	test_invalidate(false);
}

static void case_invalidate_worker(void)
{
	test_invalidate(true);
}

static void start(void)
{
	mm = test_mm();
	dev = tdev_create(mm, 64, 1);
	victim = map_anon(N * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(victim, N, 77);
}

static int finish(void)
{
	CHECK_EQ(check_pattern(victim, N, 77), -1);
	CHECK_EQ(munmap(victim, N * page_size), 0);
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	{ "invalidate_calling_thread", case_invalidate_calling_thread },
	{ "invalidate_worker", case_invalidate_worker },
	TEST_CASE(test_device_callbacks),
};

TEST_MAIN(NAME, start, finish)
