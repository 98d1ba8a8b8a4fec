/* protocol.h: the messages the tiers exchange — a fixed 56-byte header and a list of named
 * tensors — built without copying tensor data, encoded field by field in little-endian
 * order, and decoded with every length, count, shape and checksum validated, the decoded
 * tensors pointing into the received bytes. The byte layout, the message types with their
 * tensors, and the versioning rule are in docs/PROTOCOL.md.
 * Not for: sockets, timeouts, retries or the replay cache (link.h); what a tier does with
 * a message (schemes/). */
#ifndef SPLITLLM_NET_PROTOCOL_H
#define SPLITLLM_NET_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define SL_MSG_MAGIC "SLLM"  /* 4 bytes at offset 0 */
#define SL_MSG_MAGIC_BYTES 4
#define SL_MSG_VERSION 1u
#define SL_MSG_HEADER_BYTES 56u
#define SL_MSG_CHECKSUM_OFFSET 48u /* the u32 zeroed while the checksum is computed */
/* Tensor data starts at a multiple of this many bytes from the start of the message
 * (zero padding before it), so a decoded tensor in an aligned buffer can be read in place
 * as float/int32/uint64 — the widest element is 8 bytes. */
#define SL_MSG_DATA_ALIGN 8u
/* Limits a decoder enforces. 64 tensors is far above any message type's list (at most 3
 * today) but keeps sl_msg a fixed-size struct (~7 KiB) that lives on a stack. */
#define SL_MSG_MAX_TENSORS 64u
#define SL_TENSOR_NAME_MAX 63u  /* bytes, printable ASCII 0x21..0x7E */
#define SL_TENSOR_MAX_DIMS 4u
/* Default largest encoded message (header + payload). The largest expected message is
 * one activation tensor: GPT-2 XL width 1600 x batch 16 x 1024 tokens x F32 = 105 MB;
 * model parts travel in PART_DATA chunks well under this. */
#define SL_MSG_MAX_BYTES_DEFAULT ((size_t)256 << 20)
/* No header flag is defined in version 1; a decoder rejects any set bit it does not know,
 * so a later flag (e.g. "payload compressed") is never misread by an old peer. */
#define SL_MSG_FLAGS_KNOWN 0u

/* Message types (u16 on the wire). Requests go up the hierarchy (user -> edge -> cloud),
 * replies come back; sl_msg_reply_allowed() says which reply answers which request.
 * New types take the next free number; numbers are never reused. */
typedef enum {
    SL_MSG_HELLO = 1,        /* request: who I am and the SHA-256 of the part I hold */
    SL_MSG_HELLO_OK = 2,     /* reply to HELLO: accepted */
    SL_MSG_PART_CHUNK = 3,   /* request: send me bytes of my model part from an offset */
    SL_MSG_PART_DATA = 4,    /* reply to PART_CHUNK: those bytes */
    SL_MSG_ROUND_POLL = 5,   /* request: is there work for me in this round? */
    SL_MSG_ROUND_TASK = 6,   /* reply to ROUND_POLL: train for this round, from this adapter */
    SL_MSG_ROUND_WAIT = 7,   /* reply to ROUND_POLL: not yet, poll again */
    SL_MSG_ROUND_DONE = 8,   /* reply to ROUND_POLL: training is over, shut down */
    SL_MSG_FORWARD = 9,      /* request: activations of a step going up */
    SL_MSG_BACKWARD = 10,    /* reply to FORWARD: the gradient of those activations */
    SL_MSG_ROUND_REPORT = 11, /* request: my adapter after the round and my sample count */
    SL_MSG_ACK = 12,         /* reply to ROUND_REPORT: received */
    SL_MSG_ERROR = 13,       /* reply to anything: refused, with a text "message" */
    SL_MSG_TYPE_END          /* one past the last known type */
} sl_msg_type;

/* Element types (u8 on the wire). Codes 1..127 are plain arrays (bytes = elements x size);
 * 128..255 are compressed encodings whose byte count follows from (code, shape): the codes
 * net/codec.h defines (128 I8_ROW, 129 TOPK_F16, 130 TOPK_F32) are carried, the rest refused. */
typedef enum {
    SL_DTYPE_F32 = 1,
    SL_DTYPE_F16 = 2,
    SL_DTYPE_BF16 = 3,
    SL_DTYPE_I8 = 4,
    SL_DTYPE_I32 = 5,
    SL_DTYPE_U8 = 6,
    SL_DTYPE_U64 = 7,
    SL_DTYPE_END,                  /* one past the last plain type */
    SL_DTYPE_COMPRESSED_FIRST = 128 /* codes from here on: net/codec.h */
} sl_dtype;

/* The tier of a sender (u8 on the wire). */
typedef enum {
    SL_TIER_USER = 1,
    SL_TIER_EDGE = 2,
    SL_TIER_CLOUD = 3,
} sl_tier;

/* The header as numbers (never as bytes: see sl_msg_encode_into for the layout). */
typedef struct {
    uint16_t h_version;
    uint16_t h_type;         /* sl_msg_type */
    uint32_t h_round;
    uint32_t h_step;
    uint32_t h_stream;       /* which training stream: the edge index */
    uint32_t h_sender;       /* id of the sending process within its tier */
    uint8_t h_sender_tier;   /* sl_tier */
    uint32_t h_flags;        /* SL_MSG_FLAGS_KNOWN bits only */
    uint64_t h_seq;          /* per-sender sequence number; a reply echoes its request's */
    uint64_t h_payload_bytes; /* set by encode, checked by decode */
    uint32_t h_checksum;     /* CRC-32C; set by encode, checked by decode */
} sl_msg_header;

/* One tensor of a message. t_data is not owned: when building, it points at the caller's
 * memory (which must stay valid until the message is encoded); when decoded, into the
 * buffer that was decoded (valid while that buffer is). */
typedef struct {
    char t_name[SL_TENSOR_NAME_MAX + 1]; /* NUL-terminated copy */
    uint8_t t_dtype;                     /* sl_dtype */
    uint8_t t_ndim;                      /* 0..SL_TENSOR_MAX_DIMS; 0 is a scalar */
    uint32_t t_shape[SL_TENSOR_MAX_DIMS];
    const void *t_data;                  /* t_bytes bytes, little-endian elements */
    size_t t_bytes;
} sl_tensor;

/* A message being built or one decoded. Memory obtained with sl_msg_alloc is owned by the
 * message and freed by sl_msg_release (builders only; decoded messages own nothing). */
typedef struct {
    sl_msg_header m_header;
    uint32_t m_n_tensors;
    sl_tensor m_tensors[SL_MSG_MAX_TENSORS];
    void *m_owned[SL_MSG_MAX_TENSORS];
    uint32_t m_n_owned;
} sl_msg;

/* ---------------------------------------------------------------- names */

/* "FORWARD", ...; NULL for an unknown type. */
const char *sl_msg_type_name(uint16_t type);
const char *sl_dtype_name(uint8_t dtype); /* "F32", ..., "I8_ROW", ...; NULL when unknown */
size_t sl_dtype_size(uint8_t dtype);      /* bytes per element; 0 when unknown or compressed */
const char *sl_tier_name(uint8_t tier);   /* "user", "edge", "cloud"; NULL when unknown */
/* 1 when a reply of type reply_type answers a request of type request_type (ERROR answers
 * anything); 0 otherwise, including when request_type is not a request. */
int sl_msg_reply_allowed(uint16_t request_type, uint16_t reply_type);

/* ---------------------------------------------------------------- building */

/* Starts an empty message (msg may be uninitialised; it must own nothing — release first).
 * Sender, tier and seq are zero: a link or server fills them when it sends. */
void sl_msg_init(sl_msg *msg, sl_msg_type type, uint32_t round, uint32_t step, uint32_t stream);
/* Adds a tensor by pointer (no copy): shape has ndim entries (NULL when ndim is 0), data
 * holds product(shape) x sl_dtype_size(dtype) bytes (for a compressed dtype, the bytes its
 * encoding gives that shape: sl_codec_wire_bytes). SL_EINVAL, naming the tensor, for a
 * bad name (empty, > 63 bytes, not printable ASCII), a duplicate name, an unknown dtype,
 * ndim > 4, a size that overflows, or NULL data with a nonzero size; SL_EINVAL also when
 * the message already has SL_MSG_MAX_TENSORS tensors. */
int sl_msg_add(sl_msg *msg, const char *name, sl_dtype dtype, int ndim, const uint32_t *shape,
               const void *data);
/* Zeroed memory owned by the message (for data a reply handler computes on the fly): valid
 * until sl_msg_release. NULL (after sl_fail) when out of memory or out of slots. */
void *sl_msg_alloc(sl_msg *msg, size_t bytes);
/* Sets the sender fields (a link or server does this when it sends). */
void sl_msg_set_sender(sl_msg *msg, sl_tier tier, uint32_t sender, uint64_t seq);
/* Frees what sl_msg_alloc gave, in reverse order, and empties the message. */
void sl_msg_release(sl_msg *msg);
/* An ERROR message whose "message" tensor (U8) points at text (not copied: text must
 * outlive the encoding). */
int sl_msg_init_error(sl_msg *msg, uint32_t round, uint32_t step, uint32_t stream, const char *text);

/* ---------------------------------------------------------------- encoding */

/* Bytes the encoded message will take; SL_EINVAL when that overflows size_t. */
int sl_msg_encoded_bytes(const sl_msg *msg, size_t *out);
/* Writes the message into buf, which must hold exactly sl_msg_encoded_bytes bytes and be
 * SL_MSG_DATA_ALIGN-aligned only if the caller wants to decode it in place. Sets
 * msg->m_header.h_payload_bytes and h_checksum. Header layout: docs/PROTOCOL.md. */
int sl_msg_encode_into(sl_msg *msg, void *buf, size_t bytes);
/* The same into a fresh sl_alloc'd buffer (free it with sl_free). */
int sl_msg_encode(sl_msg *msg, uint8_t **out, size_t *out_bytes);

/* ---------------------------------------------------------------- decoding */

/* Decodes bytes (an SL_MSG_DATA_ALIGN-aligned buffer, else SL_EINVAL) into msg, whose
 * tensors then point into buf. Refuses with SL_EFORMAT — the message naming from (e.g.
 * "edge 1 at tcp://10.0.0.2:5555"; NULL: "message"), the field, its offset, what was
 * expected and what was found — anything but exactly one well-formed message: over
 * max_bytes (checked first), shorter than a header, wrong magic or version, payload_bytes
 * not the rest of the buffer, a checksum mismatch, unknown type/tier/flags, nonzero
 * reserved bytes, more than SL_MSG_MAX_TENSORS tensors, a bad or duplicate name, unknown
 * dtype, ndim > 4, a size that overflows, nonzero padding, data past the end, or bytes
 * left over. On failure msg is empty. */
int sl_msg_decode(sl_msg *msg, const void *buf, size_t bytes, size_t max_bytes, const char *from);
/* Reads only the header (the first SL_MSG_HEADER_BYTES bytes, no checksum check): what a
 * server needs to answer a malformed message with the seq it carried. SL_EFORMAT when
 * fewer bytes or the magic is wrong. */
int sl_msg_peek_header(const void *buf, size_t bytes, sl_msg_header *out);

/* ---------------------------------------------------------------- reading */

/* The tensor named name, or NULL. */
const sl_tensor *sl_msg_find(const sl_msg *msg, const char *name);
/* The tensor named name with this dtype and ndim and, when shape is not NULL, these
 * dimensions (-1 accepts any size in that dimension). SL_EFORMAT otherwise, the message
 * naming the message type, its sender, round and step, the tensor and both shapes, e.g.
 * "FORWARD from edge 1 (round 3, step 2): tensor 'act' is F32 (4,64,32), expected F32
 * (4,64,48)". */
int sl_msg_get(const sl_msg *msg, const char *name, sl_dtype dtype, int ndim, const int64_t *shape,
               const sl_tensor **out);
/* Elements in the tensor (product of its shape; 1 for a scalar). For a compressed dtype,
 * of its wire shape (top-k: including the trailing k). */
uint64_t sl_tensor_elements(const sl_tensor *t);
/* The text of an ERROR message, copied into out (n bytes, NUL-terminated, bytes outside
 * printable ASCII replaced by '?'); "(no message)" when it has no "message" U8 tensor. */
void sl_msg_error_text(const sl_msg *msg, char *out, size_t n);
/* "FORWARD from edge 1 (seq 12, round 3, step 2, stream 1)" into out. */
void sl_msg_describe(const sl_msg_header *h, char *out, size_t n);

#endif
