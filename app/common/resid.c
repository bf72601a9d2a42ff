/* resid.c — reservation id construction and text form. */
#include "common/resid.h"

#include <errno.h>

#include "common/buf.h"

void resid_make(ResId *id, uint32_t route, const uint8_t random[12])
{
	id->b[0] = (uint8_t)(route >> 24);
	id->b[1] = (uint8_t)(route >> 16);
	id->b[2] = (uint8_t)(route >> 8);
	id->b[3] = (uint8_t)route;
	memcpy(id->b + 4, random, 12);
}

uint32_t resid_route(const ResId *id)
{
	return (uint32_t)id->b[0] << 24 | (uint32_t)id->b[1] << 16 | (uint32_t)id->b[2] << 8 | id->b[3];
}

void resid_format(const ResId *id, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < RESID_BYTES; i++) {
		out[2 * i] = hex[id->b[i] >> 4];
		out[2 * i + 1] = hex[id->b[i] & 15];
	}
	out[RESID_TEXT_LEN] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int resid_parse(const char *text, size_t len, ResId *id)
{
	if (len != RESID_TEXT_LEN)
		return -EINVAL;
	for (int i = 0; i < RESID_BYTES; i++) {
		int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		id->b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}
