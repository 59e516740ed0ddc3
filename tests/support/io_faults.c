/* Fault injection for the real binary's fsyncs, loaded with LD_PRELOAD by
 * tests/support/faults.rs. The test steers it through files in the directory named by
 * SLUICE_FAULTS_DIR, read at every call, so faults can start and stop while the process runs:
 *
 *   fsync_fail      exists: fsync/fdatasync of a file whose path contains the file's content
 *                   (empty: every file) fail with EIO
 *   fsync_delay_ms  a number: such calls sleep that long first (a slow disk)
 *   fsync_calls     appended one line per failed or delayed call (what the test saw hit)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int read_small(const char *dir, const char *name, char *buf, size_t cap) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    return (int)n;
}

static int matches(int fd, const char *pattern) {
    if (pattern[0] == 0) return 1;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strstr(target, pattern) != NULL;
}

static void note(const char *dir, const char *what, int fd) {
    char path[PATH_MAX], link[64], target[PATH_MAX], line[PATH_MAX + 32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n < 0 ? 0 : n] = 0;
    snprintf(path, sizeof path, "%s/fsync_calls", dir);
    int out = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0) return;
    int len = snprintf(line, sizeof line, "%s %s\n", what, target);
    if (write(out, line, (size_t)len) < 0) { /* nothing to do: the note is best effort */ }
    close(out);
}

/* 0: go on with the real call; -1: fail it with EIO. */
static int inject(int fd) {
    const char *dir = getenv("SLUICE_FAULTS_DIR");
    if (!dir) return 0;
    char buf[PATH_MAX];
    int hit = 0;
    if (read_small(dir, "fsync_delay_ms", buf, sizeof buf) > 0) {
        long ms = strtol(buf, NULL, 10);
        if (ms > 0) {
            struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
            nanosleep(&ts, NULL);
            note(dir, "delayed", fd);
        }
    }
    if (read_small(dir, "fsync_fail", buf, sizeof buf) >= 0 && matches(fd, buf)) {
        note(dir, "failed", fd);
        hit = 1;
    }
    if (hit) {
        errno = EIO;
        return -1;
    }
    return 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (inject(fd) < 0) return -1;
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (inject(fd) < 0) return -1;
    return real(fd);
}
