/* clock.c — wall and monotonic clocks. */
#include "common/clock.h"

#include <stdio.h>
#include <time.h>

int64_t clock_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void clock_format_iso(int64_t wall_ms, char out[25])
{
	time_t secs = (time_t)(wall_ms / 1000);
	int ms = (int)(wall_ms % 1000);
	struct tm tm;
	if (ms < 0) {
		ms += 1000;
		secs -= 1;
	}
	gmtime_r(&secs, &tm);
	/* strftime bounds every field; years past 9999 do not occur in a sale. */
	size_t n = strftime(out, 25, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 25 - n, ".%03dZ", ms);
}
