/* xmalloc.h — allocation that aborts on out-of-memory (redis zmalloc style).
 *
 * A ledger that cannot allocate cannot keep its promises; dying loudly and
 * recovering from the WAL is the only safe answer, so callers never check. */
#ifndef RG_XMALLOC_H
#define RG_XMALLOC_H

#include <stddef.h>
#include <stdlib.h> /* free() pairs with every x*alloc */

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrndup(const char *s, size_t len);

#endif
