/* LD_PRELOAD shim for tests: while the file named by KELP_FAIL_FSYNC_FLAG
 * exists, fsync and fdatasync of volume files (.dat, .idx) fail with EIO
 * without syncing, as a disk that reports a write-back error does. Other
 * files and every other call go to the real libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int should_fail(int fd) {
    const char *flag = getenv("KELP_FAIL_FSYNC_FLAG");
    if (flag == NULL || access(flag, F_OK) != 0)
        return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    return ends_with(path, (size_t)n, ".dat") || ends_with(path, (size_t)n, ".idx");
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (should_fail(fd)) {
        errno = EIO;
        return -1;
    }
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (should_fail(fd)) {
        errno = EIO;
        return -1;
    }
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
