/* fuzz_cfg.c — the config file parser against arbitrary files.
 *
 * The input is the whole file, handed to cfg_load through a memfd (no disk).
 * Beyond "no crash", the properties cfg.h and the shipped conf promise:
 *   - a refused file gets -EINVAL with "FILE:LINE: why", naming a line the
 *     file has, or "cannot read FILE"; never another error for a readable file;
 *   - an accepted file has no line over 1024 bytes (the documented limit)
 *     and no NUL byte (once, a NUL hid the rest of a long line from the
 *     length check, and that rest was read as a line of its own);
 *   - an accepted config, written back out key by key, loads to the same
 *     values (what the parser took is what a reader of the file sees). */
#include "fuzz.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/log.h"

static int file_fd = -1, out_fd = -1;
static char file_path[64], out_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_setup();
	/* RG_<KEY> overrides would make results depend on the environment. */
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		char var[64];
		snprintf(var, sizeof(var), "RG_%s", k->name);
		for (size_t i = 3; var[i]; i++)
			var[i] = (char)toupper((unsigned char)var[i]);
		unsetenv(var);
	}
	file_fd = memfd_create("fuzz-cfg", 0);
	out_fd = memfd_create("fuzz-cfg-out", 0);
	FUZZ_CHECK(file_fd >= 0 && out_fd >= 0);
	snprintf(file_path, sizeof(file_path), "/proc/self/fd/%d", file_fd);
	snprintf(out_path, sizeof(out_path), "/proc/self/fd/%d", out_fd);
	return 0;
}

static void put_file(int fd, const void *data, size_t size)
{
	FUZZ_CHECK(ftruncate(fd, 0) == 0);
	FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
}

/* Writes cfg as a file. Returns 0, or -1 when some string value cannot be
 * written in the file syntax (quotes and edge blanks together). */
static int format_config(const Config *cfg, char *out, size_t out_size, size_t *len)
{
	size_t n = 0;

	for (const CfgKey *k = cfg_keys; k->name; k++) {
		const char *field = (const char *)cfg + k->offset;
		int w;
		switch (k->type) {
		case CFG_STR:
		case CFG_LEVEL: {
			size_t vl = strlen(field);
			int edge = vl && (isspace((unsigned char)field[0]) ||
					  isspace((unsigned char)field[vl - 1]));
			/* '#' ends an unquoted value at its start or after a blank. */
			int hash = 0;
			for (size_t i = 0; i < vl; i++)
				hash |= field[i] == '#' && (i == 0 || isspace((unsigned char)field[i - 1]));
			int quote = edge || vl == 0 || hash || field[0] == '"';
			if (quote && strchr(field, '"'))
				return -1;
			w = snprintf(out + n, out_size - n, quote ? "%s = \"%s\"\n" : "%s = %s\n",
				     k->name, field);
			break;
		}
		case CFG_INT:
			w = snprintf(out + n, out_size - n, "%s = %d\n", k->name, *(const int *)(const void *)field);
			break;
		case CFG_MODE:
			w = snprintf(out + n, out_size - n, "%s = %o\n", k->name, *(const int *)(const void *)field);
			break;
		default:
			FUZZ_CHECK(!"unknown key type");
			return -1;
		}
		FUZZ_CHECK(w > 0 && (size_t)w < out_size - n);
		n += (size_t)w;
	}
	*len = n;
	return 0;
}

static void check_same(const Config *a, const Config *b)
{
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
		if (k->type == CFG_STR || k->type == CFG_LEVEL) {
			if (strcmp(fa, fb) != 0)
				fprintf(stderr, "fuzz_cfg: key %s: '%s' reloads as '%s'\n", k->name, fa, fb);
			FUZZ_CHECK(strcmp(fa, fb) == 0);
		} else {
			FUZZ_CHECK(*(const int *)(const void *)fa == *(const int *)(const void *)fb);
		}
	}
}

static int longest_line(const uint8_t *data, size_t size)
{
	size_t longest = 0, cur = 0;

	for (size_t i = 0; i < size; i++) {
		if (data[i] == '\n') {
			cur = 0;
			continue;
		}
		if (++cur > longest)
			longest = cur;
	}
	return longest > 1 << 20 ? 1 << 20 : (int)longest;
}

static int count_lines(const uint8_t *data, size_t size)
{
	int n = 0;

	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n + (size && data[size - 1] != '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static Config cfg, again;
	static char text[64 * 1024];
	char err[1024] = "", prefix[80];
	size_t len;
	int rc;

	log_level = LOG_ERROR;
	put_file(file_fd, data, size);
	rc = cfg_load(&cfg, file_path, err, sizeof(err));
	if (rc < 0) {
		int line = 0;
		FUZZ_CHECK(rc == -EINVAL);
		snprintf(prefix, sizeof(prefix), "%s:", file_path);
		FUZZ_CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
		FUZZ_CHECK(sscanf(err + strlen(prefix), "%d: ", &line) == 1);
		FUZZ_CHECK(line >= 1 && line <= count_lines(data, size));
		return 0;
	}
	FUZZ_CHECK(longest_line(data, size) <= 1024);
	FUZZ_CHECK(memchr(data, '\0', size) == NULL);
	if (format_config(&cfg, text, sizeof(text), &len) < 0)
		return 0;
	put_file(out_fd, text, len);
	rc = cfg_load(&again, out_path, err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "fuzz_cfg: the config written back is refused: %s\n%s", err, text);
	FUZZ_CHECK(rc == 0);
	check_same(&cfg, &again);
	return 0;
}
