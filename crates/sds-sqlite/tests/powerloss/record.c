/*
 * Records what a process does to the files under one directory, for the power-loss test
 * (../powerloss.rs). Loaded with LD_PRELOAD into a child process that runs the store's
 * workload: every write, truncation, fsync, creation, rename, removal and mkdir under
 * $SDS_PL_ROOT is appended to the log $SDS_PL_LOG, in the order the process made them, with the
 * bytes written. The test rebuilds from the log the states a power loss could leave behind.
 *
 * Log records, one per line (paths relative to the root, without spaces):
 *   C <ino> <path>            a file was created
 *   M <path>                  a directory was created
 *   D <path>                  a directory was removed
 *   U <path>                  a name was removed
 *   R <ino> <from> <to>       a file was renamed
 *   T <ino> <len>             a file was truncated (or extended) to len bytes
 *   W <ino> <off> <len>       len bytes written at off; the bytes follow the newline
 *   S <seq> f <ino>           an fsync of a file started
 *   S <seq> d <path>          an fsync of a directory started
 *   E <seq>                   that fsync returned successfully
 * Writes are made and logged under one lock, so the log's order is the order they happened in;
 * an fsync is logged when it starts and when it returns, and covers only the writes logged
 * before it started. Files named *-shm (SQLite's shared memory, rebuilt after a crash) are not
 * recorded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 4096
#define REL_MAX 512

struct tracked {
    int on;
    int dir;
    int append;
    unsigned long long ino;
    char rel[REL_MAX];
};

static struct tracked fds[MAX_FDS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -2; /* -2: not set up yet; -1: recording off */
static char root[PATH_MAX];
static size_t root_len;
static unsigned long long next_seq;

#define REAL(ret, name, args) \
    static ret(*real_##name) args; \
    if (!real_##name) real_##name = (ret(*) args)dlsym(RTLD_NEXT, #name)

static ssize_t raw_write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, write, (int, const void *, size_t));
    return real_write(fd, buf, n);
}

static void log_bytes(const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = raw_write(log_fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            abort(); /* a log with a hole would describe states that never existed */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void log_line(const char *fmt, ...) {
    char line[3 * REL_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) abort();
    log_bytes(line, (size_t)n);
}

/* With the lock held: whether recording is on (setting it up the first time). */
static int recording(void) {
    if (log_fd == -2) {
        const char *r = getenv("SDS_PL_ROOT");
        const char *l = getenv("SDS_PL_LOG");
        log_fd = -1;
        if (r && l && strlen(r) < sizeof root) {
            REAL(int, open, (const char *, int, ...));
            strcpy(root, r);
            root_len = strlen(root);
            while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
            log_fd = real_open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        }
    }
    return log_fd >= 0;
}

/* The part of an absolute path under the root ("" for the root), or NULL. */
static const char *under_root(const char *abs) {
    if (strncmp(abs, root, root_len) != 0) return NULL;
    if (abs[root_len] == 0) return abs + root_len;
    if (abs[root_len] != '/') return NULL;
    const char *rel = abs + root_len + 1;
    size_t n = strlen(rel);
    if (n >= REL_MAX || strchr(rel, ' ') || strchr(rel, '\n')) return NULL;
    if (n >= 4 && strcmp(rel + n - 4, "-shm") == 0) return NULL;
    return rel;
}

/* The absolute form of `path` as seen from directory fd `dirfd`. */
static int absolute(int dirfd, const char *path, char *out) {
    if (path[0] == '/') {
        if (strlen(path) >= PATH_MAX) return 0;
        strcpy(out, path);
        return 1;
    }
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return 0;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return 0;
        base[n] = 0;
    }
    return snprintf(out, PATH_MAX, "%s/%s", base, path) < PATH_MAX;
}

static struct tracked *tracked(int fd) {
    if (fd < 0 || fd >= MAX_FDS || !fds[fd].on) return NULL;
    return &fds[fd];
}

/* With the lock held: notes an fd just opened (created: it did not exist before). */
static void opened(int fd, int flags, int existed) {
    if (fd < 0 || fd >= MAX_FDS) return;
    fds[fd].on = 0;
    char link[64], abs[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, abs, sizeof abs - 1);
    if (n < 0) return;
    abs[n] = 0;
    const char *rel = under_root(abs);
    if (!rel) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    struct tracked *t = &fds[fd];
    t->on = 1;
    t->dir = S_ISDIR(st.st_mode);
    t->append = (flags & O_APPEND) != 0;
    t->ino = (unsigned long long)st.st_ino;
    strcpy(t->rel, rel);
    if (t->dir) return;
    if (!existed) log_line("C %llu %s\n", t->ino, rel);
    else if (flags & O_TRUNC) log_line("T %llu 0\n", t->ino);
}

static int exists_at(int dirfd, const char *path) {
    struct stat st;
    return fstatat(dirfd, path, &st, 0) == 0;
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode, int (*real)(int, const char *, int, ...)) {
    pthread_mutex_lock(&mu);
    int on = recording();
    int existed = on && (flags & O_CREAT) ? exists_at(dirfd, path) : 1;
    int fd = real(dirfd, path, flags, mode);
    if (on && fd >= 0) opened(fd, flags, existed);
    pthread_mutex_unlock(&mu);
    return fd;
}

static int do_open(const char *path, int flags, mode_t mode, int (*real)(const char *, int, ...)) {
    pthread_mutex_lock(&mu);
    int on = recording();
    int existed = on && (flags & O_CREAT) ? exists_at(AT_FDCWD, path) : 1;
    int fd = real(path, flags, mode);
    if (on && fd >= 0) opened(fd, flags, existed);
    pthread_mutex_unlock(&mu);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    REAL(int, open, (const char *, int, ...));
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(path, flags, mode, real_open);
}

int open64(const char *path, int flags, ...) {
    REAL(int, open64, (const char *, int, ...));
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(path, flags, mode, real_open64);
}

int openat(int dirfd, const char *path, int flags, ...) {
    REAL(int, openat, (int, const char *, int, ...));
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, mode, real_openat);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(int, openat64, (int, const char *, int, ...));
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, mode, real_openat64);
}

int creat(const char *path, mode_t mode) {
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode) {
    return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int close(int fd) {
    REAL(int, close, (int));
    pthread_mutex_lock(&mu);
    if (fd >= 0 && fd < MAX_FDS) fds[fd].on = 0;
    pthread_mutex_unlock(&mu);
    return real_close(fd);
}

/* With the lock held: logs `n` bytes written to `t` at `off`. */
static void logged_write(struct tracked *t, off_t off, const void *buf, ssize_t n) {
    if (n <= 0) return;
    log_line("W %llu %lld %lld\n", t->ino, (long long)off, (long long)n);
    log_bytes(buf, (size_t)n);
}

static off_t position(int fd, struct tracked *t) {
    if (t->append) {
        struct stat st;
        return fstat(fd, &st) == 0 ? st.st_size : -1;
    }
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buf, size_t n) {
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    if (!t || t->dir) {
        pthread_mutex_unlock(&mu);
        return raw_write(fd, buf, n);
    }
    off_t off = position(fd, t);
    ssize_t r = raw_write(fd, buf, n);
    int saved = errno;
    logged_write(t, off, buf, r);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

static ssize_t do_pwrite(int fd, const void *buf, size_t n, off_t off, ssize_t (*real)(int, const void *, size_t, off_t)) {
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    ssize_t r = real(fd, buf, n, off);
    int saved = errno;
    if (t && !t->dir) logged_write(t, off, buf, r);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, pwrite, (int, const void *, size_t, off_t));
    return do_pwrite(fd, buf, n, off, real_pwrite);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, pwrite64, (int, const void *, size_t, off_t));
    return do_pwrite(fd, buf, n, off, real_pwrite64);
}

/* With the lock held: logs what a vectored write of `r` bytes wrote at `off`. */
static void logged_writev(struct tracked *t, off_t off, const struct iovec *iov, int cnt, ssize_t r) {
    if (r <= 0) return;
    log_line("W %llu %lld %lld\n", t->ino, (long long)off, (long long)r);
    for (int i = 0; i < cnt && r > 0; i++) {
        size_t n = iov[i].iov_len < (size_t)r ? iov[i].iov_len : (size_t)r;
        log_bytes(iov[i].iov_base, n);
        r -= (ssize_t)n;
    }
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(ssize_t, writev, (int, const struct iovec *, int));
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    off_t off = t && !t->dir ? position(fd, t) : 0;
    ssize_t r = real_writev(fd, iov, cnt);
    int saved = errno;
    if (t && !t->dir) logged_writev(t, off, iov, cnt, r);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(ssize_t, pwritev, (int, const struct iovec *, int, off_t));
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    int saved = errno;
    if (t && !t->dir) logged_writev(t, off, iov, cnt, r);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    return pwritev(fd, iov, cnt, off);
}

static int do_ftruncate(int fd, off_t len, int (*real)(int, off_t)) {
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    int r = real(fd, len);
    int saved = errno;
    if (t && !t->dir && r == 0) log_line("T %llu %lld\n", t->ino, (long long)len);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int ftruncate(int fd, off_t len) {
    REAL(int, ftruncate, (int, off_t));
    return do_ftruncate(fd, len, real_ftruncate);
}

int ftruncate64(int fd, off_t len) {
    REAL(int, ftruncate64, (int, off_t));
    return do_ftruncate(fd, len, real_ftruncate64);
}

static int do_sync(int fd, int (*real)(int)) {
    pthread_mutex_lock(&mu);
    struct tracked *t = recording() ? tracked(fd) : NULL;
    unsigned long long seq = 0;
    if (t) {
        seq = ++next_seq;
        if (t->dir) log_line("S %llu d %s\n", seq, t->rel[0] ? t->rel : ".");
        else log_line("S %llu f %llu\n", seq, t->ino);
    }
    pthread_mutex_unlock(&mu);
    int r = real(fd);
    int saved = errno;
    if (t && r == 0) {
        pthread_mutex_lock(&mu);
        log_line("E %llu\n", seq);
        pthread_mutex_unlock(&mu);
    }
    errno = saved;
    return r;
}

int fsync(int fd) {
    REAL(int, fsync, (int));
    return do_sync(fd, real_fsync);
}

int fdatasync(int fd) {
    REAL(int, fdatasync, (int));
    return do_sync(fd, real_fdatasync);
}

/* Renames: both names resolved first, the file's inode looked up, then the rename made. */
static int do_rename(int olddir, const char *oldpath, int newdir, const char *newpath, int (*call)(void *), void *arg) {
    pthread_mutex_lock(&mu);
    int on = recording();
    char a[PATH_MAX], b[PATH_MAX];
    const char *from = NULL, *to = NULL;
    struct stat st;
    int have = 0;
    if (on && absolute(olddir, oldpath, a) && absolute(newdir, newpath, b)) {
        from = under_root(a);
        to = under_root(b);
        have = fstatat(olddir, oldpath, &st, AT_SYMLINK_NOFOLLOW) == 0;
    }
    int r = call(arg);
    int saved = errno;
    if (r == 0 && have) {
        if (from && to) log_line("R %llu %s %s\n", (unsigned long long)st.st_ino, from, to);
        else if (from) log_line("U %s\n", from);
        else if (to) log_line("C %llu %s\n", (unsigned long long)st.st_ino, to);
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

struct rename_args {
    int olddir;
    const char *oldpath;
    int newdir;
    const char *newpath;
    unsigned int flags;
};

static int call_renameat2(void *p) {
    struct rename_args *x = p;
    REAL(int, renameat2, (int, const char *, int, const char *, unsigned int));
    return real_renameat2(x->olddir, x->oldpath, x->newdir, x->newpath, x->flags);
}

static int call_rename(void *p) {
    struct rename_args *x = p;
    REAL(int, rename, (const char *, const char *));
    return real_rename(x->oldpath, x->newpath);
}

static int call_renameat(void *p) {
    struct rename_args *x = p;
    REAL(int, renameat, (int, const char *, int, const char *));
    return real_renameat(x->olddir, x->oldpath, x->newdir, x->newpath);
}

int rename(const char *oldpath, const char *newpath) {
    struct rename_args x = {AT_FDCWD, oldpath, AT_FDCWD, newpath, 0};
    return do_rename(AT_FDCWD, oldpath, AT_FDCWD, newpath, call_rename, &x);
}

int renameat(int olddir, const char *oldpath, int newdir, const char *newpath) {
    struct rename_args x = {olddir, oldpath, newdir, newpath, 0};
    return do_rename(olddir, oldpath, newdir, newpath, call_renameat, &x);
}

int renameat2(int olddir, const char *oldpath, int newdir, const char *newpath, unsigned int flags) {
    struct rename_args x = {olddir, oldpath, newdir, newpath, flags};
    return do_rename(olddir, oldpath, newdir, newpath, call_renameat2, &x);
}

/* Removals and mkdir: the name resolved, the call made, a record if it succeeded. */
static void log_path(int dirfd, const char *path, const char *kind) {
    char a[PATH_MAX];
    if (!absolute(dirfd, path, a)) return;
    const char *rel = under_root(a);
    if (rel && rel[0]) log_line("%s %s\n", kind, rel);
}

int unlink(const char *path) {
    REAL(int, unlink, (const char *));
    pthread_mutex_lock(&mu);
    int r = real_unlink(path);
    int saved = errno;
    if (r == 0 && recording()) log_path(AT_FDCWD, path, "U");
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int unlinkat(int dirfd, const char *path, int flags) {
    REAL(int, unlinkat, (int, const char *, int));
    pthread_mutex_lock(&mu);
    char a[PATH_MAX];
    int have = recording() && absolute(dirfd, path, a);
    int r = real_unlinkat(dirfd, path, flags);
    int saved = errno;
    if (r == 0 && have) {
        const char *rel = under_root(a);
        if (rel && rel[0]) log_line("%s %s\n", (flags & AT_REMOVEDIR) ? "D" : "U", rel);
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int rmdir(const char *path) {
    REAL(int, rmdir, (const char *));
    pthread_mutex_lock(&mu);
    int r = real_rmdir(path);
    int saved = errno;
    if (r == 0 && recording()) log_path(AT_FDCWD, path, "D");
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int mkdir(const char *path, mode_t mode) {
    REAL(int, mkdir, (const char *, mode_t));
    pthread_mutex_lock(&mu);
    int r = real_mkdir(path, mode);
    int saved = errno;
    if (r == 0 && recording()) log_path(AT_FDCWD, path, "M");
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
    REAL(int, mkdirat, (int, const char *, mode_t));
    pthread_mutex_lock(&mu);
    int r = real_mkdirat(dirfd, path, mode);
    int saved = errno;
    if (r == 0 && recording()) log_path(dirfd, path, "M");
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}
