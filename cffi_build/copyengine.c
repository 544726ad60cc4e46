/* Bulkhead copy engine: see copyengine.h for the API and the wire format.
 *
 * Shape of the loop: every fd is registered edge-triggered once, and an epoll event only sets a
 * "ready" flag; the flag is cleared when a syscall says EAGAIN. A round then does all the work
 * the flags allow: read the channel (many frames per read) and hand DATA to the sinks, write
 * queued bytes to the sinks, queue CREDIT frames and up to one DATA chunk per source into the
 * transmit buffer, and write that buffer to the channel in one syscall. Rounds repeat while
 * they make progress; then the thread sleeps in epoll_wait.
 *
 * splice: a pipe source with at least SPLICE_MIN bytes waiting gets its DATA header queued in
 * tx and its payload spliced from the pipe straight into the channel once tx is written, saving
 * a copy (zero-copy into an AF_UNIX socket on Linux >= 6.5, and into virtio-serial, the guest's
 * channel). While such a payload is pending nothing else may enter tx, or it would land
 * inside the frame. If splice fails (EINVAL: the channel does not take it), the payload is
 * copied instead and splice stays off for the engine.
 *
 * Memory is bounded: two fixed buffers (rx, tx) per engine and, per IN stream, at most the
 * credit window of received-but-unwritten bytes (a peer that sends more breaks the protocol and
 * the channel is closed). Reading the channel never waits for tx space (credits are counted per
 * stream and queued when there is room), so two engines facing each other cannot deadlock.
 */
#define _GNU_SOURCE
#include "copyengine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* rx must hold a whole frame; bigger buffers batch more frames per syscall. */
#define RX_SIZE (512 * 1024)
#define TX_SIZE (512 * 1024)
#define CREDIT_FRAME_SIZE (CE_HEADER_SIZE + 4)
/* Smaller payloads are copied: a copy of a few KiB is cheaper than the extra syscalls. */
#define SPLICE_MIN (16 * 1024)
/* Rounds before the loop looks at epoll (and lets control calls take the lock) again. */
#define MAX_ROUNDS 64
/* epoll tokens: streams are (direction << 32 | id); these two are not streams. */
#define TOKEN_CHANNEL ((uint64_t)3 << 32)
#define TOKEN_WAKE ((uint64_t)4 << 32)

struct chunk {
    struct chunk *next;
    uint32_t len, off;
    uint8_t data[];
};

struct stream {
    uint32_t id;
    int dir;
    int fd;        /* our dup, -1 once closed */
    int polled;    /* in epoll; if not (a regular file), it is always ready */
    int is_fifo;   /* pipes and FIFOs: read() == 0 is EOF only once the writers hung up */
    int ready;     /* OUT: readable, IN: writable (set by epoll, cleared on EAGAIN) */
    int changed;   /* to be reported by ce_poll */
    uint64_t taken, done;
    int eof, finished, error;
    /* OUT */
    uint64_t credit;    /* bytes we may still send */
    int closing;        /* ce_close_output: EOF as soon as the fd would block */
    int eof_queued;     /* the EOF frame is in tx */
    long tx_end;        /* offset in tx just past our last queued frame; -1: nothing queued */
    uint64_t appended;  /* DATA payload bytes put into tx */
    /* IN */
    struct chunk *head, *tail;  /* received, not yet written */
    uint64_t queued;            /* bytes in the chunk list */
    uint64_t outstanding;       /* received minus credited back: never above the window */
    uint64_t to_grant;          /* written (or dropped) but no CREDIT queued yet */
    int sink_gone;              /* EPIPE/EIO/error: drop what comes, still grant credit */
};

struct ce_engine {
    pthread_mutex_t lock;
    pthread_t thread;
    int started, stopping;
    int ch, ch_is_socket, epfd, wakefd, notifyfd;
    int ch_readable, ch_writable;
    int closed;
    char reason[CE_ERRLEN];
    uint32_t window;
    uint8_t *rx;
    size_t rx_len;
    uint8_t *tx;
    size_t tx_head, tx_tail;
    struct stream **streams;
    int nstreams, cap, rr;
    int notified;
    int splice_mode;       /* CE_SPLICE_* */
    /* The DATA frame being spliced: its header is the last thing in tx, its payload (left
     * bytes) is still in the pipe. s is NULL if Python removed the stream meanwhile; fd is
     * then ours to close once the frame is complete. */
    struct {
        struct stream *s;
        int fd;
        uint32_t left;
    } sp;
    struct ce_counters counters;
};

/* -- framing ------------------------------------------------------------------------------ */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void ce_encode_header(uint8_t *out, uint32_t stream, uint8_t kind, uint32_t length)
{
    put_be32(out, stream);
    out[4] = kind;
    put_be32(out + 5, length);
}

static long parse_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err != NULL && errlen > 0)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return CE_PARSE_ERROR;
}

long ce_parse(const uint8_t *buf, size_t len, struct ce_frame *f, char *err, size_t errlen)
{
    if (len < CE_HEADER_SIZE)
        return CE_PARSE_NEED_MORE;
    f->stream = be32(buf);
    f->kind = buf[4];
    f->length = be32(buf + 5);
    f->credit = 0;
    /* The length is checked before waiting for the payload: a bad header must fail at once,
     * not leave us waiting for (or buffering) up to 4 GiB that will never be valid. */
    switch (f->kind) {
    case CE_KIND_DATA:
        if (f->length > CE_MAX_CHUNK)
            return parse_error(err, errlen, "DATA frame of %u bytes on stream %u (at most %d)",
                               f->length, f->stream, CE_MAX_CHUNK);
        break;
    case CE_KIND_EOF:
        if (f->length != 0)
            return parse_error(err, errlen, "EOF frame with a %u-byte payload on stream %u",
                               f->length, f->stream);
        break;
    case CE_KIND_CREDIT:
        if (f->length != 4)
            return parse_error(err, errlen,
                               "CREDIT frame with a %u-byte payload on stream %u (must be 4)",
                               f->length, f->stream);
        break;
    default:
        return parse_error(err, errlen, "unknown frame kind %u on stream %u", f->kind,
                           f->stream);
    }
    f->size = CE_HEADER_SIZE + (size_t)f->length;
    if (len < f->size)
        return CE_PARSE_NEED_MORE;
    if (f->kind == CE_KIND_CREDIT)
        f->credit = be32(buf + CE_HEADER_SIZE);
    return (long)f->size;
}

/* -- streams ------------------------------------------------------------------------------ */

static struct stream *find(struct ce_engine *e, uint32_t id, int dir)
{
    /* Linear: an engine carries a few streams per process, dozens at most. */
    for (int i = 0; i < e->nstreams; i++)
        if (e->streams[i]->id == id && e->streams[i]->dir == dir)
            return e->streams[i];
    return NULL;
}

static void free_chunks(struct stream *s)
{
    while (s->head != NULL) {
        struct chunk *c = s->head;
        s->head = c->next;
        free(c);
    }
    s->tail = NULL;
    s->queued = 0;
}

/* Stop touching the fd: leave epoll first (Python may still hold the same file open). */
static void release_fd(struct ce_engine *e, struct stream *s)
{
    if (s->fd < 0)
        return;
    if (s->polled)
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
    s->ready = 0;
}

static void finish(struct ce_engine *e, struct stream *s)
{
    if (!s->finished) {
        s->finished = 1;
        s->changed = 1;
    }
    release_fd(e, s);
}

/* -- the channel -------------------------------------------------------------------------- */

/* Close the channel for good: every stream ends (IN readers see EOF, OUT sources stop). */
static void close_channel(struct ce_engine *e, const char *fmt, ...)
{
    if (e->closed)
        return;
    e->closed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
    if (e->ch_is_socket)
        shutdown(e->ch, SHUT_RDWR); /* the peer sees the link end at once */
    if (e->sp.fd >= 0 && e->sp.s == NULL)
        close(e->sp.fd);
    e->sp.s = NULL;
    e->sp.fd = -1;
    e->sp.left = 0;
    for (int i = 0; i < e->nstreams; i++) {
        struct stream *s = e->streams[i];
        if (s->dir == CE_OUT && !s->finished && s->error == 0)
            s->error = EPIPE;
        s->eof = 1;
        free_chunks(s);
        finish(e, s);
    }
}

static size_t tx_free(struct ce_engine *e)
{
    return TX_SIZE - e->tx_tail;
}

/* A spliced (or fallback-copied) payload is pending: nothing may be appended to tx. */
static int tx_locked(struct ce_engine *e)
{
    return e->sp.fd >= 0;
}

/* Make room at the end of tx by moving unsent bytes to the front. */
static void tx_compact(struct ce_engine *e)
{
    if (e->tx_head == 0)
        return;
    size_t shift = e->tx_head;
    memmove(e->tx, e->tx + shift, e->tx_tail - shift);
    e->tx_tail -= shift;
    e->tx_head = 0;
    for (int i = 0; i < e->nstreams; i++)
        if (e->streams[i]->tx_end >= 0)
            e->streams[i]->tx_end -= (long)shift;
}

static void queue_frame(struct ce_engine *e, uint32_t id, uint8_t kind, const uint8_t *payload,
                        uint32_t length)
{
    ce_encode_header(e->tx + e->tx_tail, id, kind, length);
    if (length > 0 && payload != NULL)
        memcpy(e->tx + e->tx_tail + CE_HEADER_SIZE, payload, length);
    e->tx_tail += CE_HEADER_SIZE + length;
    e->counters.frames_out++;
}

static void splice_done(struct ce_engine *e)
{
    struct stream *s = e->sp.s;
    if (s != NULL) {
        s->done = s->appended; /* every earlier frame of s left with tx, before the header */
        s->changed = 1;
    } else {
        close(e->sp.fd);
    }
    e->sp.s = NULL;
    e->sp.fd = -1;
}

/* Move the pending payload from its pipe into the channel; called only with tx empty. */
static int splice_out(struct ce_engine *e)
{
    ssize_t n = -1;
    int copied = 0;
    errno = EINVAL;
    if (e->splice_mode == CE_SPLICE_ON)
        n = splice(e->sp.fd, NULL, e->ch, NULL, e->sp.left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        /* The channel takes no splice (EINVAL), or splice failed some other way, or a test
         * said so: nothing moved, so copy the payload into the empty tx instead, right after
         * the header; splice stays off from now on. A channel that is really broken then
         * fails the plain write, with its own error. */
        e->splice_mode = CE_SPLICE_OFF;
        copied = 1;
        n = read(e->sp.fd, e->tx, e->sp.left);
        if (n > 0) {
            e->tx_head = 0;
            e->tx_tail = (size_t)n;
        }
    }
    if (n <= 0) {
        int queued = 0;
        if (n < 0 && errno == EINTR)
            return 0;
        if (n < 0 && errno == EAGAIN && !copied && ioctl(e->sp.fd, FIONREAD, &queued) == 0 &&
            queued > 0) {
            e->ch_writable = 0; /* the channel is full */
            return 0;
        }
        /* FIONREAD promised these bytes and we are the pipe's only reader: this cannot
         * happen unless someone else drained it. The frame cannot be completed. */
        close_channel(e, "lost: a spliced payload's pipe ran dry (%s)",
                      n < 0 ? strerror(errno) : "EOF");
        return 0;
    }
    e->sp.left -= (uint32_t)n;
    if (!copied)
        e->counters.spliced_bytes += (uint64_t)n;
    if (e->sp.s != NULL) {
        e->sp.s->taken += (uint64_t)n;
        e->sp.s->appended += (uint64_t)n;
        e->sp.s->changed = 1;
    }
    if (e->sp.left == 0 && !copied) /* a copied payload is done once tx is written */
        splice_done(e);
    return 1;
}

/* Write tx to the channel; OUT streams whose frames all left are then "done" up to there. */
static int channel_write(struct ce_engine *e)
{
    if (!e->ch_writable)
        return 0;
    if (e->tx_head == e->tx_tail)
        return e->sp.left > 0 ? splice_out(e) : 0;
    ssize_t n;
    if (e->ch_is_socket)
        n = send(e->ch, e->tx + e->tx_head, e->tx_tail - e->tx_head, MSG_NOSIGNAL);
    else
        n = write(e->ch, e->tx + e->tx_head, e->tx_tail - e->tx_head);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            e->ch_writable = errno == EINTR;
            return 0;
        }
        close_channel(e, "lost: write: %s", strerror(errno));
        return 0;
    }
    e->counters.channel_writes++;
    e->tx_head += (size_t)n;
    for (int i = 0; i < e->nstreams; i++) {
        struct stream *s = e->streams[i];
        if (s->tx_end >= 0 && (size_t)s->tx_end <= e->tx_head) {
            s->tx_end = -1;
            s->done = s->appended;
            s->changed = 1;
            if (s->eof_queued)
                finish(e, s);
        }
    }
    if (e->tx_head == e->tx_tail) {
        e->tx_head = e->tx_tail = 0;
        if (e->sp.fd >= 0 && e->sp.left == 0) /* a fallback copy of a payload went out */
            splice_done(e);
        else if (e->sp.left > 0)
            splice_out(e);
    }
    return 1;
}

/* Write an IN stream's queue to its fd. Returns 1 if bytes moved. */
static int sink_write(struct ce_engine *e, struct stream *s, const uint8_t *p, size_t len,
                      size_t *written)
{
    *written = 0;
    if (s->sink_gone) {
        *written = len;
        return 1;
    }
    while (*written < len) {
        ssize_t n = write(s->fd, p + *written, len - *written);
        if (n >= 0) {
            *written += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            s->ready = 0;
            break;
        }
        /* The reader went away (EPIPE; EIO from a pty whose other side closed), or the sink
         * failed: drop the rest, but keep granting credit so the producer never hangs. */
        if (errno != EPIPE && errno != EIO)
            s->error = errno;
        s->sink_gone = 1;
        s->changed = 1;
        *written = len;
    }
    (void)e;
    return *written > 0;
}

static void account_written(struct stream *s, size_t n)
{
    if (n == 0)
        return;
    s->done += n;
    s->to_grant += n;
    s->changed = 1;
}

static int flush_in(struct ce_engine *e, struct stream *s)
{
    int progress = 0;
    while (s->head != NULL && (s->ready || s->sink_gone) && s->fd >= 0) {
        struct chunk *c = s->head;
        size_t w;
        progress |= sink_write(e, s, c->data + c->off, c->len - c->off, &w);
        c->off += (uint32_t)w;
        s->queued -= w;
        account_written(s, w);
        if (c->off < c->len)
            break;
        s->head = c->next;
        if (s->head == NULL)
            s->tail = NULL;
        free(c);
    }
    if (s->eof && s->head == NULL && !s->finished)
        finish(e, s);
    return progress;
}

/* One DATA frame for a registered IN stream: write what the sink takes now, queue the rest. */
static int on_data(struct ce_engine *e, struct stream *s, const uint8_t *p, uint32_t len)
{
    if (s->eof) {
        close_channel(e, "protocol error: DATA after EOF on stream %u", s->id);
        return -1;
    }
    if (s->outstanding + len > e->window) {
        close_channel(e, "protocol error: stream %u exceeded its credit window (%llu + %u > %u)",
                      s->id, (unsigned long long)s->outstanding, len, e->window);
        return -1;
    }
    s->taken += len;
    s->outstanding += len;
    s->changed = 1;
    size_t w = 0;
    if (s->head == NULL && (s->ready || s->sink_gone) && s->fd >= 0) {
        sink_write(e, s, p, len, &w);
        account_written(s, w);
    }
    if (w < len) {
        struct chunk *c = malloc(sizeof *c + (len - w));
        if (c == NULL) {
            close_channel(e, "out of memory for %u bytes of stream %u", len, s->id);
            return -1;
        }
        c->next = NULL;
        c->len = len - (uint32_t)w;
        c->off = 0;
        memcpy(c->data, p + w, c->len);
        if (s->tail != NULL)
            s->tail->next = c;
        else
            s->head = c;
        s->tail = c;
        s->queued += c->len;
    }
    return 0;
}

/* Apply one parsed frame: the checks that need per-stream state are here. */
static int dispatch(struct ce_engine *e, const struct ce_frame *f, const uint8_t *payload)
{
    struct stream *s;
    e->counters.frames_in++;
    switch (f->kind) {
    case CE_KIND_DATA:
        s = find(e, f->stream, CE_IN);
        if (s == NULL) { /* never registered, or removed by Python: nobody wants it */
            e->counters.dropped_bytes += f->length;
            return 0;
        }
        return on_data(e, s, payload, f->length);
    case CE_KIND_EOF:
        s = find(e, f->stream, CE_IN);
        if (s == NULL)
            return 0;
        if (s->eof) {
            close_channel(e, "protocol error: second EOF on stream %u", f->stream);
            return -1;
        }
        s->eof = 1;
        s->changed = 1;
        if (s->head == NULL)
            finish(e, s);
        return 0;
    case CE_KIND_CREDIT:
        s = find(e, f->stream, CE_OUT);
        if (s == NULL) /* late credit for a stream Python already removed */
            return 0;
        if (s->credit + f->credit > e->window) {
            close_channel(e, "protocol error: credit overflow on stream %u (%llu + %u > %u)",
                          f->stream, (unsigned long long)s->credit, f->credit, e->window);
            return -1;
        }
        s->credit += f->credit;
        return 0;
    }
    return 0; /* unreachable: ce_parse rejects other kinds */
}

/* Read from the channel and apply every whole frame received. */
static int channel_read(struct ce_engine *e)
{
    if (!e->ch_readable || e->closed)
        return 0;
    ssize_t n = read(e->ch, e->rx + e->rx_len, RX_SIZE - e->rx_len);
    if (n < 0) {
        if (errno == EAGAIN)
            e->ch_readable = 0;
        else if (errno != EINTR)
            close_channel(e, "lost: read: %s", strerror(errno));
        return 0;
    }
    if (n == 0) {
        if (e->rx_len > 0) {
            struct ce_frame f;
            char err[CE_ERRLEN];
            if (ce_parse(e->rx, e->rx_len, &f, err, sizeof err) == CE_PARSE_NEED_MORE &&
                e->rx_len >= CE_HEADER_SIZE)
                close_channel(e, "protocol error: truncated frame: %zu of %zu bytes "
                              "(stream %u, kind %u)", e->rx_len, f.size, f.stream, f.kind);
            else
                close_channel(e, "protocol error: truncated frame header: %zu of %d bytes",
                              e->rx_len, CE_HEADER_SIZE);
        } else {
            close_channel(e, "closed by peer");
        }
        return 0;
    }
    e->counters.channel_reads++;
    e->rx_len += (size_t)n;
    size_t off = 0;
    while (!e->closed) {
        struct ce_frame f;
        char err[CE_ERRLEN];
        long r = ce_parse(e->rx + off, e->rx_len - off, &f, err, sizeof err);
        if (r == CE_PARSE_NEED_MORE)
            break;
        if (r == CE_PARSE_ERROR) {
            close_channel(e, "protocol error: %s", err);
            return 0;
        }
        if (dispatch(e, &f, e->rx + off + CE_HEADER_SIZE) < 0)
            return 0;
        off += (size_t)r;
    }
    /* Keep the partial frame (< header + MAX_CHUNK <= RX_SIZE) at the front. */
    memmove(e->rx, e->rx + off, e->rx_len - off);
    e->rx_len -= off;
    return 1;
}

/* -- OUT streams ---------------------------------------------------------------------------- */

static int fifo_hung_up(int fd)
{
    /* A FIFO reads 0 both before its first writer came and after the last one left; only the
     * second (POLLHUP) is EOF: containerd may open the stdin FIFO after we do. */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

static void out_eof(struct stream *s)
{
    s->eof = 1;
    s->changed = 1;
}

/* A pipe source with enough waiting: queue the header, the payload will be spliced. */
static int start_splice(struct ce_engine *e, struct stream *s)
{
    int avail = 0;
    if (e->splice_mode == CE_SPLICE_OFF || !s->is_fifo || s->eof || !s->ready ||
        s->credit < SPLICE_MIN || tx_free(e) < CE_HEADER_SIZE ||
        ioctl(s->fd, FIONREAD, &avail) < 0 || avail < SPLICE_MIN)
        return 0;
    uint32_t n = (uint32_t)avail;
    if (n > s->credit)
        n = (uint32_t)s->credit;
    if (n > CE_MAX_CHUNK)
        n = CE_MAX_CHUNK;
    ce_encode_header(e->tx + e->tx_tail, s->id, CE_KIND_DATA, n);
    e->tx_tail += CE_HEADER_SIZE;
    e->counters.frames_out++;
    s->credit -= n;
    s->changed = 1;
    e->sp.s = s;
    e->sp.fd = s->fd;
    e->sp.left = n;
    return 1;
}

/* One chunk from an OUT stream's fd into tx, as a DATA frame (read straight into tx). */
static int fill_out(struct ce_engine *e, struct stream *s)
{
    int progress = 0;
    if (tx_locked(e))
        return 0;
    if (start_splice(e, s))
        return 1;
    if (!s->eof && s->ready && s->credit > 0 && tx_free(e) > CE_HEADER_SIZE) {
        size_t want = s->credit;
        if (want > CE_MAX_CHUNK)
            want = CE_MAX_CHUNK;
        if (want > tx_free(e) - CE_HEADER_SIZE)
            want = tx_free(e) - CE_HEADER_SIZE;
        ssize_t n = read(s->fd, e->tx + e->tx_tail + CE_HEADER_SIZE, want);
        if (n > 0) {
            ce_encode_header(e->tx + e->tx_tail, s->id, CE_KIND_DATA, (uint32_t)n);
            e->tx_tail += CE_HEADER_SIZE + (size_t)n;
            e->counters.frames_out++;
            s->credit -= (uint64_t)n;
            s->taken += (uint64_t)n;
            s->appended += (uint64_t)n;
            s->tx_end = (long)e->tx_tail;
            s->changed = 1;
            progress = 1;
        } else if (n == 0) {
            if (s->closing || !s->is_fifo || fifo_hung_up(s->fd))
                out_eof(s);
            else
                s->ready = 0; /* no writer yet: wait for one to come (EPOLLIN or EPOLLHUP) */
        } else if (errno == EAGAIN) {
            s->ready = 0;
            if (s->closing)
                out_eof(s);
        } else if (errno == EIO) { /* a pty master whose last slave fd closed */
            out_eof(s);
        } else if (errno != EINTR) {
            s->error = errno;
            out_eof(s);
        }
    }
    if (s->eof && !s->eof_queued && tx_free(e) >= CE_HEADER_SIZE) {
        queue_frame(e, s->id, CE_KIND_EOF, NULL, 0);
        s->eof_queued = 1;
        s->tx_end = (long)e->tx_tail;
        release_fd(e, s); /* nothing more is read; the EOF frame's flush finishes the stream */
        progress = 1;
    }
    return progress;
}

/* -- the loop ------------------------------------------------------------------------------- */

static int round_once(struct ce_engine *e)
{
    int progress = channel_read(e);
    for (int i = 0; i < e->nstreams && !e->closed; i++) {
        struct stream *s = e->streams[i];
        if (s->dir != CE_IN)
            continue;
        progress |= flush_in(e, s);
        /* Credit first: it is tiny and it is what lets the peer go on sending. */
        if (s->to_grant > 0 && tx_free(e) < CREDIT_FRAME_SIZE)
            tx_compact(e);
        if (s->to_grant > 0 && tx_free(e) >= CREDIT_FRAME_SIZE && !tx_locked(e)) {
            uint32_t g = s->to_grant > UINT32_MAX ? UINT32_MAX : (uint32_t)s->to_grant;
            uint8_t payload[4];
            put_be32(payload, g);
            queue_frame(e, s->id, CE_KIND_CREDIT, payload, 4);
            s->to_grant -= g;
            s->outstanding -= g;
            progress = 1;
        }
    }
    /* Fill tx before writing it: one channel write then carries several chunks. Passes go
     * round robin over the sources, one chunk each, so a busy stream cannot starve others. */
    int n = e->nstreams, more = 1;
    while (more && !e->closed && !tx_locked(e)) {
        more = 0;
        /* Move unsent bytes to the front only while there are few: a big remainder means the
         * channel is the bottleneck and copying it around would only cost. */
        if (tx_free(e) < CE_HEADER_SIZE + CE_MAX_CHUNK && e->tx_tail - e->tx_head <= TX_SIZE / 4)
            tx_compact(e);
        if (tx_free(e) < CE_HEADER_SIZE + CE_MAX_CHUNK && e->tx_tail > e->tx_head)
            break; /* write what we have first rather than cut a small chunk */
        for (int k = 0; k < n && !e->closed; k++) {
            struct stream *s = e->streams[(e->rr + k) % n];
            if (s->dir == CE_OUT && s->fd >= 0)
                more |= fill_out(e, s);
        }
        progress |= more;
    }
    if (n > 0)
        e->rr = (e->rr + 1) % n;
    if (!e->closed)
        progress |= channel_write(e);
    return progress;
}

static void notify(struct ce_engine *e)
{
    if (e->notified)
        return;
    int any = e->closed;
    for (int i = 0; i < e->nstreams && !any; i++)
        any = e->streams[i]->changed;
    if (any) {
        uint64_t one = 1;
        if (write(e->notifyfd, &one, sizeof one) == sizeof one)
            e->notified = 1;
    }
}

static void apply_event(struct ce_engine *e, const struct epoll_event *ev)
{
    uint64_t token = ev->data.u64;
    if (token == TOKEN_CHANNEL) {
        if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
            e->ch_readable = 1;
        if (ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            e->ch_writable = 1;
    } else if (token == TOKEN_WAKE) {
        uint64_t v;
        if (read(e->wakefd, &v, sizeof v) < 0) {
            /* EAGAIN: already reset */
        }
    } else {
        struct stream *s = find(e, (uint32_t)token, (int)(token >> 32));
        if (s != NULL) /* NULL: removed since epoll_wait returned */
            s->ready = 1;
    }
}

static void *loop(void *arg)
{
    struct ce_engine *e = arg;
    struct epoll_event evs[64];
    int timeout = -1;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping && !e->closed) {
        int rounds = 0;
        while (rounds < MAX_ROUNDS && !e->closed && !e->stopping && round_once(e))
            rounds++;
        /* Still busy after MAX_ROUNDS: only peek at epoll, but do drop the lock meanwhile. */
        timeout = rounds == MAX_ROUNDS ? 0 : -1;
        notify(e);
        if (e->closed || e->stopping)
            break;
        pthread_mutex_unlock(&e->lock);
        int n = epoll_wait(e->epfd, evs, 64, timeout);
        int err = errno;
        pthread_mutex_lock(&e->lock);
        if (n < 0 && err != EINTR)
            close_channel(e, "epoll_wait: %s", strerror(err));
        for (int i = 0; i < n; i++)
            apply_event(e, &evs[i]);
    }
    notify(e);
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* -- API -------------------------------------------------------------------------------------- */

static void wake(struct ce_engine *e)
{
    uint64_t one = 1;
    if (write(e->wakefd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, the loop will wake anyway */
    }
}

struct ce_engine *ce_new(int channel_fd, uint32_t window, char *err, size_t errlen)
{
    if (window == 0 || window > (1u << 30)) {
        parse_error(err, errlen, "window %u out of range (1 .. 1 GiB)", window);
        return NULL;
    }
    int fl = fcntl(channel_fd, F_GETFL);
    if (fl < 0 || !(fl & O_NONBLOCK)) {
        parse_error(err, errlen, "channel fd %d: %s", channel_fd,
                    fl < 0 ? strerror(errno) : "must be non-blocking");
        return NULL;
    }
    struct ce_engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        parse_error(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->lock, NULL);
    e->window = window;
    e->ch = channel_fd;
    int type;
    socklen_t tlen = sizeof type;
    e->ch_is_socket = getsockopt(channel_fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->notifyfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->rx = malloc(RX_SIZE);
    e->tx = malloc(TX_SIZE);
    if (e->epfd < 0 || e->wakefd < 0 || e->notifyfd < 0 || e->rx == NULL || e->tx == NULL) {
        parse_error(err, errlen, "engine setup: %s", strerror(errno ? errno : ENOMEM));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = TOKEN_CHANNEL};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, channel_fd, &ev) < 0) {
        parse_error(err, errlen, "channel fd %d: epoll: %s", channel_fd, strerror(errno));
        goto fail;
    }
    ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = TOKEN_WAKE};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev) < 0) {
        parse_error(err, errlen, "eventfd: epoll: %s", strerror(errno));
        goto fail;
    }
    e->ch_readable = e->ch_writable = 1; /* find out by trying */
    e->splice_mode = CE_SPLICE_ON;
    e->sp.fd = -1;
    return e;
fail:
    e->ch = -1; /* the caller keeps the channel fd when we fail */
    ce_free(e);
    return NULL;
}

int ce_start(struct ce_engine *e)
{
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    if (!e->started) {
        /* Signals stay with Python's main thread: block them all in ours. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&e->thread, NULL, loop, e);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        e->started = rc == 0;
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

void ce_set_splice(struct ce_engine *e, int mode)
{
    pthread_mutex_lock(&e->lock);
    e->splice_mode = mode;
    pthread_mutex_unlock(&e->lock);
}

int ce_notify_fd(struct ce_engine *e)
{
    return e->notifyfd;
}

int ce_add(struct ce_engine *e, uint32_t stream, int direction, int fd)
{
    if (direction != CE_OUT && direction != CE_IN)
        return EINVAL;
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    struct stream *s = NULL;
    if (e->closed) {
        rc = EPIPE;
        goto out;
    }
    if (find(e, stream, direction) != NULL) {
        rc = EEXIST;
        goto out;
    }
    if (e->nstreams == e->cap) {
        int cap = e->cap ? e->cap * 2 : 8;
        struct stream **grown = realloc(e->streams, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            rc = ENOMEM;
            goto out;
        }
        e->streams = grown;
        e->cap = cap;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        rc = ENOMEM;
        goto out;
    }
    s->id = stream;
    s->dir = direction;
    s->credit = e->window;
    s->tx_end = -1;
    s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (s->fd < 0) {
        rc = errno;
        goto out;
    }
    struct stat st;
    if (fstat(s->fd, &st) == 0)
        s->is_fifo = S_ISFIFO(st.st_mode);
    struct epoll_event ev = {
        .events = (direction == CE_OUT ? EPOLLIN | EPOLLRDHUP : EPOLLOUT) | EPOLLET,
        .data.u64 = (uint64_t)direction << 32 | stream,
    };
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, s->fd, &ev) == 0) {
        s->polled = 1;
        int fl = fcntl(s->fd, F_GETFL);
        if (fl < 0 || !(fl & O_NONBLOCK)) { /* one blocking fd would stall every stream */
            rc = EINVAL;
            goto out;
        }
    } else if (errno != EPERM) { /* EPERM: a regular file (or /dev/null): always ready */
        rc = errno;
        goto out;
    }
    s->ready = 1; /* find out by trying */
    e->streams[e->nstreams++] = s;
    s = NULL;
    wake(e);
out:
    if (s != NULL) {
        release_fd(e, s);
        free(s);
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

int ce_close_output(struct ce_engine *e, uint32_t stream)
{
    pthread_mutex_lock(&e->lock);
    struct stream *s = find(e, stream, CE_OUT);
    if (s != NULL) {
        s->closing = 1;
        s->ready = 1; /* try once more: forward what the fd holds, then EOF */
        wake(e);
    }
    pthread_mutex_unlock(&e->lock);
    return s != NULL ? 0 : ENOENT;
}

int ce_abort_output(struct ce_engine *e, uint32_t stream)
{
    pthread_mutex_lock(&e->lock);
    struct stream *s = find(e, stream, CE_OUT);
    if (s != NULL && !s->eof) {
        out_eof(s); /* read no more: the loop queues the EOF frame and closes the fd */
        wake(e);
    }
    pthread_mutex_unlock(&e->lock);
    return s != NULL ? 0 : ENOENT;
}

int ce_remove(struct ce_engine *e, uint32_t stream, int direction)
{
    pthread_mutex_lock(&e->lock);
    int rc = ENOENT;
    for (int i = 0; i < e->nstreams; i++) {
        struct stream *s = e->streams[i];
        if (s->id == stream && s->dir == direction) {
            if (e->sp.s == s) { /* its payload is mid-splice: keep the fd until it is out */
                epoll_ctl(e->epfd, EPOLL_CTL_DEL, s->fd, NULL);
                e->sp.s = NULL;
                s->fd = -1;
            }
            release_fd(e, s);
            free_chunks(s);
            free(s);
            e->streams[i] = e->streams[--e->nstreams];
            if (e->rr >= e->nstreams)
                e->rr = 0;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

static void snapshot(const struct stream *s, struct ce_status *out)
{
    out->stream = s->id;
    out->direction = s->dir;
    out->taken = s->taken;
    out->done = s->done;
    out->eof = s->eof;
    out->finished = s->finished;
    out->error = s->error;
}

int ce_status(struct ce_engine *e, uint32_t stream, int direction, struct ce_status *out)
{
    pthread_mutex_lock(&e->lock);
    struct stream *s = find(e, stream, direction);
    if (s != NULL)
        snapshot(s, out);
    pthread_mutex_unlock(&e->lock);
    return s != NULL ? 0 : ENOENT;
}

int ce_exit_mark(struct ce_engine *e, uint32_t stream, uint64_t *mark)
{
    pthread_mutex_lock(&e->lock);
    struct stream *s = find(e, stream, CE_OUT);
    if (s != NULL) {
        int queued = 0;
        /* No fd: EOF was read, nothing more can come. FIONREAD fails on a regular file: the
         * rest of a file is not "output still in the pipe". */
        if (s->fd < 0 || s->eof || ioctl(s->fd, FIONREAD, &queued) < 0 || queued < 0)
            queued = 0;
        *mark = s->taken + (uint64_t)queued;
    }
    pthread_mutex_unlock(&e->lock);
    return s != NULL ? 0 : ENOENT;
}

int ce_poll(struct ce_engine *e, struct ce_status *out, int max, int *closed)
{
    pthread_mutex_lock(&e->lock);
    uint64_t v;
    if (read(e->notifyfd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing was signalled */
    }
    e->notified = 0;
    int n = 0;
    for (int i = 0; i < e->nstreams && n < max; i++) {
        struct stream *s = e->streams[i];
        if (s->changed) {
            s->changed = 0;
            snapshot(s, &out[n++]);
        }
    }
    *closed = e->closed;
    pthread_mutex_unlock(&e->lock);
    return n;
}

void ce_close_reason(struct ce_engine *e, char *out, size_t outlen)
{
    pthread_mutex_lock(&e->lock);
    snprintf(out, outlen, "%s", e->closed ? e->reason : "");
    pthread_mutex_unlock(&e->lock);
}

void ce_get_counters(struct ce_engine *e, struct ce_counters *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->counters;
    pthread_mutex_unlock(&e->lock);
}

void ce_free(struct ce_engine *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    int started = e->started;
    if (e->wakefd >= 0)
        wake(e);
    pthread_mutex_unlock(&e->lock);
    if (started)
        pthread_join(e->thread, NULL);
    for (int i = 0; i < e->nstreams; i++) {
        release_fd(e, e->streams[i]);
        free_chunks(e->streams[i]);
        free(e->streams[i]);
    }
    free(e->streams);
    if (e->sp.fd >= 0 && e->sp.s == NULL)
        close(e->sp.fd);
    if (e->ch >= 0)
        close(e->ch);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->wakefd >= 0)
        close(e->wakefd);
    if (e->notifyfd >= 0)
        close(e->notifyfd);
    free(e->rx);
    free(e->tx);
    pthread_mutex_destroy(&e->lock);
    free(e);
}
