/* What this binary is: the Quilkin release it stands in for, quilkin-c's own version, and
 * the commit it was built from (read from git at build time, "unknown" outside git). */
#ifndef QK_BASE_BUILD_INFO_H
#define QK_BASE_BUILD_INFO_H

/* "0.7.0": the Quilkin version whose behaviour this build implements. Any thread. */
const char *build_quilkin_version(void);

/* quilkin-c's own version (CMake QK_C_VERSION, by default the same number). Any thread. */
const char *build_version(void);

/* The short git commit of the source tree, or "unknown". Any thread. */
const char *build_commit(void);

#endif
