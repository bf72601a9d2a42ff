/* seeds.c — writes the binary seeds of corpus/wire and corpus/wal.
 *
 * Text seeds (http, cfg) are written by hand; these are built with the real
 * encoders so they are valid by construction and follow any format change:
 *   build: cmake --build BUILD --target fuzz_seeds
 *   run:   BUILD/tests/fuzz/fuzz_seeds tests/fuzz/corpus
 * Crash inputs found later are added next to them under other names. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "common/wire.h"
#include "ledger/record.h"
#include "ledger/wal.h"

static const char *out_dir;

static void save(const char *sub, const char *name, const void *data, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out_dir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, sub, name);
	f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "seeds: cannot write %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void str(char *dst, uint8_t *len, const char *s)
{
	wire_set_str(dst, len, s, strlen(s), 255);
}

static ResId some_id(uint8_t fill)
{
	ResId id;
	uint8_t random[12];

	memset(random, fill, sizeof(random));
	resid_make(&id, 0x01020304u, random);
	return id;
}

/* ---- wire: one frame per file, plus a pipelined stream of each direction ---- */

static void wire_seeds(void)
{
	Buf all_req, all_resp, one;
	WireRequest q;
	WireResponse r;

	buf_init(&all_req, 1024);
	buf_init(&all_resp, 1024);
	buf_init(&one, 256);
#define REQ(name) do { buf_reset(&one); wire_encode_request(&one, &q); \
	save("wire", "req-" name, one.data, one.len); buf_append(&all_req, one.data, one.len); } while (0)
#define RESP(name) do { buf_reset(&one); wire_encode_response(&one, &r); \
	save("wire", "resp-" name, one.data, one.len); buf_append(&all_resp, one.data, one.len); } while (0)

	memset(&q, 0, sizeof(q));
	q = (WireRequest){ .id = 1, .op = WIRE_OP_HELLO, .magic = WIRE_MAGIC, .version = WIRE_VERSION };
	REQ("hello");
	q = (WireRequest){ .id = 2, .op = WIRE_OP_PING };
	REQ("ping");
	q = (WireRequest){ .id = 3, .op = WIRE_OP_RESERVE, .quantity = 2 };
	str(q.sku, &q.sku_len, "TSHIRT-M");
	str(q.session, &q.session_len, "sess-42");
	str(q.idem_key, &q.idem_key_len, "order 7 attempt 1");
	REQ("reserve");
	q = (WireRequest){ .id = 4, .op = WIRE_OP_CONFIRM, .reservation = some_id(0x5a) };
	str(q.session, &q.session_len, "sess-42");
	REQ("confirm");
	q.op = WIRE_OP_RELEASE;
	REQ("release");
	q.op = WIRE_OP_GET_RESERVATION;
	REQ("get-reservation");
	q = (WireRequest){ .id = 5, .op = WIRE_OP_GET_SKU };
	str(q.sku, &q.sku_len, "TSHIRT-M");
	REQ("get-sku");
	q = (WireRequest){ .id = 6, .op = WIRE_OP_PUT_SKU };
	str(q.sku, &q.sku_len, "concert:2026-07-01.A");
	q.settings = (WireSkuSettings){ .fields = WIRE_SKU_HAS_ALL, .stock = 500, .price_cents = 8900,
					.per_session_limit = 4, .max_per_order = 2,
					.reservation_ttl_s = 600 };
	str(q.settings.name, &q.settings.name_len, "Concert, block A \xc3\xa9");
	REQ("put-sku-all");
	q.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_ONLY_IF_NEW;
	REQ("put-sku-stock");
	q = (WireRequest){ .id = 7, .op = WIRE_OP_STATS };
	REQ("stats");

	memset(&r, 0, sizeof(r));
	r = (WireResponse){ .id = 1, .op = WIRE_OP_HELLO, .status = WIRE_OK };
	r.u.hello.magic = WIRE_MAGIC;
	r.u.hello.version = WIRE_VERSION;
	r.u.hello.shards = 4;
	RESP("hello");
	r.status = WIRE_VERSION_MISMATCH;
	RESP("hello-mismatch");
	r = (WireResponse){ .id = 3, .op = WIRE_OP_RESERVE, .status = WIRE_CREATED };
	r.u.reservation = (WireReservation){ .id = some_id(0x5a), .quantity = 2,
					     .state = WIRE_RES_RESERVED, .created_ms = 1700000000000,
					     .expires_ms = 1700000300000, .available = 498 };
	str(r.u.reservation.sku, &r.u.reservation.sku_len, "TSHIRT-M");
	str(r.u.reservation.session, &r.u.reservation.session_len, "sess-42");
	RESP("reserve-created");
	r.op = WIRE_OP_RELEASE;
	r.status = WIRE_ALREADY_CONFIRMED;
	r.u.reservation.state = WIRE_RES_CONFIRMED;
	RESP("release-confirmed");
	r = (WireResponse){ .id = 8, .op = WIRE_OP_RESERVE, .status = WIRE_INSUFFICIENT_STOCK };
	r.u.available = 1;
	RESP("reserve-insufficient");
	r = (WireResponse){ .id = 9, .op = WIRE_OP_RESERVE, .status = WIRE_LIMIT_EXCEEDED };
	r.u.limit.limit = 4;
	r.u.limit.held = 3;
	RESP("reserve-limit");
	r = (WireResponse){ .id = 10, .op = WIRE_OP_PUT_SKU, .status = WIRE_STOCK_BELOW_COMMITTED };
	r.u.sku = (WireSku){ .stock = 500, .reserved = 20, .sold = 400, .price_cents = 8900,
			     .per_session_limit = 4, .max_per_order = 2, .reservation_ttl_s = 600 };
	str(r.u.sku.sku, &r.u.sku.sku_len, "concert:2026-07-01.A");
	str(r.u.sku.name, &r.u.sku.name_len, "Concert, block A");
	RESP("put-sku-below");
	r = (WireResponse){ .id = 11, .op = WIRE_OP_GET_SKU, .status = WIRE_UNKNOWN_SKU };
	RESP("unknown-sku");
	r = (WireResponse){ .id = 12, .op = WIRE_OP_STATS, .status = WIRE_OK };
	r.u.stats.count = 2;
	str(r.u.stats.item[0].name, &r.u.stats.item[0].name_len, "writebehind_lag_records");
	r.u.stats.item[0].value = 12;
	str(r.u.stats.item[1].name, &r.u.stats.item[1].name_len, "shards");
	r.u.stats.item[1].value = 4;
	RESP("stats");
	r = (WireResponse){ .id = 13, .op = WIRE_OP_CONFIRM, .status = WIRE_BUSY };
	RESP("busy");

	save("wire", "stream-requests", all_req.data, all_req.len);
	save("wire", "stream-responses", all_resp.data, all_resp.len);
	buf_free(&all_req);
	buf_free(&all_resp);
	buf_free(&one);
}

/* ---- wal: the 6-byte header of fuzz_wal.c, then segment bytes ---- */

static void record(Buf *seg, uint64_t lsn, const Record *rec)
{
	Buf payload;

	buf_init(&payload, 128);
	record_encode(rec, &payload);
	wal_frame(seg, lsn, payload.data, payload.len);
	buf_free(&payload);
}

/* Records lsn0, lsn0 + 1, ... of a small flash sale, n of them. */
static void sale(Buf *seg, uint64_t lsn0, int n)
{
	Record rec;

	for (int i = 0; i < n; i++) {
		memset(&rec, 0, sizeof(rec));
		rec.at_ms = 1700000000000 + i * 1000;
		switch (i % 5) {
		case 0:
			rec.type = REC_SKU_PUT;
			str(rec.sku, &rec.sku_len, "TSHIRT-M");
			rec.settings = (WireSkuSettings){ .fields = WIRE_SKU_HAS_ALL, .stock = 100,
							  .price_cents = 1999, .per_session_limit = 2,
							  .max_per_order = 2, .reservation_ttl_s = 300 };
			str(rec.settings.name, &rec.settings.name_len, "T-shirt, size M");
			break;
		case 1:
		case 3:
			rec.type = REC_RESERVE;
			rec.id = some_id((uint8_t)i);
			str(rec.sku, &rec.sku_len, "TSHIRT-M");
			str(rec.session, &rec.session_len, i == 1 ? "sess-1" : "sess-2");
			str(rec.idem_key, &rec.idem_key_len, i == 1 ? "k1" : "");
			rec.quantity = 1;
			rec.expires_ms = rec.at_ms + 300000;
			break;
		case 2:
			rec.type = REC_CONFIRM;
			rec.id = some_id(1);
			break;
		case 4:
			rec.type = i % 10 == 4 ? REC_RELEASE : REC_TIMEOUT;
			rec.id = some_id(3);
			break;
		}
		record(seg, lsn0 + (uint64_t)i, &rec);
	}
}

static void wal_seed(const char *name, uint8_t flags, uint8_t after, uint8_t lsn1,
		     uint8_t lsn2_delta, const Buf *seg, size_t split, size_t len)
{
	Buf in;

	buf_init(&in, len + 8);
	buf_put_u8(&in, flags);
	buf_put_u8(&in, after);
	buf_put_u8(&in, (uint8_t)(lsn1 - 1));
	buf_put_u8(&in, lsn2_delta);
	buf_put_u16(&in, (uint16_t)(split / 8));
	buf_append(&in, seg->data, len);
	save("wal", name, in.data, in.len);
	buf_free(&in);
}

static void wal_seeds(void)
{
	Buf seg, payload;
	Record rec;

	buf_init(&seg, 4096);
	sale(&seg, 1, 10);
	wal_seed("sale-10", 0, 0, 1, 0, &seg, 0, seg.len);
	wal_seed("sale-10-snapshot-at-4", 0, 4, 1, 0, &seg, 0, seg.len);
	wal_seed("sale-10-torn-tail", 0, 0, 1, 0, &seg, 0, seg.len - 11);
	size_t six = 0; /* offset of record 6: the split between two segments */
	for (int i = 0; i < 5; i++)
		six += WAL_RECORD_HEADER_LEN + ((get_u32le(seg.data + six + 4) + 7) & ~(size_t)7);
	wal_seed("sale-10-two-segments", 2, 0, 1, 5, &seg, six, seg.len);
	Buf flipped;
	buf_init(&flipped, seg.len);
	buf_append(&flipped, seg.data, seg.len);
	flipped.data[six + 20] ^= 0x10; /* damage in the middle: valid records follow */
	wal_seed("sale-10-bitflip-mid", 0, 0, 1, 0, &flipped, 0, flipped.len);
	wal_seed("sale-10-bitflip-mid-allowed", 1, 0, 1, 0, &flipped, 0, flipped.len);
	buf_free(&flipped);

	buf_reset(&seg);
	sale(&seg, 20, 6);
	wal_seed("sale-from-20-snapshot-19", 0, 19, 20, 0, &seg, 0, seg.len);
	wal_seed("empty-segment", 0, 7, 8, 0, &seg, 0, 0);

	/* A bare record payload (no framing): record_decode's own seed. */
	memset(&rec, 0, sizeof(rec));
	rec.type = REC_RESERVE;
	rec.at_ms = 1700000000000;
	rec.id = some_id(9);
	str(rec.sku, &rec.sku_len, "SKU-1");
	str(rec.session, &rec.session_len, "s");
	rec.quantity = 3;
	rec.expires_ms = rec.at_ms + 1000;
	buf_init(&payload, 128);
	record_encode(&rec, &payload);
	wal_seed("bare-record-reserve", 0, 0, 1, 0, &payload, 0, payload.len);
	buf_free(&payload);
	buf_free(&seg);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR   (tests/fuzz/corpus)\n", argv[0]);
		return 2;
	}
	out_dir = argv[1];
	wire_seeds();
	wal_seeds();
	return 0;
}
