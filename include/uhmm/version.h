/* SPDX-License-Identifier: MIT */
/**
 * DOC: uhmm version
 *
 * The version of the headers a program is compiled against
 * (%UHMM_VERSION_MAJOR, %UHMM_VERSION_MINOR, %UHMM_VERSION_PATCH) and of the
 * library it runs with (uhmm_version(), uhmm_version_number()).  The build
 * (CMakeLists.txt) reads the three numbers from this file.  What changes
 * which number, and when the soname changes: CONTRIBUTING.md, "ABI".
 */
#ifndef UHMM_VERSION_H
#define UHMM_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef UHMM_API
#define UHMM_API __attribute__((visibility("default")))
#endif

#define UHMM_VERSION_MAJOR 0
#define UHMM_VERSION_MINOR 1
#define UHMM_VERSION_PATCH 0

#define UHMM_STRINGIFY_(x) #x
#define UHMM_XSTRINGIFY_(x) UHMM_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH" */
#define UHMM_VERSION_STRING UHMM_XSTRINGIFY_(UHMM_VERSION_MAJOR) "." \
	UHMM_XSTRINGIFY_(UHMM_VERSION_MINOR) "." UHMM_XSTRINGIFY_(UHMM_VERSION_PATCH)
/* One number for comparisons: (MAJOR << 16) | (MINOR << 8) | PATCH */
#define UHMM_VERSION_NUMBER ((UHMM_VERSION_MAJOR << 16) | \
	(UHMM_VERSION_MINOR << 8) | UHMM_VERSION_PATCH)

/**
 * uhmm_version() - version of the library the program runs with
 *
 * Thread safe, needs no context, never fails.  Compare with
 * %UHMM_VERSION_STRING to tell the headers from the library.
 *
 * Return: a static string "MAJOR.MINOR.PATCH".
 */
UHMM_API const char *uhmm_version(void);

/**
 * uhmm_version_number() - version of the library as one number
 *
 * Thread safe, needs no context, never fails.
 *
 * Return: (MAJOR << 16) | (MINOR << 8) | PATCH, as %UHMM_VERSION_NUMBER.
 */
UHMM_API unsigned int uhmm_version_number(void);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_VERSION_H */
