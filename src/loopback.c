/* loopback: the login's HTTP listener, open to the caller's own connections only. */
#include "loopback.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <gio/gio.h>

/* A request line and headers of a browser's callback fit in this many bytes. */
#define REQUEST_MAX 8192
/* How many browser connections (the callback, a favicon, a preconnect) at once. */
#define CONNS_MAX 8
/* A connection has this long to send its request line. */
#define CONN_DEADLINE_US (10 * G_USEC_PER_SEC)

/* ---- Listening ---- */

void loopback_close(struct loopback *l)
{
	for (size_t i = 0; i < l->n; i++)
		close(l->fd[i]);
	l->n = 0;
}

/* Listens on the loopback address of @family at @port (0: any free one). Returns the fd
 * or -errno, and the port bound in *bound_port. */
static int listen_on(int family, int port, int *bound_port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss = {0};
	socklen_t len;
	if (family == AF_INET6) {
		/* ::1 only, never 127.0.0.1 through a mapped address. */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		a6->sin6_addr = in6addr_loopback;
		len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a4);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 8) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	*bound_port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

int loopback_listen(struct loopback *l, const char *host, int port, GError **err)
{
	*l = (struct loopback){.port = port};
	bool v4 = strcmp(host, "[::1]") != 0;
	bool v6 = strcmp(host, "127.0.0.1") != 0;
	int families[] = {AF_INET, AF_INET6};
	bool wanted[] = {v4, v6};
	for (size_t i = 0; i < G_N_ELEMENTS(families); i++) {
		if (!wanted[i])
			continue;
		int fd = listen_on(families[i], l->port, &l->port);
		/* No IPv6 loopback on this machine: no browser can come back that way
		 * either, so for "localhost" 127.0.0.1 alone is enough. */
		if (fd < 0 && v4 && families[i] == AF_INET6 &&
		    (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT))
			continue;
		/* Anything else — ::1's port taken by another program — must stop the
		 * login: a browser sent there would hand it the code. */
		if (fd < 0) {
			g_set_error(err, G_IO_ERROR, g_io_error_from_errno(-fd),
				    "Could not listen on %s:%d for the browser: %s.",
				    families[i] == AF_INET6 ? "[::1]" : "127.0.0.1", l->port,
				    g_strerror(-fd));
			loopback_close(l);
			return fd;
		}
		l->fd[l->n++] = fd;
	}
	return 0;
}

/* ---- Whose connection ---- */

/* @sa as /proc/net/tcp{,6} prints an address: the raw 32-bit words in hex, the port in
 * host order ("0100007F:1F90" for 127.0.0.1:8080 on a little-endian machine). */
static bool proc_net_address(const struct sockaddr_storage *sa, char *out, size_t size)
{
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		snprintf(out, size, "%08X:%04X", (unsigned)a->sin_addr.s_addr,
			 (unsigned)ntohs(a->sin_port));
		return true;
	}
	if (sa->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		uint32_t w[4];
		memcpy(w, &a->sin6_addr, sizeof(w));
		snprintf(out, size, "%08X%08X%08X%08X:%04X", (unsigned)w[0], (unsigned)w[1],
			 (unsigned)w[2], (unsigned)w[3], (unsigned)ntohs(a->sin6_port));
		return true;
	}
	return false;
}

int loopback_peer_uid(int fd, uid_t *uid)
{
	struct sockaddr_storage ours = {0}, theirs = {0};
	socklen_t len = sizeof(ours);
	if (getsockname(fd, (struct sockaddr *)&ours, &len) < 0)
		return -errno;
	len = sizeof(theirs);
	if (getpeername(fd, (struct sockaddr *)&theirs, &len) < 0)
		return -errno;
	/* Their socket is the one whose local address is our peer and whose remote
	 * address is us. */
	char local[64], remote[64];
	if (!proc_net_address(&theirs, local, sizeof(local)) ||
	    !proc_net_address(&ours, remote, sizeof(remote)))
		return -EAFNOSUPPORT;
	g_autofree char *text = NULL;
	if (!g_file_get_contents(ours.ss_family == AF_INET6 ? "/proc/net/tcp6" : "/proc/net/tcp",
				 &text, NULL, NULL))
		return -EIO;
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		/* "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ..." */
		g_auto(GStrv) f = g_strsplit_set(g_strstrip(*l), " ", -1);
		GPtrArray *fields = g_ptr_array_new();
		for (char **w = f; *w; w++)
			if (**w)
				g_ptr_array_add(fields, *w);
		bool match = fields->len > 7 && g_ascii_strcasecmp(fields->pdata[1], local) == 0 &&
			     g_ascii_strcasecmp(fields->pdata[2], remote) == 0;
		guint64 v = 0;
		if (match)
			match = g_ascii_string_to_unsigned(fields->pdata[7], 10, 0, G_MAXUINT32, &v,
							   NULL);
		g_ptr_array_free(fields, TRUE);
		if (match) {
			*uid = (uid_t)v;
			return 0;
		}
	}
	return -ENOENT;
}

/* ---- Answers ---- */

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		data += n;
		len -= (size_t)n;
	}
}

static void send_answer(int fd, int status, const char *reason, const char *extra_headers,
			const char *body)
{
	g_autofree char *head = g_strdup_printf(
	    "HTTP/1.1 %d %s\r\n%sContent-Type: text/html; charset=utf-8\r\n"
	    "Content-Length: %zu\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n"
	    "Connection: close\r\n\r\n",
	    status, reason, extra_headers, strlen(body));
	send_all(fd, head, strlen(head));
	send_all(fd, body, strlen(body));
}

void loopback_send_page(int fd, int status, const char *reason, const char *title,
			const char *sentence)
{
	g_autofree char *t = g_markup_escape_text(title, -1);
	g_autofree char *s = g_markup_escape_text(sentence, -1);
	g_autofree char *body = g_strdup_printf(
	    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>"
	    "<body><p>%s</p></body></html>\n",
	    t, s);
	send_answer(fd, status, reason, "", body);
}

void loopback_send_redirect(int fd, const char *location)
{
	g_autofree char *header = g_strdup_printf("Location: %s\r\n", location);
	send_answer(fd, 303, "See Other", header, "");
}

/* ---- Serving ---- */

struct conn {
	int fd;
	GString *buf;
	gint64 accepted_us; /* monotonic */
};

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->buf) {
		explicit_bzero(c->buf->str, c->buf->len);
		g_string_free(c->buf, TRUE);
	}
	c->buf = NULL;
}

/* Takes a new connection from @listen_fd into a slot, unless its other end is not ours. */
static void conn_accept(int listen_fd, struct conn *conns, size_t n)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	uid_t uid;
	if (loopback_peer_uid(fd, &uid) < 0 || uid != getuid()) {
		loopback_send_page(fd, 403, "Forbidden", "smarthomefs",
				   "This login belongs to another user.");
		close(fd);
		return;
	}
	/* A free slot, else the oldest connection's: ours all, but a stuck one must not
	 * keep the browser's callback out. */
	size_t slot = 0;
	for (size_t i = 0; i < n; i++) {
		if (conns[i].fd < 0) {
			slot = i;
			break;
		}
		if (conns[i].accepted_us < conns[slot].accepted_us)
			slot = i;
	}
	conn_close(&conns[slot]);
	conns[slot] = (struct conn){
	    .fd = fd, .buf = g_string_new(NULL), .accepted_us = g_get_monotonic_time()};
}

/* Reads what @c sent; hands a complete request line to @handler. Returns true when the
 * handler says the wait is over. */
static bool conn_read(struct conn *c, loopback_handler handler, void *ctx)
{
	char chunk[1024];
	ssize_t got = recv(c->fd, chunk, sizeof(chunk), 0);
	if (got < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (got <= 0) {
		conn_close(c);
		return false;
	}
	g_string_append_len(c->buf, chunk, got);
	explicit_bzero(chunk, sizeof(chunk));
	char *eol = strstr(c->buf->str, "\r\n");
	if (!eol)
		eol = strchr(c->buf->str, '\n');
	if (!eol) {
		if (c->buf->len > REQUEST_MAX) {
			loopback_send_page(c->fd, 414, "URI Too Long", "smarthomefs",
					   "Request too long.");
			conn_close(c);
		}
		return false;
	}
	/* The request line is all we need; the rest is the browser's headers, which say
	 * nothing we use. */
	*eol = '\0';
	bool done = memchr(c->buf->str, '\0', (size_t)(eol - c->buf->str)) == NULL &&
		    handler(ctx, c->fd, c->buf->str);
	conn_close(c);
	return done;
}

int loopback_serve(const struct loopback *l, gint64 deadline_us, loopback_handler handler,
		   void *ctx)
{
	struct conn conns[CONNS_MAX];
	for (size_t i = 0; i < G_N_ELEMENTS(conns); i++)
		conns[i] = (struct conn){.fd = -1};
	int result = -ETIMEDOUT;
	bool done = false;

	while (!done) {
		gint64 now_us = g_get_monotonic_time();
		if (now_us >= deadline_us)
			break;
		/* The listeners first, then the connections (map: their slot). */
		struct pollfd pfds[LOOPBACK_LISTENERS_MAX + CONNS_MAX];
		size_t map[LOOPBACK_LISTENERS_MAX + CONNS_MAX];
		nfds_t n = 0;
		for (size_t i = 0; i < l->n; i++) {
			pfds[n] = (struct pollfd){.fd = l->fd[i], .events = POLLIN};
			map[n++] = SIZE_MAX;
		}
		gint64 wake_us = deadline_us;
		for (size_t i = 0; i < G_N_ELEMENTS(conns); i++) {
			if (conns[i].fd < 0)
				continue;
			gint64 end_us = conns[i].accepted_us + CONN_DEADLINE_US;
			if (now_us >= end_us) {
				conn_close(&conns[i]);
				continue;
			}
			wake_us = MIN(wake_us, end_us);
			pfds[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
			map[n++] = i;
		}
		int timeout_ms = (int)MIN((wake_us - now_us + 999) / 1000, G_MAXINT);
		if (poll(pfds, n, timeout_ms) < 0) {
			if (errno == EINTR)
				continue;
			result = -errno;
			break;
		}
		for (nfds_t k = 0; k < n && !done; k++) {
			if (!pfds[k].revents)
				continue;
			if (map[k] == SIZE_MAX)
				conn_accept(pfds[k].fd, conns, G_N_ELEMENTS(conns));
			else if (conns[map[k]].fd >= 0 && conn_read(&conns[map[k]], handler, ctx))
				done = true;
		}
		if (done)
			result = 0;
	}
	for (size_t i = 0; i < G_N_ELEMENTS(conns); i++)
		conn_close(&conns[i]);
	return result;
}
