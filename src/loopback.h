/* loopback: the small HTTP listener a browser comes back to after a login (RFC 8252):
 * 127.0.0.1, ::1, or both for "localhost", which a browser may resolve to either. It
 * reads each connection's request line and hands it to the caller, and keeps the other
 * local users out: a connection is served only when the socket at its other end belongs
 * to the caller's uid (the kernel's table of TCP sockets, /proc/net/tcp and tcp6, says
 * whose it is); any other is answered 403 and closed at once, so another user can neither
 * deliver a login code nor hold the connection slots. A connection gets 10 s for its
 * request line; with every slot taken, a new connection ends the oldest one.
 * Used by one thread; the login's only. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

#define LOOPBACK_LISTENERS_MAX 2

struct loopback {
	int fd[LOOPBACK_LISTENERS_MAX];
	size_t n;
	int port;
};

/* Listens on @host ("127.0.0.1", "[::1]" or "localhost") at @port (0: any free one,
 * then in l->port). -errno with @err set to a sentence. */
int loopback_listen(struct loopback *l, const char *host, int port, GError **err);
void loopback_close(struct loopback *l);

/* Called with a request line ("GET /path HTTP/1.1") of a connection of the caller's own,
 * which it answers on @fd (loopback_send_*). Returns true when the wait is over. */
typedef bool (*loopback_handler)(void *ctx, int fd, const char *request_line);

/* Serves connections until @handler says the wait is over (0) or the monotonic time
 * @deadline_us passes (-ETIMEDOUT); another -errno when polling fails. */
int loopback_serve(const struct loopback *l, gint64 deadline_us, loopback_handler handler,
		   void *ctx);

/* Answers with a small HTML page saying @sentence (escaped). */
void loopback_send_page(int fd, int status, const char *reason, const char *title,
			const char *sentence);
/* Answers with a redirect (303) to @location. */
void loopback_send_redirect(int fd, const char *location);

/* The uid owning the socket at the other end of the loopback TCP connection @fd, from
 * /proc/net/tcp or tcp6. -ENOENT when it is not there (it went away), -errno otherwise. */
int loopback_peer_uid(int fd, uid_t *uid);
