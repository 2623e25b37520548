// SPDX-License-Identifier: MIT
/*
 * The process's mappings: permissions and kind of each mapping.
 *
 * Fast path (Linux 6.11+): the PROCMAP_QUERY ioctl on /proc/self/maps asks
 * the kernel about one mapping at a time, always fresh.  Fallback: parse the
 * text of /proc/self/maps into a cached sorted array, re-read when uhmm__as_gen
 * says the address space changed (every wrapper and uffd event bumps it) or
 * when a caller asks for a fresh copy.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "sys.h"
#include "vma.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

static pthread_mutex_t vma_lock = PTHREAD_MUTEX_INITIALIZER;
static int maps_fd = -1;		/* for PROCMAP_QUERY; reopened after fork */
static struct uhmm__vma *cache;
static size_t cache_n, cache_cap;
static unsigned long cache_gen;
static bool cache_ok;			/* cache[] is one whole read of maps */

void uhmm__vma_atfork_child(void)
{
	pthread_mutex_init(&vma_lock, NULL);
	if (maps_fd >= 0)
		close(maps_fd);		/* it shows the parent's mappings */
	maps_fd = -1;
	cache_gen = 0;
	cache_ok = false;
}

static bool special_name(const char *name)
{
	static const char *const names[] = {
		"[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[uprobes]",
		"[sigpage]", "[vectors]",
	};

	for (size_t i = 0; i < UHMM__ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			return true;
	/* Device files are mapped VM_IO / VM_PFNMAP. */
	return !strncmp(name, "/dev/", 5) && strncmp(name, "/dev/zero", 9) &&
	       strncmp(name, "/dev/shm/", 9);
}

/* log2(@size / page size) for a huge page size, 0 when not larger than a page. */
static unsigned int size_order(unsigned long long size)
{
	unsigned int o = 0;

	while (o < 31 && ((unsigned long long)uhmm__page_size << (o + 1)) <= size)
		o++;
	return o;
}

/*
 * The kind of a mapping.  *@order gets the huge page order of a hugetlbfs
 * mapping when it is known here: from @huge_pagesize (PROCMAP_QUERY's
 * vma_page_size, the kernel's vma_kernel_pagesize()), or from the block
 * size statfs() reports for a hugetlbfs file (the huge page size of its
 * mount); 0 otherwise (the caller reads smaps for an anonymous one).
 */
static unsigned int classify(unsigned int prot_flags, bool has_file,
			     unsigned int dev_major, const char *name,
			     unsigned long long huge_pagesize, unsigned int *order)
{
	unsigned int f = prot_flags;
	bool shared = f & UHMM__VMA_SHARED;

	*order = 0;
	if (name[0] && special_name(name))
		return f | UHMM__VMA_SPECIAL;
	if (huge_pagesize > uhmm__page_size || strstr(name, "/anon_hugepage")) {
		*order = size_order(huge_pagesize);
		return f | UHMM__VMA_HUGETLB | (shared ? UHMM__VMA_SHMEM : UHMM__VMA_ANON);
	}
	if (!has_file)
		return f | (shared ? UHMM__VMA_SHMEM : UHMM__VMA_ANON);
	if (shared && (!strncmp(name, "/dev/zero", 9) || !strncmp(name, "/SYSV", 5)))
		return f | UHMM__VMA_SHMEM;
	if (dev_major == 0 && name[0] == '/') {
		struct statfs sfs;
		char path[4096];
		char *del;

		snprintf(path, sizeof(path), "%s", name);
		del = strstr(path, " (deleted)");
		if (del)
			*del = 0;
		if (statfs(path, &sfs) == 0 && (unsigned long)sfs.f_type == HUGETLBFS_MAGIC) {
			*order = size_order((unsigned long long)sfs.f_bsize);
			return f | UHMM__VMA_HUGETLB | UHMM__VMA_FILE;
		}
	}
	return f | UHMM__VMA_FILE;
}

/* ---- fast path: PROCMAP_QUERY ---------------------------------------------- */

/*
 * One PROCMAP_QUERY per mapping returned, and one more to learn whether
 * another mapping follows in [start, end) (none when the last one reaches
 * @end): never a walk past what the caller asked for.
 */
static int query_find(uintptr_t start, uintptr_t end, struct uhmm__vma *out,
		      size_t max, size_t *n)
{
	char name[4096];
	uintptr_t cur = start;
	size_t cnt = 0;

	if (maps_fd < 0) {
		maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
		if (maps_fd < 0)
			return uhmm__proc_err(errno);
	}
	while (cur < end) {
		struct procmap_query q = {
			.size = sizeof(q),
			.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
			.query_addr = cur,
			.vma_name_size = sizeof(name),
			.vma_name_addr = (uintptr_t)name,
		};
		unsigned int f = 0;

		name[0] = 0;
		if (ioctl(maps_fd, PROCMAP_QUERY, &q) < 0) {
			if (errno == ENOENT)
				break;		/* nothing at or after cur */
			if (errno == ENAMETOOLONG) {
				q.vma_name_size = 0;
				q.vma_name_addr = 0;
				if (ioctl(maps_fd, PROCMAP_QUERY, &q) < 0)
					return uhmm__proc_err(errno);
			} else {
				return uhmm__proc_err(errno);
			}
		}
		if (q.vma_start >= end)
			break;
		if (q.vma_flags & PROCMAP_QUERY_VMA_READABLE)
			f |= UHMM__VMA_READ;
		if (q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE)
			f |= UHMM__VMA_WRITE;
		if (q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE)
			f |= UHMM__VMA_EXEC;
		if (q.vma_flags & PROCMAP_QUERY_VMA_SHARED)
			f |= UHMM__VMA_SHARED;
		if (cnt == max) {
			cnt++;		/* one more: the caller asks again from there */
			break;
		}
		out[cnt].start = q.vma_start;
		out[cnt].end = q.vma_end;
		out[cnt].flags = classify(f, q.inode != 0, q.dev_major, name,
					  q.vma_page_size, &out[cnt].order);
		cnt++;
		cur = q.vma_end;
		if (cur == 0)
			break;
	}
	*n = cnt;
	return 0;
}

/* ---- fallback: parse /proc/self/maps ---------------------------------------- */

/*
 * Parse one line of /proc/self/maps ("start-end perms offset maj:min inode
 * name"): by hand, without stdio or scanf, which may allocate from the
 * application's heap (this runs while a migration holds pages frozen).
 */
static bool parse_maps_line(char *line, unsigned long *s, unsigned long *e, char perms[4],
			    unsigned int *maj, unsigned long *ino, char **name)
{
	char *p = line, *q;

	*s = strtoul(p, &q, 16);
	if (q == p || *q != '-')
		return false;
	p = q + 1;
	*e = strtoul(p, &q, 16);
	if (q == p || *q != ' ' || strlen(q + 1) < 5)
		return false;
	memcpy(perms, q + 1, 4);
	p = q + 6;
	strtoul(p, &q, 16);		/* offset */
	if (q == p || *q != ' ')
		return false;
	p = q + 1;
	*maj = (unsigned int)strtoul(p, &q, 16);
	if (q == p || *q != ':')
		return false;
	p = q + 1;
	strtoul(p, &q, 16);		/* minor */
	if (q == p || *q != ' ')
		return false;
	p = q + 1;
	*ino = strtoul(p, &q, 10);
	if (q == p)
		return false;
	while (*q == ' ')
		q++;
	*name = q;
	return true;
}

/* The text of /proc/self/maps, in a buffer of the library's own (vma_lock held). */
static char *maps_text;
static size_t maps_cap;

static int read_fd(int fd, size_t *len)
{
	size_t n = 0;

	for (;;) {
		ssize_t r;

		if (maps_cap - n < 4096 + 1) {
			size_t nc = maps_cap ? maps_cap * 2 : 65536;
			char *nb = uhmm__realloc(maps_text, nc);

			if (!nb)
				return -ENOMEM;
			maps_text = nb;
			maps_cap = nc;
		}
		r = read(fd, maps_text + n, maps_cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return uhmm__proc_err(errno);
		if (r == 0)
			break;
		n += (size_t)r;
	}
	maps_text[n] = 0;
	*len = n;
	return 0;
}

static int read_maps(size_t *len)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return uhmm__proc_err(errno);
	ret = read_fd(fd, len);
	close(fd);
	return ret;
}

/*
 * The huge page order of the hugetlbfs mappings classify() could not size
 * (MAP_HUGETLB memory: "/anon_hugepage (deleted)" names no file), from the
 * KernelPageSize line of each one in /proc/self/smaps, read into the same
 * buffer as maps (its text is parsed already).  Only without PROCMAP_QUERY
 * and only when such a mapping exists: smaps walks every page table.
 */
#define VMA_MAYBE_HUGETLB	(1u << 31)	/* reload_cache() to smaps_orders() */

static int smaps_orders(void)
{
	size_t len, ci = 0;
	uintptr_t cur = 0;
	unsigned int o;
	char *line, *next;
	int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -EIO;
	ret = read_fd(fd, &len);
	close(fd);
	if (ret)
		return ret;
	for (line = maps_text; line < maps_text + len; line = next) {
		char *nl = strchr(line, '\n'), *q;
		unsigned long s, e;

		next = nl ? nl + 1 : maps_text + len;
		if (nl)
			*nl = 0;
		s = strtoul(line, &q, 16);
		if (q != line && *q == '-') {
			e = strtoul(q + 1, &q, 16);
			if (*q == ' ' && e > s) {
				cur = s;
				continue;
			}
		}
		if (strncmp(line, "KernelPageSize:", 15))
			continue;
		while (ci < cache_n && cache[ci].start < cur)
			ci++;
		if (ci >= cache_n || cache[ci].start != cur)
			continue;
		o = size_order(strtoull(line + 15, NULL, 10) * 1024);
		if ((cache[ci].flags & UHMM__VMA_HUGETLB) && !cache[ci].order)
			cache[ci].order = o;
		else if ((cache[ci].flags & VMA_MAYBE_HUGETLB) && o) {
			cache[ci].flags |= UHMM__VMA_HUGETLB;
			cache[ci].order = o;
		}
	}
	for (size_t i = 0; i < cache_n; i++)
		cache[i].flags &= ~VMA_MAYBE_HUGETLB;
	return 0;
}

static int reload_cache(void)
{
	bool need_smaps = false;
	size_t len, n = 0;
	char *line, *next;
	int ret = read_maps(&len);

	if (ret)
		return ret;
	for (line = maps_text; line < maps_text + len; line = next) {
		unsigned long s, e, ino;
		unsigned int maj;
		char perms[4];
		unsigned int fl = 0;
		char *name, *nl = strchr(line, '\n');

		next = nl ? nl + 1 : maps_text + len;
		if (nl)
			*nl = 0;
		if (!parse_maps_line(line, &s, &e, perms, &maj, &ino, &name))
			continue;
		if (perms[0] == 'r')
			fl |= UHMM__VMA_READ;
		if (perms[1] == 'w')
			fl |= UHMM__VMA_WRITE;
		if (perms[2] == 'x')
			fl |= UHMM__VMA_EXEC;
		if (perms[3] == 's')
			fl |= UHMM__VMA_SHARED;
		if (n == cache_cap) {
			size_t nc = cache_cap ? cache_cap * 2 : 256;
			struct uhmm__vma *nv = uhmm__realloc(cache, nc * sizeof(*nv));

			if (!nv)
				return -ENOMEM;
			cache = nv;
			cache_cap = nc;
		}
		cache[n].start = s;
		cache[n].end = e;
		cache[n].flags = classify(fl, ino != 0, maj, name, 0, &cache[n].order);
		if ((cache[n].flags & UHMM__VMA_HUGETLB) && !cache[n].order)
			need_smaps = true;
		/*
		 * A file of an internal mount with no path to statfs (a memfd,
		 * a deleted file), both ends 2 MiB aligned: maybe hugetlbfs
		 * (memfd_create(MFD_HUGETLB)); smaps says.
		 */
		if ((cache[n].flags & UHMM__VMA_FILE) && !(cache[n].flags & UHMM__VMA_HUGETLB) &&
		    maj == 0 && (!strncmp(name, "/memfd:", 7) || strstr(name, " (deleted)")) &&
		    !(s & ((2ul << 20) - 1)) && !(e & ((2ul << 20) - 1))) {
			cache[n].flags |= VMA_MAYBE_HUGETLB;
			need_smaps = true;
		}
		n++;
	}
	cache_n = n;
	if (need_smaps && smaps_orders()) {
		/* No sizes: hugetlbfs mappings report order 0, maybe-ones are files. */
		for (size_t i = 0; i < cache_n; i++)
			cache[i].flags &= ~VMA_MAYBE_HUGETLB;
	}
	return 0;
}

static int cache_find(uintptr_t start, uintptr_t end, struct uhmm__vma *out,
		      size_t max, size_t *n, bool fresh)
{
	unsigned long gen = atomic_load(&uhmm__as_gen);
	size_t lo = 0, hi, cnt = 0;
	int ret;

	if (fresh || gen != cache_gen || !cache_ok) {
		/*
		 * A reload that fails half-way (no memory to grow the array)
		 * has overwritten part of the old entries: nothing of it is
		 * used until a reload succeeds.
		 */
		cache_ok = false;
		ret = reload_cache();
		if (ret)
			return ret;
		cache_gen = gen;
		cache_ok = true;
	}
	hi = cache_n;
	while (lo < hi) {		/* first mapping ending after start */
		size_t mid = (lo + hi) / 2;

		if (cache[mid].end <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < cache_n && cache[i].start < end; i++) {
		if (cnt == max) {
			cnt++;		/* one more, as query_find() */
			break;
		}
		out[cnt++] = cache[i];
	}
	*n = cnt;
	return 0;
}

int uhmm__vma_find(uintptr_t start, uintptr_t end, struct uhmm__vma *out,
		   size_t max, size_t *n, bool fresh)
{
	int ret;

	*n = 0;
	if (end <= start)
		return 0;
	pthread_mutex_lock(&vma_lock);
	if (uhmm__has(UHMM_FEAT_PROCMAP_QUERY))
		ret = query_find(start, end, out, max, n);
	else
		ret = cache_find(start, end, out, max, n, fresh);
	pthread_mutex_unlock(&vma_lock);
	return ret;
}

void uhmm__pin_module(const void *addr)
{
	static _Atomic uintptr_t last;	/* base of the object pinned last */
	Dl_info info;
	void *h;

	if (!addr || !dladdr(addr, &info) || !info.dli_fname || !info.dli_fbase ||
	    atomic_load(&last) == (uintptr_t)info.dli_fbase)
		return;
	/* The main program cannot be unloaded (and dlopen may not find it by name). */
	h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
	if (h) {
		dlclose(h);
		atomic_store(&last, (uintptr_t)info.dli_fbase);
	}
}
