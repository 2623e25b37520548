// SPDX-License-Identifier: MIT
/*
 * The library's version, and the accessors of private fields that were
 * inline functions before the public structures hid those fields (see
 * private_fields.h): out of line, so a release can change the fields.
 */
#include "base.h"

UHMM_API const char *uhmm_version(void)
{
	return UHMM_VERSION_STRING;
}

UHMM_API unsigned int uhmm_version_number(void)
{
	return UHMM_VERSION_NUMBER;
}

UHMM_API size_t uhmm_page_index(const struct uhmm_page *page)
{
	return (size_t)(page->pfn & 0xffffffffu);
}

UHMM_API uint64_t uhmm_page_to_pfn(const struct uhmm_page *page)
{
	return page->pfn;
}

UHMM_API int uhmm_page_refcount(const struct uhmm_page *page)
{
	return atomic_load(&((struct uhmm_page *)page)->refcount);
}
