/* latency.h — percentiles of the load tools' 1 µs-resolution histograms.
 *
 * hist[i] counts answers that took i microseconds (the last bucket: that
 * long or longer). */
#ifndef RG_TOOLS_LATENCY_H
#define RG_TOOLS_LATENCY_H

#include <stdint.h>

/* The latency in µs below which a share p (0..1) of the total answers fell. */
static inline int64_t latency_percentile_us(const uint32_t *hist, int64_t buckets, uint64_t total,
					    double p)
{
	uint64_t want = (uint64_t)(p * (double)total), seen = 0;
	for (int64_t i = 0; i < buckets; i++) {
		seen += hist[i];
		if (seen > want)
			return i;
	}
	return buckets;
}

#endif
