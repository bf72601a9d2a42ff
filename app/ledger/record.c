/* record.c — encode and decode WAL record payloads (layout in record.h). */
#include "ledger/record.h"

#include <errno.h>

#include "common/log.h"

const char *record_type_name(uint8_t type)
{
	switch (type) {
	case REC_SKU_PUT: return "sku_put";
	case REC_RESERVE: return "reserve";
	case REC_CONFIRM: return "confirm";
	case REC_RELEASE: return "release";
	case REC_TIMEOUT: return "timeout";
	}
	return "unknown";
}

void record_encode(const Record *rec, Buf *out)
{
	buf_put_u8(out, rec->type);
	buf_put_u8(out, RECORD_VERSION);
	buf_put_u64(out, (uint64_t)rec->at_ms);
	switch (rec->type) {
	case REC_SKU_PUT: {
		const WireSkuSettings *s = &rec->settings;
		rg_assert(wire_sku_valid(rec->sku, rec->sku_len));
		buf_put_str8(out, rec->sku, rec->sku_len);
		buf_put_u64(out, (uint64_t)s->stock);
		buf_put_u64(out, (uint64_t)s->price_cents);
		buf_put_u32(out, (uint32_t)s->per_session_limit);
		buf_put_u32(out, (uint32_t)s->max_per_order);
		buf_put_u32(out, (uint32_t)s->reservation_ttl_s);
		buf_put_str8(out, s->name, s->name_len);
		break;
	}
	case REC_RESERVE:
		rg_assert(wire_sku_valid(rec->sku, rec->sku_len));
		rg_assert(wire_session_valid(rec->session, rec->session_len));
		rg_assert(rec->quantity >= 1);
		buf_append(out, rec->id.b, RESID_BYTES);
		buf_put_str8(out, rec->sku, rec->sku_len);
		buf_put_str8(out, rec->session, rec->session_len);
		buf_put_str8(out, rec->idem_key, rec->idem_key_len);
		buf_put_u32(out, (uint32_t)rec->quantity);
		buf_put_u64(out, (uint64_t)rec->expires_ms);
		break;
	case REC_CONFIRM:
	case REC_RELEASE:
	case REC_TIMEOUT:
		buf_append(out, rec->id.b, RESID_BYTES);
		break;
	default:
		log_fatal("record_encode: unknown type %u", rec->type);
	}
}

int record_decode(const uint8_t *data, size_t len, Record *rec)
{
	Reader r;
	reader_init(&r, data, len);
	memset(rec, 0, sizeof(*rec));
	rec->type = reader_u8(&r);
	if (reader_u8(&r) != RECORD_VERSION)
		return -EBADMSG;
	rec->at_ms = (int64_t)reader_u64(&r);
	switch (rec->type) {
	case REC_SKU_PUT: {
		WireSkuSettings *s = &rec->settings;
		reader_str8(&r, rec->sku, WIRE_SKU_MAX, &rec->sku_len);
		s->fields = WIRE_SKU_HAS_ALL;
		s->stock = (int64_t)reader_u64(&r);
		s->price_cents = (int64_t)reader_u64(&r);
		s->per_session_limit = (int32_t)reader_u32(&r);
		s->max_per_order = (int32_t)reader_u32(&r);
		s->reservation_ttl_s = (int32_t)reader_u32(&r);
		reader_str8(&r, s->name, WIRE_NAME_MAX, &s->name_len);
		if (r.failed || !wire_sku_valid(rec->sku, rec->sku_len) ||
		    s->stock < 0 || s->stock > WIRE_STOCK_MAX ||
		    s->price_cents < 0 || s->price_cents > WIRE_PRICE_MAX ||
		    s->per_session_limit < 0 || s->max_per_order < 1 ||
		    s->reservation_ttl_s < 1 || s->reservation_ttl_s > WIRE_TTL_MAX_S ||
		    !wire_name_valid(s->name, s->name_len))
			return -EBADMSG;
		break;
	}
	case REC_RESERVE:
		reader_bytes(&r, rec->id.b, RESID_BYTES);
		reader_str8(&r, rec->sku, WIRE_SKU_MAX, &rec->sku_len);
		reader_str8(&r, rec->session, WIRE_SESSION_MAX, &rec->session_len);
		reader_str8(&r, rec->idem_key, WIRE_IDEM_KEY_MAX, &rec->idem_key_len);
		rec->quantity = (int32_t)reader_u32(&r);
		rec->expires_ms = (int64_t)reader_u64(&r);
		if (r.failed || !wire_sku_valid(rec->sku, rec->sku_len) ||
		    !wire_session_valid(rec->session, rec->session_len) ||
		    !wire_idem_key_valid(rec->idem_key, rec->idem_key_len) ||
		    rec->quantity < 1 || rec->expires_ms < rec->at_ms)
			return -EBADMSG;
		break;
	case REC_CONFIRM:
	case REC_RELEASE:
	case REC_TIMEOUT:
		reader_bytes(&r, rec->id.b, RESID_BYTES);
		break;
	default:
		return -EBADMSG;
	}
	if (r.failed || r.left != 0)
		return -EBADMSG;
	return 0;
}
