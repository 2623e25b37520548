// SPDX-License-Identifier: MIT
/*
 * Every public header compiles as C++ (built as C++17 and as C++20) and its
 * API is usable from C++: structures a caller allocates are zero
 * initialisable and standard layout, the inline helpers evaluate, and the
 * functions link with C linkage (one call of each kind of header runs).
 * tests/test_cxx_headers.sh compiles each header alone with every C++
 * compiler found.
 */
#include <uhmm/mm.h>
#include <uhmm/notifier.h>
#include <uhmm/range.h>
#include <uhmm/pagestate.h>
#include <uhmm/devmem.h>
#include <uhmm/migrate.h>
#include <uhmm/exclusive.h>
#include <uhmm/inject.h>
#include <uhmm/version.h>
#include <uhmm/simdev.h>
#include <uhmm/policy.h>
#include <uhmm/uhmm.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <type_traits>

#define CHECK(c) do { if (!(c)) { std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

template <typename T> constexpr bool c_like()
{
	return std::is_standard_layout<T>::value && std::is_trivially_copyable<T>::value;
}
static_assert(c_like<uhmm_page>(), "uhmm_page");
static_assert(c_like<uhmm_devmem>(), "uhmm_devmem");
static_assert(c_like<uhmm_interval_notifier>(), "uhmm_interval_notifier");
static_assert(c_like<uhmm_migrate_vma>(), "uhmm_migrate_vma");
static_assert(c_like<uhmm_range>(), "uhmm_range");
static_assert(c_like<struct uhmm_sysinfo>(), "uhmm_sysinfo");
static_assert(c_like<struct uhmm_mm_stats>(), "uhmm_mm_stats");
static_assert(c_like<uhmm_simdev_config>(), "uhmm_simdev_config");
static_assert(c_like<uhmm_policy_config>() && c_like<uhmm_policy_attr>() &&
	      c_like<uhmm_policy_stats>() && c_like<uhmm_policy_fault>(), "policy");
static_assert(sizeof(uhmm_page) == 40, "README: 40 bytes per device page");
static_assert(UHMM_VERSION_NUMBER == ((UHMM_VERSION_MAJOR << 16) |
	      (UHMM_VERSION_MINOR << 8) | UHMM_VERSION_PATCH), "version");

static bool inval(uhmm_interval_notifier *mni, const uhmm_notifier_range *,
		  unsigned long seq)
{
	uhmm_interval_set_seq(mni, seq);
	return true;
}

int main()
{
	// Zero-initialised the C++ way, documented fields set by name.
	uhmm_devmem pool{};
	uhmm_interval_notifier mni{};
	uhmm_migrate_vma mig{};
	uhmm_range range{};
	uhmm_simdev_config cfg{};
	uhmm_interval_notifier_ops ops{};
	ops.invalidate = inval;
	pool.nr_pages = 1;
	mig.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM;
	range.default_flags = UHMM_PFN_REQ_FAULT;
	cfg.capacity_pages = 16;
	(void)ops;

	// Inline helpers.
	CHECK(uhmm_migrate_pfn_to_pfn(uhmm_migrate_pfn(42)) == 42);
	CHECK(uhmm_pfn_to_map_order(UINT64_C(9) << UHMM_PFN_ORDER_SHIFT) == 9);
	CHECK(uhmm_migrate_pfn_is_device(uhmm_migrate_pfn(UHMM_DEVICE_PFN_BASE | 1)));

	// C linkage: these need no context.
	CHECK(std::strcmp(uhmm_version(), UHMM_VERSION_STRING) == 0);
	CHECK(uhmm_version_number() == UHMM_VERSION_NUMBER);
	struct uhmm_sysinfo si{};	// "struct": a function has the same name
	CHECK(uhmm_sysinfo(&si) == 0);
	CHECK(std::strcmp(uhmm_feature_name(UHMM_FEAT_MOVE), "move") == 0);
	CHECK(uhmm_devmem_add(nullptr, &pool) == -EINVAL);
	CHECK(uhmm_interval_notifier_insert(&mni, nullptr, 0, 1, &ops) == -EINVAL);
	CHECK(uhmm_migrate_vma_setup(&mig) == -EINVAL);
	CHECK(uhmm_range_fault(&range) == -EINVAL);
	CHECK(uhmm_simdev_create(&cfg, nullptr) == -EINVAL);
	CHECK(uhmm_last_error()[0] != '\0');
	std::printf("C++%ld: every header compiled, helpers and C linkage work (uhmm %s)\n",
		    static_cast<long>(__cplusplus / 100 % 100), uhmm_version());
	return 0;
}
