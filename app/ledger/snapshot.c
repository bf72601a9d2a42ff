/* snapshot.c — a shard's book written whole to disk (layout in snapshot.h).
 *
 * DESIGN
 * A snapshot is written under a temp name, fsynced, renamed into place and
 * the directory fsynced, so a crash leaves either the complete new file or
 * none (plus perhaps a stale temp file, which loading ignores and the next
 * write removes). Loading trusts nothing: the name, the header crc, the
 * length against the file size and the payload crc must all agree, and a
 * snapshot that fails is skipped for the next older one; recovery then just
 * replays more of the WAL (segments are deleted only through the oldest
 * snapshot kept, so the older one's WAL is still there). */
#include "ledger/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define SNAP_MAGIC "RGSNAP01"
#define SNAP_HEADER_LEN 32
#define SNAP_NAME_LEN 27        /* "snap-" + 16 hex + ".snap" */
#define SNAP_TMP_NAME_LEN 26    /* "snap-" + 16 hex + ".tmp" */

static void snap_name(char out[SNAP_NAME_LEN + 1], uint64_t lsn)
{
	snprintf(out, SNAP_NAME_LEN + 1, "snap-%016" PRIx64 ".snap", lsn);
}

static void snap_tmp_name(char out[SNAP_TMP_NAME_LEN + 1], uint64_t lsn)
{
	snprintf(out, SNAP_TMP_NAME_LEN + 1, "snap-%016" PRIx64 ".tmp", lsn);
}

/* Parses "snap-<16 lowercase hex><suffix>" exactly; returns 1 on a match. */
static int snap_name_parse(const char *name, const char *suffix, uint64_t *lsn)
{
	return strlen(name) == 21 + strlen(suffix) && memcmp(name, "snap-", 5) == 0 &&
	       strcmp(name + 21, suffix) == 0 && fileio_parse_hex16(name + 5, lsn);
}

static int u64_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x > y ? -1 : x < y;
}

/* Lists the snapshot lsns in dir, newest first (*lsns malloc'd). When tmp is
 * set, stale temp files are deleted on the way (we are the only writer). */
static int snap_list(const char *dir, int dirfd, int tmp, uint64_t **lsns, size_t *n)
{
	size_t cap = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	*lsns = NULL;
	*n = 0;
	if (!d)
		return -errno;
	errno = 0;
	while ((de = readdir(d))) {
		uint64_t lsn;
		if (tmp && snap_name_parse(de->d_name, ".tmp", &lsn)) {
			if (unlinkat(dirfd, de->d_name, 0) == 0)
				log_info("snapshot: removed stale temp file %s/%s", dir, de->d_name);
			errno = 0;
			continue;
		}
		if (!snap_name_parse(de->d_name, ".snap", &lsn))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			*lsns = xrealloc(*lsns, cap * sizeof(**lsns));
		}
		(*lsns)[(*n)++] = lsn;
	}
	int rc = errno ? -errno : 0;
	closedir(d);
	if (rc < 0) {
		free(*lsns);
		*lsns = NULL;
		*n = 0;
		return rc;
	}
	if (*n > 1)
		qsort(*lsns, *n, sizeof(**lsns), u64_desc);
	return 0;
}

/* Deletes all but the newest keep snapshots, and stale temp files. */
static int snap_prune(const char *dir, int dirfd, unsigned keep)
{
	uint64_t *lsns;
	size_t n;
	int rc = snap_list(dir, dirfd, 1, &lsns, &n);

	if (rc < 0)
		return rc;
	for (size_t i = keep; i < n; i++) {
		char name[SNAP_NAME_LEN + 1];
		snap_name(name, lsns[i]);
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) {
			rc = -errno;
			log_error("snapshot: cannot delete %s/%s: %s", dir, name, strerror(-rc));
			break;
		}
	}
	free(lsns);
	return rc;
}

int snapshot_write(const char *dir, uint64_t lsn, const void *data, size_t len, unsigned keep)
{
	char tmp[SNAP_TMP_NAME_LEN + 1], name[SNAP_NAME_LEN + 1];
	uint8_t hdr[SNAP_HEADER_LEN];
	int rc, fd = -1, dirfd;

	if (keep < 1)
		return -EINVAL;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		rc = -errno;
		log_error("snapshot: cannot open %s: %s", dir, strerror(-rc));
		return rc;
	}
	snap_tmp_name(tmp, lsn);
	snap_name(name, lsn);

	memcpy(hdr, SNAP_MAGIC, 8);
	put_u64le(hdr + 8, lsn);
	put_u64le(hdr + 16, (uint64_t)len);
	put_u32le(hdr + 24, crc32c(0, data, len));
	put_u32le(hdr + 28, crc32c(0, hdr, 28));

	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = fileio_write_all(fd, hdr, sizeof(hdr));
	if (rc == 0)
		rc = fileio_write_all(fd, data, len);
	if (rc == 0)
		rc = fileio_fsync(fd);
	if (rc < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = fileio_fsync(dirfd);
	if (rc < 0) {
		log_error("snapshot: fsync of %s failed: %s", dir, strerror(-rc));
		close(dirfd);
		return rc;
	}
	/* Pruning is housekeeping: the new snapshot is already safe, so a
	 * failure here is logged and reported but deletes nothing it should not. */
	rc = snap_prune(dir, dirfd, keep);
	if (rc == 0)
		rc = fileio_fsync(dirfd);
	if (rc < 0)
		log_error("snapshot: cannot prune old snapshots in %s: %s", dir, strerror(-rc));
	close(dirfd);
	return rc;
fail:
	log_error("snapshot: cannot write %s/%s: %s", dir, name, strerror(-rc));
	if (fd >= 0)
		close(fd);
	unlinkat(dirfd, tmp, 0);
	close(dirfd);
	return rc;
}

/* Loads and verifies snapshot lsn. Returns 0, -EBADMSG when it is damaged
 * (why says how), -ENOENT when it vanished, or another negative errno. */
static int snap_load(const char *dir, int dirfd, uint64_t lsn, uint8_t **data, size_t *len,
		     const char **why)
{
	char name[SNAP_NAME_LEN + 1];
	uint8_t hdr[SNAP_HEADER_LEN];
	uint8_t *payload = NULL;
	struct stat sb;
	int rc, fd;

	snap_name(name, lsn);
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		goto fail;
	}
	*why = "shorter than its header";
	rc = -EBADMSG;
	if (sb.st_size < SNAP_HEADER_LEN)
		goto fail;
	rc = fileio_read_all(fd, hdr, sizeof(hdr));
	if (rc < 0)
		goto fail;
	rc = -EBADMSG;
	*why = "header checksum mismatch";
	if (get_u32le(hdr + 28) != crc32c(0, hdr, 28))
		goto fail;
	*why = "bad magic";
	if (memcmp(hdr, SNAP_MAGIC, 8) != 0)
		goto fail;
	*why = "LSN differs from the file name";
	if (get_u64le(hdr + 8) != lsn)
		goto fail;
	*why = "payload length differs from the file size";
	uint64_t plen = get_u64le(hdr + 16);
	if (plen != (uint64_t)sb.st_size - SNAP_HEADER_LEN)
		goto fail;
	payload = xmalloc((size_t)plen);
	rc = fileio_read_all(fd, payload, (size_t)plen);
	if (rc < 0)
		goto fail;
	rc = -EBADMSG;
	*why = "payload checksum mismatch";
	if (crc32c(0, payload, (size_t)plen) != get_u32le(hdr + 24))
		goto fail;
	close(fd);
	*data = payload;
	*len = (size_t)plen;
	return 0;
fail:
	free(payload);
	close(fd);
	return rc;
}

int snapshot_load_latest(const char *dir, uint64_t *lsn, uint8_t **data, size_t *len)
{
	uint64_t *lsns = NULL;
	size_t n = 0;
	int rc, dirfd;

	*lsn = 0;
	*data = NULL;
	*len = 0;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		if (errno == ENOENT)
			return 0;        /* no directory yet: no snapshot */
		rc = -errno;
		log_error("snapshot: cannot open %s: %s", dir, strerror(-rc));
		return rc;
	}
	rc = snap_list(dir, dirfd, 0, &lsns, &n);
	if (rc < 0) {
		log_error("snapshot: cannot list %s: %s", dir, strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const char *why = "";
		rc = snap_load(dir, dirfd, lsns[i], data, len, &why);
		if (rc == 0) {
			*lsn = lsns[i];
			break;
		}
		if (rc == -EBADMSG) {
			log_warn("snapshot: skipping damaged %s/snap-%016" PRIx64 ".snap: %s",
				 dir, lsns[i], why);
		} else if (rc != -ENOENT) {
			log_error("snapshot: cannot read %s/snap-%016" PRIx64 ".snap: %s",
				  dir, lsns[i], strerror(-rc));
			goto out;
		}
		rc = 0;
	}
out:
	free(lsns);
	close(dirfd);
	return rc;
}

int snapshot_quarantine_newer(const char *dir, uint64_t lsn)
{
	uint64_t *lsns = NULL;
	size_t n = 0, moved = 0;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return errno == ENOENT ? 0 : -errno;
	int rc = snap_list(dir, dirfd, 0, &lsns, &n);
	for (size_t i = 0; rc == 0 && i < n && lsns[i] > lsn; i++) {
		char name[SNAP_NAME_LEN + 1], damaged[SNAP_NAME_LEN + 16];
		snap_name(name, lsns[i]);
		/* Never over an earlier damaged copy of the same lsn (the log can
		 * reach an lsn again after --allow-wal-corruption cut it). */
		for (unsigned k = 1;; k++) {
			if (k == 1)
				snprintf(damaged, sizeof(damaged), "snap-%016" PRIx64 ".damaged", lsns[i]);
			else
				snprintf(damaged, sizeof(damaged), "snap-%016" PRIx64 ".damaged.%u",
					 lsns[i], k);
			if (renameat2(dirfd, name, dirfd, damaged, RENAME_NOREPLACE) == 0)
				break;
			if (errno != EEXIST || k == 1000) {
				rc = -errno;
				break;
			}
		}
		if (rc != 0) {
			log_error("snapshot: cannot set aside damaged %s/%s: %s", dir, name, strerror(-rc));
			break;
		}
		log_warn("snapshot: damaged %s/%s set aside as %s", dir, name, damaged);
		moved++;
	}
	if (rc == 0 && moved) {
		rc = fileio_fsync(dirfd);
		if (rc < 0)
			log_error("snapshot: fsync of %s failed: %s", dir, strerror(-rc));
	}
	free(lsns);
	close(dirfd);
	return rc;
}
