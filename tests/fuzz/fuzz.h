/* fuzz.h — what every harness in tests/fuzz shares.
 *
 * Each harness defines LLVMFuzzerTestOneInput and is linked twice: with
 * libFuzzer (clang, -fsanitize=fuzzer; fuzzes) and with replay_main.c (any
 * compiler; replays the corpus). A harness states a bug by aborting through
 * FUZZ_CHECK, which names the broken property, so libFuzzer saves the input
 * and the replay run fails the same way. */
#ifndef RG_FUZZ_H
#define RG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* rg_assert and log_fatal end the process with _exit(1) unless told to
 * abort: libFuzzer only saves the input of a crash, so every harness asks. */
static int fuzz_verbose; /* RG_FUZZ_VERBOSE=1: say what each input did */

static inline void fuzz_setup(void)
{
	setenv("RG_ABORT_ON_FATAL", "1", 1);
	fuzz_verbose = getenv("RG_FUZZ_VERBOSE") != NULL;
}

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz: property broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

#endif
