/* Build facts: versions from CMake, the commit from a header cmake/commit.cmake rewrites
 * at every build (only this file recompiles when it changes). */
#include "base/build_info.h"

#include "qk_commit.h"

const char *build_quilkin_version(void)
{
    return QK_VERSION;
}

const char *build_version(void)
{
    return QK_C_VERSION;
}

const char *build_commit(void)
{
    return QK_BUILD_COMMIT;
}
