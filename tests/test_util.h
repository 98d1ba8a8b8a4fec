/* test_util.h: small helpers the tests share — finding the asset files. Header-only (static
 * inline) because every test is its own program. Not for: assertions (use cmocka's). */
#ifndef SPLITLLM_TESTS_TEST_UTIL_H
#define SPLITLLM_TESTS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define TEST_PATH_BYTES 1024
/* Results stay valid until this many later calls, so a test may hold a few paths at once. */
#define TEST_ASSET_SLOTS 8

/* The path of an asset file (rel: "models/stories260K/tok512.bin"), looked for in
 * $SPLITLLM_ASSETS, then SPLITLLM_SOURCE_DIR/assets, then SPLITLLM_SOURCE_DIR/../shared/assets;
 * NULL when none holds it (the test then skips). */
static inline const char *test_asset(const char *rel) {
    static char slots[TEST_ASSET_SLOTS][TEST_PATH_BYTES];
    static int next;
    char *out = slots[next];
    next = (next + 1) % TEST_ASSET_SLOTS;
    const char *env = getenv("SPLITLLM_ASSETS");
    const char *roots[3] = {env, SPLITLLM_SOURCE_DIR "/assets", SPLITLLM_SOURCE_DIR "/../shared/assets"};
    for (int i = 0; i < 3; i++) {
        if (roots[i] == NULL || roots[i][0] == '\0') continue;
        int n = snprintf(out, TEST_PATH_BYTES, "%s/%s", roots[i], rel);
        if (n > 0 && n < TEST_PATH_BYTES && access(out, R_OK) == 0) return out;
    }
    return NULL;
}

#endif
