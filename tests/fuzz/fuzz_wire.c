/* fuzz_wire.c — the ledger's wire decoders against arbitrary bytes.
 *
 * The input is a byte stream as a peer could send it, decoded frame by frame
 * as the ledger (requests) and a worker (responses) do. Beyond "no crash, no
 * sanitizer report", each accepted frame must satisfy wire.h's promises:
 *   - every proper prefix of it decodes as NEED_MORE (the decoder is
 *     incremental: it never errs or succeeds on an incomplete frame);
 *   - re-encoding what was decoded gives a frame that decodes to the same
 *     message (the encoder asserts the validity rules, so a frame the decoder
 *     accepted but the rules refuse aborts here), and for everything but
 *     PUT_SKU (whose absent settings are ignored, so re-encoded as zeros)
 *     exactly the input bytes;
 *   - an ERROR always comes with a reason. */
#include "fuzz.h"

#include <string.h>

#include "common/wire.h"

static void check_prefixes(const uint8_t *data, size_t frame_len, int request)
{
	for (size_t n = 0; n < frame_len; n++) {
		WireRequest req;
		WireResponse resp;
		size_t used = 0;
		const char *why = NULL;
		WireDecode rc = request ? wire_decode_request(data, n, &req, &used, &why)
					: wire_decode_response(data, n, &resp, &used, &why);
		FUZZ_CHECK(rc == WIRE_DECODE_NEED_MORE);
	}
}

static void check_request(const uint8_t *data, size_t frame_len, const WireRequest *req)
{
	static WireRequest again;
	const char *why = NULL;
	size_t used = 0;
	Buf out;

	buf_init(&out, 64);
	wire_encode_request(&out, req);
	/* A PUT_SKU may carry bytes in absent settings, which the decoder
	 * ignores (wire.h): re-encoded, they are zeros and the name empty. */
	if (req->op != WIRE_OP_PUT_SKU)
		FUZZ_CHECK(out.len == frame_len && memcmp(out.data, data, frame_len) == 0);
	FUZZ_CHECK(wire_decode_request(out.data, out.len, &again, &used, &why) == WIRE_DECODE_OK);
	FUZZ_CHECK(used == out.len);
	if (req->op != WIRE_OP_PUT_SKU) {
		FUZZ_CHECK(memcmp(&again, req, sizeof(again)) == 0);
	} else {
		/* The ignored bytes may linger in req's buffers past the NUL: compare
		 * what encoding keeps, which must now be a fixed point. */
		Buf out2;
		buf_init(&out2, 64);
		wire_encode_request(&out2, &again);
		FUZZ_CHECK(out2.len == out.len && memcmp(out2.data, out.data, out.len) == 0);
		buf_free(&out2);
	}
	buf_free(&out);
}

static void check_response(const uint8_t *data, size_t frame_len, const WireResponse *resp)
{
	static WireResponse again;
	const char *why = NULL;
	size_t used = 0;
	Buf out;

	buf_init(&out, 64);
	wire_encode_response(&out, resp);
	FUZZ_CHECK(out.len == frame_len);
	FUZZ_CHECK(memcmp(out.data, data, frame_len) == 0);
	FUZZ_CHECK(wire_decode_response(out.data, out.len, &again, &used, &why) == WIRE_DECODE_OK);
	FUZZ_CHECK(used == out.len);
	FUZZ_CHECK(memcmp(&again, resp, sizeof(again)) == 0);
	/* Names for logs must exist for whatever was accepted. */
	FUZZ_CHECK(strcmp(wire_op_name(resp->op), "unknown") != 0);
	FUZZ_CHECK(wire_status_name(resp->status) != NULL);
	buf_free(&out);
}

/* Decodes data as a stream of frames in one direction, as a connection does. */
static void decode_stream(const uint8_t *data, size_t size, int request)
{
	/* Static: the structs are large and the harness runs millions of times. */
	static WireRequest req;
	static WireResponse resp;

	while (size) {
		const char *why = NULL;
		size_t used = 0;
		WireDecode rc = request ? wire_decode_request(data, size, &req, &used, &why)
					: wire_decode_response(data, size, &resp, &used, &why);
		if (rc == WIRE_DECODE_NEED_MORE)
			return;
		if (rc == WIRE_DECODE_ERROR) {
			FUZZ_CHECK(why != NULL && why[0] != '\0');
			return;
		}
		FUZZ_CHECK(used >= WIRE_HEADER_LEN && used <= WIRE_FRAME_MAX && used <= size);
		check_prefixes(data, used, request);
		if (request)
			check_request(data, used, &req);
		else
			check_response(data, used, &resp);
		data += used;
		size -= used;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_setup();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode_stream(data, size, 1);
	decode_stream(data, size, 0);
	return 0;
}
