// SPDX-License-Identifier: MIT
/*
 * uhmm from C++: the headers are C, wrapped in extern "C".  Prints the
 * versions, then mirrors a std::vector's pages with a range fault.
 *
 *   c++ -std=c++17 hello.cpp $(pkg-config --cflags --libs uhmm) -o hello
 */
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>
#include <unistd.h>
#include <uhmm/uhmm.h>

namespace {

struct Mirror {
	uhmm_interval_notifier notifier{};	// zeroed, as uhmm requires
	unsigned long invalidations = 0;
};

const uhmm_interval_notifier_ops mirror_ops = {
	[](uhmm_interval_notifier *mni, const uhmm_notifier_range *,
	   unsigned long cur_seq) -> bool {
		uhmm_interval_set_seq(mni, cur_seq);	// no device table to drop
		return true;
	},
};

} // namespace

int main()
{
	std::printf("uhmm headers %s, library %s\n", UHMM_VERSION_STRING, uhmm_version());
	if (uhmm_version_number() != UHMM_VERSION_NUMBER)
		return 1;

	uhmm_mm *mm = nullptr;
	int ret = uhmm_mm_get(&mm);
	if (ret) {
		std::printf("SKIP: uhmm_mm_get: %s (%s)\n", std::strerror(-ret), uhmm_last_error());
		return 77;
	}
	const size_t ps = static_cast<size_t>(sysconf(_SC_PAGESIZE)), n = 8;
	std::vector<char> storage((n + 1) * ps, 1);	// page-aligned n pages inside
	uintptr_t start = (reinterpret_cast<uintptr_t>(storage.data()) + ps - 1) & ~(ps - 1);

	Mirror m;
	ret = uhmm_interval_notifier_insert(&m.notifier, mm, start, n * ps, &mirror_ops);
	std::vector<uint64_t> pfns(n);
	uhmm_range range{};
	range.notifier = &m.notifier;
	range.start = start;
	range.end = start + n * ps;
	range.hmm_pfns = pfns.data();
	range.default_flags = UHMM_PFN_REQ_FAULT;
	do {
		range.notifier_seq = uhmm_interval_read_begin(&m.notifier);
	} while (!ret && (ret = uhmm_range_fault(&range)) == -EBUSY);

	int bad = ret != 0;
	for (size_t i = 0; i < n && !bad; i++)
		bad = uhmm_pfn_to_addr(pfns[i]) != start + i * ps;
	std::printf("hello: %zu pages mirrored: %s\n", n, bad ? "MISMATCH" : "ok");
	uhmm_interval_notifier_remove(&m.notifier);
	uhmm_mm_put(mm);
	return bad;
}
