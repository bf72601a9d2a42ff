/* test_snapshot.c — snapshot write/load, pruning, and falling back past damage.
 *
 * Each case works in its own directory under $RG_TEST_TMP and removes it
 * afterwards. */
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

#include "check.h"
#include "testdir.h"
#include "common/buf.h"
#include "common/log.h"

static void snap_path(char *out, size_t len, const char *dir, uint64_t lsn)
{
	snprintf(out, len, "%s/snap-%016" PRIx64 ".snap", dir, lsn);
}

static int exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	REQUIRE(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A payload that differs per lsn, so a fallback is visible in the bytes. */
static void payload(uint64_t lsn, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(lsn * 13 + i * 7);
}

static void write_ok(const char *dir, uint64_t lsn, size_t len, unsigned keep)
{
	uint8_t *p = malloc(len + 1);
	REQUIRE(p);
	payload(lsn, p, len);
	CHECK_EQ_INT(snapshot_write(dir, lsn, p, len, keep), 0);
	free(p);
}

static void check_loads(const char *dir, uint64_t want_lsn, size_t want_len)
{
	uint64_t lsn = 99;
	uint8_t *data = NULL;
	size_t len = 1;

	CHECK_EQ_INT(snapshot_load_latest(dir, &lsn, &data, &len), 0);
	CHECK_EQ_INT(lsn, want_lsn);
	CHECK_EQ_INT(len, want_len);
	REQUIRE(data);
	uint8_t *want = malloc(want_len + 1);
	REQUIRE(want);
	payload(want_lsn, want, want_len);
	CHECK(memcmp(data, want, want_len) == 0);
	free(want);
	free(data);
}

static void test_none(void)
{
	char dir[512], missing[600];
	uint64_t lsn = 5;
	uint8_t *data = (uint8_t *)"x";
	size_t len = 5;

	testdir_case(dir, sizeof(dir), "none");
	CHECK_EQ_INT(snapshot_load_latest(dir, &lsn, &data, &len), 0);
	CHECK(data == NULL);
	CHECK_EQ_INT(lsn, 0);
	CHECK_EQ_INT(len, 0);
	/* A shard directory that does not exist yet has no snapshot either. */
	snprintf(missing, sizeof(missing), "%s/nope", dir);
	lsn = 5;
	CHECK_EQ_INT(snapshot_load_latest(missing, &lsn, &data, &len), 0);
	CHECK(data == NULL);
	CHECK_EQ_INT(lsn, 0);
	testdir_remove(dir);
}

static void test_roundtrip(void)
{
	char dir[512], path[1024];
	struct stat sb;

	testdir_case(dir, sizeof(dir), "roundtrip");
	write_ok(dir, 1234, 100000, 2);
	check_loads(dir, 1234, 100000);
	snap_path(path, sizeof(path), dir, 1234);
	CHECK(stat(path, &sb) == 0 && sb.st_size == 32 + 100000);
	CHECK_EQ_INT(count_files(dir), 1);

	/* The header layout of snapshot.h. */
	uint8_t hdr[32];
	int fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0 && read(fd, hdr, 32) == 32);
	close(fd);
	CHECK(!memcmp(hdr, "RGSNAP01", 8));
	CHECK(get_u64le(hdr + 8) == 1234);
	CHECK(get_u64le(hdr + 16) == 100000);

	/* An empty payload is a valid snapshot (an empty book). */
	write_ok(dir, 2000, 0, 2);
	uint64_t lsn;
	uint8_t *data = NULL;
	size_t len = 7;
	CHECK_EQ_INT(snapshot_load_latest(dir, &lsn, &data, &len), 0);
	CHECK_EQ_INT(lsn, 2000);
	CHECK_EQ_INT(len, 0);
	CHECK(data != NULL);
	free(data);
	CHECK_EQ_INT(snapshot_write(dir, 3000, "x", 1, 0), -EINVAL);
	testdir_remove(dir);
}

static void test_keep(void)
{
	char dir[512], path[1024];

	testdir_case(dir, sizeof(dir), "keep");
	for (uint64_t lsn = 10; lsn <= 50; lsn += 10)
		write_ok(dir, lsn, 500 + lsn, 2);
	CHECK_EQ_INT(count_files(dir), 2);
	snap_path(path, sizeof(path), dir, 40);
	CHECK(exists(path));
	snap_path(path, sizeof(path), dir, 50);
	CHECK(exists(path));
	check_loads(dir, 50, 550);
	write_ok(dir, 60, 10, 1);
	CHECK_EQ_INT(count_files(dir), 1);
	check_loads(dir, 60, 10);
	testdir_remove(dir);
}

static void test_damaged_newest(void)
{
	char dir[512], path[1024];
	uint8_t b;
	int fd;

	testdir_case(dir, sizeof(dir), "damaged");
	write_ok(dir, 100, 4000, 2);
	write_ok(dir, 200, 4000, 2);
	snap_path(path, sizeof(path), dir, 200);

	/* A bit flip in the payload. */
	fd = open(path, O_RDWR);
	REQUIRE(fd >= 0 && pread(fd, &b, 1, 32 + 1000) == 1);
	b ^= 0x10;
	REQUIRE(pwrite(fd, &b, 1, 32 + 1000) == 1);
	close(fd);
	check_loads(dir, 100, 4000);

	/* Truncated, in the payload and in the header. */
	write_ok(dir, 200, 4000, 2);
	check_loads(dir, 200, 4000);
	REQUIRE(truncate(path, 32 + 3999) == 0);
	check_loads(dir, 100, 4000);
	REQUIRE(truncate(path, 20) == 0);
	check_loads(dir, 100, 4000);
	REQUIRE(truncate(path, 0) == 0);
	check_loads(dir, 100, 4000);

	/* A bit flip in the header (the lsn field). */
	write_ok(dir, 200, 4000, 2);
	fd = open(path, O_RDWR);
	REQUIRE(fd >= 0 && pread(fd, &b, 1, 8) == 1);
	b ^= 0x01;
	REQUIRE(pwrite(fd, &b, 1, 8) == 1);
	close(fd);
	check_loads(dir, 100, 4000);

	/* A file renamed to a newer lsn than it holds. */
	char other[1024];
	write_ok(dir, 200, 4000, 2);
	snap_path(other, sizeof(other), dir, 300);
	REQUIRE(link(path, other) == 0);
	check_loads(dir, 200, 4000);
	REQUIRE(unlink(other) == 0);

	/* Every snapshot damaged: none. */
	snap_path(other, sizeof(other), dir, 100);
	REQUIRE(truncate(path, 10) == 0 && truncate(other, 10) == 0);
	uint64_t lsn = 1;
	uint8_t *data = NULL;
	size_t len = 1;
	CHECK_EQ_INT(snapshot_load_latest(dir, &lsn, &data, &len), 0);
	CHECK(data == NULL);
	CHECK_EQ_INT(lsn, 0);
	testdir_remove(dir);
}

/* Snapshots 100 (good) and 200 (damaged), recovery falling back to 100 and
 * setting 200 aside, as shard_open does. path receives 200's file. */
static void recover_past_damaged_200(const char *dir, char *path, size_t path_len)
{
	write_ok(dir, 100, 4000, 2);
	write_ok(dir, 200, 4000, 2);
	snap_path(path, path_len, dir, 200);
	REQUIRE(truncate(path, 100) == 0);
	check_loads(dir, 100, 4000);
	CHECK_EQ_INT(snapshot_quarantine_newer(dir, 100), 0);
}

/* A damaged newest snapshot is set aside once recovery has used the older
 * one, so the next write keeps that good one instead of the damaged file. */
static void test_quarantine(void)
{
	char dir[512], path[1024], aside[1024];

	testdir_case(dir, sizeof(dir), "quarantine");
	recover_past_damaged_200(dir, path, sizeof(path));
	snprintf(aside, sizeof(aside), "%s/snap-%016" PRIx64 ".damaged", dir, (uint64_t)200);
	CHECK(!exists(path));
	CHECK(exists(aside));
	check_loads(dir, 100, 4000);
	CHECK_EQ_INT(snapshot_quarantine_newer(dir, 100), 0); /* nothing newer left */

	write_ok(dir, 300, 4000, 2);
	snap_path(path, sizeof(path), dir, 100);
	CHECK(exists(path));          /* kept: the fallback behind 300 */
	CHECK(exists(aside));         /* never loaded, counted or pruned */
	CHECK_EQ_INT(count_files(dir), 3);
	check_loads(dir, 300, 4000);

	/* No good snapshot at all (recovered from the WAL alone): all set aside. */
	REQUIRE(truncate(path, 10) == 0);
	snap_path(path, sizeof(path), dir, 300);
	REQUIRE(truncate(path, 10) == 0);
	CHECK_EQ_INT(snapshot_quarantine_newer(dir, 0), 0);
	CHECK_EQ_INT(count_files(dir), 3);
	uint64_t lsn = 1;
	uint8_t *data = NULL;
	size_t len = 1;
	CHECK_EQ_INT(snapshot_load_latest(dir, &lsn, &data, &len), 0);
	CHECK(data == NULL);

	/* Lsn 200 damaged again later (the log reached it once more): its
	 * second copy is set aside beside the first, not over it. */
	recover_past_damaged_200(dir, path, sizeof(path));
	snprintf(aside, sizeof(aside), "%s/snap-%016" PRIx64 ".damaged.2", dir, (uint64_t)200);
	CHECK(exists(aside));
	CHECK_EQ_INT(count_files(dir), 5); /* 100 and four set aside */
	testdir_remove(dir);
}

static void test_temp_files(void)
{
	char dir[512], path[1024];
	int fd;

	testdir_case(dir, sizeof(dir), "temp");
	write_ok(dir, 100, 300, 2);
	/* A crash between writing the temp file and the rename leaves it
	 * behind, complete or not; loading must not pick it up. */
	snprintf(path, sizeof(path), "%s/snap-%016" PRIx64 ".tmp", dir, (uint64_t)500);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, "RGSNAP01garbage", 15) == 15);
	close(fd);
	check_loads(dir, 100, 300);
	/* The next write clears it away. */
	write_ok(dir, 150, 300, 2);
	CHECK(!exists(path));
	CHECK_EQ_INT(count_files(dir), 2);
	check_loads(dir, 150, 300);
	testdir_remove(dir);
}

/* Open descriptors, to catch a leak on any path. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

int main(void)
{
	testdir_init("snap");
	int fds = count_fds();
	log_set_context("test_snapshot");

	test_none();
	test_roundtrip();
	test_keep();
	test_damaged_newest();
	test_quarantine();
	test_temp_files();
	CHECK_EQ_INT(count_fds(), fds);
	return check_exit();
}
