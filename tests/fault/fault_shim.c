/* fault_shim.c — an LD_PRELOAD library that injects storage faults into the
 * real rg-ledger and simulates a power loss.
 *
 * DESIGN
 * Every call the ledger makes that changes storage under RG_FAULT_DIR is
 * counted, in the order the calls happen (one global mutex serialises them,
 * so the count is well defined across the shard, syncer, snapshotter and
 * spare-segment threads): write, pwrite, fallocate, fdatasync, fsync, open
 * with O_CREAT, rename(at), unlink(at). Calls on other files (the log on
 * stderr, sockets) pass straight through. At call RG_FAULT_AT the mode says
 * what happens:
 *
 *   count   nothing; each call is traced to RG_FAULT_REPORT ("op N OP PATH")
 *   eio     the call fails with EIO without doing anything
 *   enospc  the call fails with ENOSPC; a write first does half its bytes
 *           (a short write, as a full disk gives) and the retry then fails
 *   crash   power loss at that instant: see below, then the process is gone
 *
 * With RG_FAULT_MATCH (an extended regex) only the calls whose line
 * "OP PATH CONTEXT" matches are counted, so a test can aim at "the 7th
 * fdatasync of a WAL segment" whatever the other threads do meanwhile.
 *
 * Power loss. The shim keeps what a crash could still take away: for each
 * file (by inode) the old bytes under every write since the file's last
 * fsync/fdatasync, and for each directory the entries created, renamed and
 * unlinked since its last fsync (an unlinked file is kept alive under a
 * hidden link until then). A crash undoes these, newest first: directory
 * changes all, file writes page by page (4 KiB, file-aligned) each page kept
 * or lost at random from RG_FAULT_SEED — the disk may have written any of
 * them, in any order — and the file is cut back to its synced size unless a
 * kept page lies beyond it. In every mode the same undo also runs when the
 * process ends (exit, _exit, the end of main): it models the machine losing
 * power right after, so a ledger that exits after a failed fsync is judged on
 * what it had really made durable.
 *
 * Not modelled: O_TRUNC of a non-empty file (the ledger only truncates stale
 * temp files), writes through stdio (the SHARDS file at first start). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define PAGE 4096
#define CRASH_EXIT 86

typedef struct Undo {          /* one write since the last sync of its file */
	off_t off;
	size_t len;
	uint8_t *old;          /* old bytes below the synced size, else zeros */
} Undo;

typedef struct FileLog {
	dev_t dev;
	ino_t ino;
	int fd;                /* our own dup: works after rename and unlink */
	off_t synced_size;
	Undo *u;
	size_t n, cap;
} FileLog;

enum { DIR_CREATE, DIR_RENAME, DIR_UNLINK };

typedef struct DirOp {         /* one entry change since the last fsync of its dir */
	int kind;
	dev_t dev;             /* the directory */
	ino_t ino;
	char a[PATH_MAX];      /* created / unlinked / renamed-from path */
	char b[PATH_MAX];      /* renamed-to path */
	char saved[PATH_MAX];  /* hidden link to the unlinked or replaced file */
} DirOp;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int inited, mode_fault; /* 0 count, 1 eio, 2 enospc, 3 crash */
static char fault_dir[PATH_MAX];
static size_t fault_dir_len;
static char report[PATH_MAX];
static unsigned long long at, calls, hidden_seq;
static uint64_t rng;
static int short_fd = -1;      /* enospc: the fd whose next write fails */
static int finished;
static regex_t match;          /* RG_FAULT_MATCH: count only the calls it matches */
static int match_set;

static FileLog *files;
static size_t nfiles, files_cap;
static DirOp *dirops;
static size_t ndirops, dirops_cap;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_link)(const char *, const char *);
static int (*real_ftruncate)(int, off_t);
static void (*real_exit_)(int);

static uint64_t rng_next(void)
{
	/* splitmix64: tiny and good enough to pick pages */
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

static void init(void)
{
	if (inited)
		return;
	RESOLVE(write);
	RESOLVE(pwrite);
	RESOLVE(pread);
	RESOLVE(fdatasync);
	RESOLVE(fsync);
	RESOLVE(fallocate);
	RESOLVE(rename);
	RESOLVE(renameat);
	RESOLVE(renameat2);
	RESOLVE(unlink);
	RESOLVE(unlinkat);
	RESOLVE(open);
	RESOLVE(openat);
	RESOLVE(link);
	RESOLVE(ftruncate);
	real_exit_ = (void (*)(int))dlsym(RTLD_NEXT, "_exit");

	const char *d = getenv("RG_FAULT_DIR"), *m = getenv("RG_FAULT_MODE");
	const char *a = getenv("RG_FAULT_AT"), *r = getenv("RG_FAULT_REPORT");
	const char *s = getenv("RG_FAULT_SEED");
	if (d && realpath(d, fault_dir) == NULL)
		snprintf(fault_dir, sizeof(fault_dir), "%s", d);
	fault_dir_len = d ? strlen(fault_dir) : 0;
	snprintf(report, sizeof(report), "%s", r ? r : "");
	at = a ? strtoull(a, NULL, 10) : 0;
	rng = s ? strtoull(s, NULL, 10) : 1;
	const char *re = getenv("RG_FAULT_MATCH");
	if (re && re[0] && regcomp(&match, re, REG_EXTENDED | REG_NOSUB) == 0)
		match_set = 1;
	mode_fault = !m ? 0 : !strcmp(m, "eio") ? 1 : !strcmp(m, "enospc") ? 2 : !strcmp(m, "crash") ? 3 : 0;
	inited = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[2 * PATH_MAX + 128];
	va_list ap;
	if (!report[0])
		return;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	int fd = real_open(report, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (real_write(fd, line, (size_t)n) < 0) {
			/* nothing to do: the driver sees a missing line */
		}
		close(fd);
	}
}

static int under_dir(const char *path)
{
	return fault_dir_len && strncmp(path, fault_dir, fault_dir_len) == 0 &&
	       (path[fault_dir_len] == '/' || path[fault_dir_len] == '\0');
}

/* The absolute path of fd, or "" for non-files. */
static void fd_path(int fd, char out[PATH_MAX])
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, PATH_MAX - 1);
	out[n > 0 ? n : 0] = '\0';
}

/* The absolute path of name relative to dirfd (which may be AT_FDCWD). */
static void at_path(int dirfd, const char *name, char out[PATH_MAX])
{
	char base[PATH_MAX];
	if (name[0] == '/') {
		snprintf(out, PATH_MAX, "%s", name);
		return;
	}
	if (dirfd == AT_FDCWD) {
		if (!getcwd(base, sizeof(base)))
			base[0] = '\0';
	} else {
		fd_path(dirfd, base);
	}
	snprintf(out, PATH_MAX, "%.*s/%s", PATH_MAX / 2, base, name);
}

static void parent_id(const char *path, dev_t *dev, ino_t *ino)
{
	char dir[PATH_MAX];
	struct stat sb;
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	*dev = 0;
	*ino = 0;
	if (stat(dir[0] ? dir : "/", &sb) == 0) {
		*dev = sb.st_dev;
		*ino = sb.st_ino;
	}
}

static int fd_tracked(int fd, char path[PATH_MAX], struct stat *sb)
{
	if (!fault_dir_len || fstat(fd, sb) != 0 || !(S_ISREG(sb->st_mode) || S_ISDIR(sb->st_mode)))
		return 0;
	fd_path(fd, path);
	return under_dir(path);
}

static __attribute__((noreturn)) void crash_now(void);

/* Counts one call (mu held). When this is the call to fault: in crash mode it
 * does not return (the power goes); else it returns the errno the call must
 * fail with (EIO, or ENOSPC: writes first go short). 0: go on. */
static int count_ctx(const char *op, const char *path, const char *ctx)
{
	if (match_set) {
		char line[2 * PATH_MAX + 64];
		snprintf(line, sizeof(line), "%s %s %s", op, path, ctx);
		if (regexec(&match, line, 0, NULL, 0) != 0)
			return 0;
	}
	unsigned long long n = ++calls;
	if (mode_fault == 0) {
		say("op %llu %s %s %s\n", n, op, path, ctx);
		return 0;
	}
	if (n != at)
		return 0;
	say("inject %llu %s %s %s\n", n, op, path, ctx);
	if (mode_fault == 3)
		crash_now();
	return mode_fault == 1 ? EIO : ENOSPC;
}

static int count(const char *op, const char *path)
{
	return count_ctx(op, path, "");
}

static const char *basename_of(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* For a directory sync: the newest unsynced change in that directory. */
static void dir_ctx(const struct stat *sb, char *out, size_t len)
{
	static const char *kinds[] = { "create", "rename", "unlink" };
	snprintf(out, len, "after nothing");
	for (size_t i = ndirops; i-- > 0;) {
		if (dirops[i].dev == sb->st_dev && dirops[i].ino == sb->st_ino) {
			snprintf(out, len, "after %s %s", kinds[dirops[i].kind],
				 basename_of(dirops[i].kind == 1 ? dirops[i].b : dirops[i].a));
			return;
		}
	}
}

static void crash_undo(void);

static __attribute__((noreturn)) void crash_now(void)
{
	crash_undo();
	syscall(SYS_exit_group, CRASH_EXIT);
	for (;;)
		pause();
}

/* ---- the undo logs ---- */

/* Doubles an array's capacity (from 16); the shim cannot fail gracefully. */
static void *grow(void *array, size_t *cap, size_t elem_size)
{
	*cap = *cap ? *cap * 2 : 16;
	array = realloc(array, *cap * elem_size);
	if (!array)
		abort();
	return array;
}

static FileLog *file_log(const struct stat *sb, int fd)
{
	for (size_t i = 0; i < nfiles; i++)
		if (files[i].dev == sb->st_dev && files[i].ino == sb->st_ino)
			return &files[i];
	if (nfiles == files_cap)
		files = grow(files, &files_cap, sizeof(*files));
	FileLog *f = &files[nfiles++];
	memset(f, 0, sizeof(*f));
	f->dev = sb->st_dev;
	f->ino = sb->st_ino;
	f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 1000);
	if (f->fd < 0)
		f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	f->synced_size = sb->st_size;
	return f;
}

static void file_remember(int fd, const struct stat *sb, off_t off, size_t len)
{
	FileLog *f = file_log(sb, fd);
	if (f->n == f->cap)
		f->u = grow(f->u, &f->cap, sizeof(*f->u));
	Undo *u = &f->u[f->n++];
	u->off = off;
	u->len = len;
	u->old = calloc(1, len ? len : 1);
	if (!u->old)
		abort();
	off_t cur = sb->st_size;
	if (off < cur) {
		size_t have = (size_t)(cur - off) < len ? (size_t)(cur - off) : len;
		if (real_pread(f->fd, u->old, have, off) < 0) {
			/* unreadable: undo writes zeros there */
		}
	}
}

static void file_synced(const struct stat *sb)
{
	for (size_t i = 0; i < nfiles; i++) {
		FileLog *f = &files[i];
		if (f->dev != sb->st_dev || f->ino != sb->st_ino)
			continue;
		for (size_t k = 0; k < f->n; k++)
			free(f->u[k].old);
		free(f->u);
		close(f->fd);
		files[i] = files[--nfiles];
		return;
	}
}

static DirOp *dirop_add(int kind, const char *a)
{
	if (ndirops == dirops_cap)
		dirops = grow(dirops, &dirops_cap, sizeof(*dirops));
	DirOp *d = &dirops[ndirops++];
	memset(d, 0, sizeof(*d));
	d->kind = kind;
	snprintf(d->a, sizeof(d->a), "%s", a);
	parent_id(a, &d->dev, &d->ino);
	return d;
}

/* Keeps the file at path alive under a hidden name in its directory. */
static void hide(const char *path, char out[PATH_MAX])
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	snprintf(out, PATH_MAX, "%.*s/.fault-hidden-%d-%llu", PATH_MAX / 2, dir, (int)getpid(),
		 ++hidden_seq);
	if (real_link(path, out) != 0)
		out[0] = '\0';
}

static void dir_synced(const struct stat *sb)
{
	size_t k = 0;
	for (size_t i = 0; i < ndirops; i++) {
		DirOp *d = &dirops[i];
		if (d->dev == sb->st_dev && d->ino == sb->st_ino) {
			if (d->saved[0])
				real_unlink(d->saved);
			continue;
		}
		dirops[k++] = *d;
	}
	ndirops = k;
}

static void crash_undo(void)
{
	if (finished)
		return;
	finished = 1;
	int keep_pct = (int)(rng_next() % 3) * 50; /* all lost, half, or all kept per page */
	for (size_t i = 0; i < nfiles; i++) {
		FileLog *f = &files[i];
		off_t size = f->synced_size;
		for (size_t k = f->n; k-- > 0;) {
			Undo *u = &f->u[k];
			off_t end = u->off + (off_t)u->len;
			for (off_t p = u->off; p < end;) {
				off_t q = (p / PAGE + 1) * PAGE;
				if (q > end)
					q = end;
				if ((int)(rng_next() % 100) < keep_pct) {
					if (q > size)
						size = q;
				} else if (real_pwrite(f->fd, u->old + (p - u->off), (size_t)(q - p), p) < 0) {
					/* nothing better to do */
				}
				p = q;
			}
		}
		struct stat sb;
		if (fstat(f->fd, &sb) == 0 && sb.st_size > size && real_ftruncate(f->fd, size) != 0) {
			/* leave it */
		}
	}
	for (size_t i = ndirops; i-- > 0;) {
		DirOp *d = &dirops[i];
		if (d->kind == DIR_CREATE) {
			real_unlink(d->a);
		} else if (d->kind == DIR_RENAME) {
			real_rename(d->b, d->a);
			if (d->saved[0])
				real_rename(d->saved, d->b);
		} else if (d->saved[0]) {
			real_rename(d->saved, d->a);
		}
	}
	say("undone %zu file(s) keep %d%%, %zu directory change(s)\n", nfiles, keep_pct, ndirops);
}

/* ---- the wrappers ---- */

static ssize_t do_write(int fd, const void *buf, size_t len, off_t off, int positioned)
{
	char path[PATH_MAX];
	struct stat sb;

	init();
	if (!fd_tracked(fd, path, &sb))
		return positioned ? real_pwrite(fd, buf, len, off) : real_write(fd, buf, len);
	pthread_mutex_lock(&mu);
	if (!positioned)
		off = lseek(fd, 0, SEEK_CUR);
	if (short_fd == fd) {
		short_fd = -1;
		pthread_mutex_unlock(&mu);
		errno = ENOSPC;
		return -1;
	}
	int err = count(positioned ? "pwrite" : "write", path);
	if (err == EIO || (err == ENOSPC && len < 2)) {
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	if (err == ENOSPC) {
		len /= 2;
		short_fd = fd;
	}
	file_remember(fd, &sb, off, len);
	ssize_t n = positioned ? real_pwrite(fd, buf, len, off) : real_write(fd, buf, len);
	pthread_mutex_unlock(&mu);
	return n;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	return do_write(fd, buf, len, 0, 0);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	return do_write(fd, buf, len, off, 1);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return do_write(fd, buf, len, off, 1);
}

static int do_sync(int fd, int data_only)
{
	char path[PATH_MAX];
	struct stat sb;

	init();
	if (!fd_tracked(fd, path, &sb))
		return data_only ? real_fdatasync(fd) : real_fsync(fd);
	pthread_mutex_lock(&mu);
	char ctx[PATH_MAX + 32] = "";
	if (S_ISDIR(sb.st_mode))
		dir_ctx(&sb, ctx, sizeof(ctx));
	int err = count_ctx(data_only ? "fdatasync" : "fsync", path, ctx);
	if (err) {
		/* A failed sync may have written some, all or none: the undo log
		 * stays, so the worst case (none) is what a later crash shows. */
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	int rc = data_only ? real_fdatasync(fd) : real_fsync(fd);
	if (rc == 0) {
		if (S_ISDIR(sb.st_mode))
			dir_synced(&sb);
		else
			file_synced(&sb);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int fdatasync(int fd)
{
	return do_sync(fd, 1);
}

int fsync(int fd)
{
	return do_sync(fd, 0);
}

static int do_fallocate(int fd, int mode, off_t off, off_t len)
{
	char path[PATH_MAX];
	struct stat sb;

	init();
	if (!fd_tracked(fd, path, &sb))
		return real_fallocate(fd, mode, off, len);
	pthread_mutex_lock(&mu);
	int err = count("fallocate", path);
	if (err) {
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	file_log(&sb, fd); /* remembers the synced size */
	int rc = real_fallocate(fd, mode, off, len);
	pthread_mutex_unlock(&mu);
	return rc;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	return do_fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return do_fallocate(fd, mode, off, len);
}

static int do_rename(int olddirfd, const char *oldname, int newdirfd, const char *newname,
		     unsigned flags, int at_form)
{
	char a[PATH_MAX], b[PATH_MAX];

	init();
	at_path(olddirfd, oldname, a);
	at_path(newdirfd, newname, b);
	if (!under_dir(a) && !under_dir(b)) {
		if (flags)
			return real_renameat2(olddirfd, oldname, newdirfd, newname, flags);
		return at_form ? real_renameat(olddirfd, oldname, newdirfd, newname)
			       : real_rename(oldname, newname);
	}
	pthread_mutex_lock(&mu);
	char ctx[PATH_MAX + 8];
	snprintf(ctx, sizeof(ctx), "from %s", basename_of(a));
	int err = count_ctx("rename", b, ctx);
	if (err) {
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	char saved[PATH_MAX] = "";
	struct stat sb;
	if (stat(b, &sb) == 0)
		hide(b, saved);
	int rc = flags ? real_renameat2(olddirfd, oldname, newdirfd, newname, flags)
		       : real_renameat(olddirfd, oldname, newdirfd, newname);
	if (rc == 0) {
		DirOp *d = dirop_add(DIR_RENAME, a);
		snprintf(d->b, sizeof(d->b), "%s", b);
		snprintf(d->saved, sizeof(d->saved), "%s", saved);
	} else if (saved[0]) {
		real_unlink(saved);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int rename(const char *oldname, const char *newname)
{
	return do_rename(AT_FDCWD, oldname, AT_FDCWD, newname, 0, 0);
}

int renameat(int olddirfd, const char *oldname, int newdirfd, const char *newname)
{
	return do_rename(olddirfd, oldname, newdirfd, newname, 0, 1);
}

int renameat2(int olddirfd, const char *oldname, int newdirfd, const char *newname, unsigned flags)
{
	return do_rename(olddirfd, oldname, newdirfd, newname, flags, 1);
}

static int do_unlink(int dirfd, const char *name, int flags, int at_form)
{
	char a[PATH_MAX];

	init();
	at_path(dirfd, name, a);
	if (!under_dir(a) || (flags & AT_REMOVEDIR))
		return at_form ? real_unlinkat(dirfd, name, flags) : real_unlink(name);
	pthread_mutex_lock(&mu);
	int err = count("unlink", a);
	if (err) {
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	char saved[PATH_MAX];
	struct stat sb;
	saved[0] = '\0';
	if (lstat(a, &sb) == 0)
		hide(a, saved);
	int rc = real_unlinkat(dirfd, name, flags);
	if (rc == 0) {
		DirOp *d = dirop_add(DIR_UNLINK, a);
		snprintf(d->saved, sizeof(d->saved), "%s", saved);
	} else if (saved[0]) {
		real_unlink(saved);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int unlink(const char *name)
{
	return do_unlink(AT_FDCWD, name, 0, 0);
}

int unlinkat(int dirfd, const char *name, int flags)
{
	return do_unlink(dirfd, name, flags, 1);
}

static int do_open(int dirfd, const char *name, int flags, mode_t mode, int at_form)
{
	char a[PATH_MAX];
	struct stat sb;

	init();
	if (!(flags & O_CREAT) || !fault_dir_len)
		return at_form ? real_openat(dirfd, name, flags, mode) : real_open(name, flags, mode);
	at_path(dirfd, name, a);
	if (!under_dir(a))
		return at_form ? real_openat(dirfd, name, flags, mode) : real_open(name, flags, mode);
	pthread_mutex_lock(&mu);
	int err = count("create", a);
	if (err) {
		pthread_mutex_unlock(&mu);
		errno = err;
		return -1;
	}
	int existed = lstat(a, &sb) == 0;
	int fd = real_openat(dirfd, name, flags, mode);
	if (fd >= 0 && !existed)
		dirop_add(DIR_CREATE, a);
	pthread_mutex_unlock(&mu);
	return fd;
}

int open(const char *name, int flags, ...)
{
	mode_t mode = 0;
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return do_open(AT_FDCWD, name, flags, mode, 0);
}

int open64(const char *name, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *name, int flags, ...)
{
	mode_t mode = 0;
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return do_open(dirfd, name, flags, mode, 1);
}

int openat64(int dirfd, const char *name, int flags, ...) __attribute__((alias("openat")));

/* ---- the end of the process: power goes too ---- */

static void at_end(void)
{
	if (!inited)
		return;
	pthread_mutex_lock(&mu);
	if (mode_fault == 0)
		say("count %llu\n", calls);
	crash_undo();
	/* keep the mutex: no thread touches storage after the power is gone */
}

void _exit(int status)
{
	init();
	at_end();
	real_exit_(status);
	syscall(SYS_exit_group, status); /* not reached */
	for (;;)
		pause();
}

__attribute__((destructor)) static void shim_fini(void)
{
	at_end();
}
