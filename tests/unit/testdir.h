/* testdir.h — a scratch directory per test case, under RG_TEST_TMP.
 *
 * testdir_init(prefix) once; then testdir_case(out, len, name) makes a fresh
 * "<RG_TEST_TMP>/<prefix>-<pid>-<n>-<name>" and testdir_remove deletes it
 * (it holds plain files only). */
#ifndef RG_TEST_TESTDIR_H
#define RG_TEST_TESTDIR_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char testdir_base[512];
static const char *testdir_prefix = "test";
static unsigned testdir_seq;

static inline void testdir_mkdir_p(const char *path)
{
	char p[512];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++) {
		if (*s == '/') {
			*s = '\0';
			mkdir(p, 0755);
			*s = '/';
		}
	}
	REQUIRE(mkdir(p, 0755) == 0 || errno == EEXIST);
}

static inline void testdir_init(const char *prefix)
{
	const char *base = getenv("RG_TEST_TMP");
	snprintf(testdir_base, sizeof(testdir_base), "%s", base && base[0] ? base : "/tmp/rg-test");
	testdir_prefix = prefix;
	testdir_mkdir_p(testdir_base);
}

static inline void testdir_case(char *out, size_t len, const char *name)
{
	int n = snprintf(out, len, "%s/%s-%d-%u-%s", testdir_base, testdir_prefix, (int)getpid(),
			 testdir_seq++, name);
	REQUIRE(n > 0 && (size_t)n < len);
	REQUIRE(mkdir(out, 0755) == 0);
}

/* Deletes every file in dir, keeping dir. */
static inline void testdir_clear(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[1024];

	REQUIRE(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		REQUIRE(unlink(path) == 0);
	}
	closedir(d);
}

static inline void testdir_remove(const char *dir)
{
	testdir_clear(dir);
	REQUIRE(rmdir(dir) == 0);
}

#endif
