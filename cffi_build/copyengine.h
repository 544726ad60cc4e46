/* Bulkhead copy engine: moves bytes between process-side fds and the multiplexed data channel.
 *
 * Wire format (the same as shim/bulkhead/stdio/channel.py): a 9-byte header, u32 stream id,
 * u8 kind, u32 payload length, all big-endian, then the payload. DATA carries at most
 * CE_MAX_CHUNK bytes, EOF none, CREDIT exactly 4 (u32: the receiver wrote that many more bytes
 * of the stream to its sink). A sender never has more than the window unacknowledged per stream.
 *
 * Threading: one engine = one channel fd + N streams, run by an epoll loop in its own thread.
 * Every ce_* call below may be made from any other thread; they take the engine's lock, which
 * the loop holds while it works and drops while it sleeps in epoll_wait. Python watches
 * ce_notify_fd() (an eventfd) and calls ce_poll() to learn what changed. The loop thread blocks
 * every signal; writes to a vanished reader give EPIPE as long as SIGPIPE is ignored (Python
 * ignores it; a C host must too).
 *
 * Fds: the engine owns the channel fd (closed by ce_free). For a stream it works on its own dup
 * of the fd, closed once the stream is finished or removed, so Python may close its fd at any
 * time, and one fd may serve two streams (a file:// log taking stdout and stderr).
 */
#ifndef BULKHEAD_COPYENGINE_H
#define BULKHEAD_COPYENGINE_H

#include <stddef.h>
#include <stdint.h>

#define CE_HEADER_SIZE 9
#define CE_KIND_DATA 1
#define CE_KIND_EOF 2
#define CE_KIND_CREDIT 3
#define CE_MAX_CHUNK 65536
#define CE_WINDOW 1048576
#define CE_ERRLEN 256

/* ce_parse results */
#define CE_PARSE_NEED_MORE 0
#define CE_PARSE_ERROR -1

/* stream directions */
#define CE_OUT 1 /* process fd -> DATA frames on the channel (a process's stdout, a stdin FIFO) */
#define CE_IN 2  /* DATA frames from the channel -> process fd (a sink, or a stdin pipe) */

struct ce_frame {
    uint32_t stream;
    uint8_t kind;
    uint32_t length;         /* payload length */
    uint32_t credit;         /* the CREDIT value (0 for other kinds) */
    size_t size;             /* header + payload: bytes this frame takes in the buffer */
};

/* Parse one frame at buf[0..len): the frame's size (> 0), CE_PARSE_NEED_MORE, or
 * CE_PARSE_ERROR with a message in err. Checks everything that needs no per-stream state:
 * kind, and the length each kind allows. Never reads past buf + len. */
long ce_parse(const uint8_t *buf, size_t len, struct ce_frame *frame, char *err, size_t errlen);

/* Write a frame header into out[0..CE_HEADER_SIZE). */
void ce_encode_header(uint8_t *out, uint32_t stream, uint8_t kind, uint32_t length);

/* What Python sees of one stream. */
struct ce_status {
    uint32_t stream;
    int direction;      /* CE_OUT or CE_IN */
    uint64_t taken;     /* OUT: bytes read from the fd. IN: bytes received from the channel */
    uint64_t done;      /* OUT: bytes written to the channel. IN: written to (or dropped for,
                           once the sink is gone) the fd */
    int eof;            /* OUT: the fd reached EOF (or close_output). IN: EOF frame received
                           (or the channel closed) */
    int finished;       /* OUT: EOF frame written to the channel. IN: EOF received and all
                           written; also set for every stream once the channel is closed */
    int error;          /* errno of a failed fd (0 if none; EPIPE/EIO of a sink are no error) */
};

struct ce_engine;

/* A stopped engine on channel_fd (must be non-blocking; the engine takes it). window is the
 * per-stream credit window, both ways. NULL with a message in err on failure. */
struct ce_engine *ce_new(int channel_fd, uint32_t window, char *err, size_t errlen);
/* Start the loop thread. 0, or an errno. */
int ce_start(struct ce_engine *e);
/* OUT pipe sources: splice payloads into the channel (CE_SPLICE_ON, the default), copy them
 * (CE_SPLICE_OFF), or act as if the channel refused splice (CE_SPLICE_TEST_FALLBACK, tests). */
#define CE_SPLICE_OFF 0
#define CE_SPLICE_ON 1
#define CE_SPLICE_TEST_FALLBACK 2
void ce_set_splice(struct ce_engine *e, int mode);
/* Readable whenever ce_poll has something new. */
int ce_notify_fd(struct ce_engine *e);
/* Register a stream. fd must be non-blocking unless it is a regular file. 0, or an errno
 * (EEXIST: the id is already registered in that direction; EINVAL: a blocking fd;
 * EPIPE: the channel is closed). */
int ce_add(struct ce_engine *e, uint32_t stream, int direction, int fd);
/* OUT stream: forward what the fd holds now, then send EOF (CloseIO on a stdin FIFO). */
int ce_close_output(struct ce_engine *e, uint32_t stream);
/* OUT stream: read nothing more (what is unread is dropped), send EOF at once: the stream is
 * cancelled but the peer still sees its end. 0 or ENOENT. */
int ce_abort_output(struct ce_engine *e, uint32_t stream);
/* Forget a stream: the engine closes its copy of the fd and drops unwritten IN bytes; DATA
 * that arrives later for the id is dropped (counted in dropped_bytes). 0 or ENOENT. */
int ce_remove(struct ce_engine *e, uint32_t stream, int direction);
/* Current status of one stream: 0 or ENOENT. */
int ce_status(struct ce_engine *e, uint32_t stream, int direction, struct ce_status *out);
/* OUT stream: its length once everything its fd holds now is read, i.e. bytes read so far plus
 * FIONREAD, taken atomically with respect to the engine's reads (which hold the lock). The
 * agent calls it when a process was reaped, then waits until `done` reaches it: exactly that
 * process's output, even if a surviving child keeps the pipe open. 0 or ENOENT. */
int ce_exit_mark(struct ce_engine *e, uint32_t stream, uint64_t *mark);
/* Statuses of streams that changed since the last call (at most max; call again while it
 * returns max). Also resets the notify fd. *closed is set to 1 once the channel is closed. */
int ce_poll(struct ce_engine *e, struct ce_status *out, int max, int *closed);
/* Why the channel closed ("" while open): "closed by peer", or the protocol or I/O error. */
void ce_close_reason(struct ce_engine *e, char *out, size_t outlen);
/* Counters, for tests and benchmarks. */
struct ce_counters {
    uint64_t frames_in;       /* frames parsed from the channel */
    uint64_t frames_out;      /* frames queued for the channel */
    uint64_t channel_reads;   /* read() calls on the channel that returned data */
    uint64_t channel_writes;  /* write() calls on the channel that wrote data */
    uint64_t dropped_bytes;   /* DATA for streams not registered (IN) */
    uint64_t spliced_bytes;   /* DATA payload spliced from a pipe into the channel */
};
void ce_get_counters(struct ce_engine *e, struct ce_counters *out);
/* Stop the thread (if started), close the channel fd, free everything. */
void ce_free(struct ce_engine *e);

#endif
