/* clock.h — the two clocks the service reads.
 *
 * Wall time (ms since the Unix epoch) stamps reservations because API.md shows
 * it to buyers; monotonic time measures latency and paces timers. */
#ifndef RG_CLOCK_H
#define RG_CLOCK_H

#include <stdint.h>

int64_t clock_wall_ms(void);
int64_t clock_mono_ns(void);

/* Formats ms since the epoch as "2026-12-03T12:00:00.000Z"; out needs 25 bytes. */
void clock_format_iso(int64_t wall_ms, char out[25]);

#endif
