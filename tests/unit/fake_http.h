/* fake_http: a tiny HTTP/1.1 server on 127.0.0.1 for unit tests, so the HTTP client,
 * the token endpoint and the refresh logic can be exercised without a network. One
 * thread, one request per connection (Connection: close); a handler writes each answer.
 * Header-only (static inline) so each test executable takes only what it uses. */
#pragma once

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <glib.h>

struct fake_request {
	char *method;
	char *target;  /* "/path?query" */
	char *headers; /* the raw header block, lines joined by "\r\n" */
	char *body;
};

/* Fills @status, extra header lines (each ending in "\r\n") and @body. */
typedef void (*fake_handler)(const struct fake_request *req, int *status, GString *headers,
			     GString *body, void *data);

struct fake_server {
	int fd;
	int port;
	GThread *thread;
	volatile gint stop;
	volatile gint requests;
	fake_handler handler;
	void *data;
	GMutex lock;
	GPtrArray *seen; /* (lock) struct fake_request * */
};

static inline void fake_request_free(void *p)
{
	struct fake_request *r = p;
	g_free(r->method);
	g_free(r->target);
	g_free(r->headers);
	g_free(r->body);
	g_free(r);
}

static inline void fake_serve_one(struct fake_server *s, int cfd)
{
	GString *in = g_string_new(NULL);
	char buf[4096];
	size_t header_end = 0;
	size_t content_length = 0;
	for (;;) {
		struct pollfd p = {.fd = cfd, .events = POLLIN};
		if (poll(&p, 1, 5000) <= 0)
			break;
		ssize_t n = recv(cfd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		g_string_append_len(in, buf, n);
		if (!header_end) {
			char *e = strstr(in->str, "\r\n\r\n");
			if (!e)
				continue;
			header_end = (size_t)(e - in->str) + 4;
			char *cl = strcasestr(in->str, "\r\ncontent-length:");
			if (cl && cl < e)
				content_length = strtoul(cl + 17, NULL, 10);
		}
		if (in->len >= header_end + content_length)
			break;
	}
	if (!header_end) {
		g_string_free(in, TRUE);
		close(cfd);
		return;
	}
	struct fake_request *req = g_new0(struct fake_request, 1);
	char *line_end = strstr(in->str, "\r\n");
	g_autofree char *line = g_strndup(in->str, (gsize)(line_end - in->str));
	g_auto(GStrv) parts = g_strsplit(line, " ", 3);
	req->method = g_strdup(parts[0] ? parts[0] : "");
	req->target = g_strdup(parts[0] && parts[1] ? parts[1] : "");
	req->headers = g_strndup(line_end + 2, header_end - (size_t)(line_end + 2 - in->str));
	req->body = g_strndup(in->str + header_end, MIN(content_length, in->len - header_end));
	g_string_free(in, TRUE);

	int status = 200;
	GString *headers = g_string_new(NULL);
	GString *body = g_string_new(NULL);
	s->handler(req, &status, headers, body, s->data);
	g_atomic_int_inc(&s->requests);
	g_mutex_lock(&s->lock);
	g_ptr_array_add(s->seen, req);
	g_mutex_unlock(&s->lock);

	GString *out = g_string_new(NULL);
	g_string_append_printf(
	    out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
	    body->len, headers->str);
	g_string_append_len(out, body->str, (gssize)body->len);
	size_t off = 0;
	while (off < out->len) {
		ssize_t n = send(cfd, out->str + off, out->len - off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	g_string_free(out, TRUE);
	g_string_free(headers, TRUE);
	g_string_free(body, TRUE);
	shutdown(cfd, SHUT_WR);
	close(cfd);
}

static inline gpointer fake_server_run(gpointer p)
{
	struct fake_server *s = p;
	while (!g_atomic_int_get(&s->stop)) {
		struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		int cfd = accept(s->fd, NULL, NULL);
		if (cfd >= 0)
			fake_serve_one(s, cfd);
	}
	return NULL;
}

static inline struct fake_server *fake_server_start(fake_handler handler, void *data)
{
	struct fake_server *s = g_new0(struct fake_server, 1);
	s->handler = handler;
	s->data = data;
	s->seen = g_ptr_array_new_with_free_func(fake_request_free);
	g_mutex_init(&s->lock);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	g_assert_cmpint(s->fd, >=, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	g_assert_cmpint(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	g_assert_cmpint(listen(s->fd, 64), ==, 0);
	g_assert_cmpint(getsockname(s->fd, (struct sockaddr *)&a, &len), ==, 0);
	s->port = ntohs(a.sin_port);
	s->thread = g_thread_new("fake-http", fake_server_run, s);
	return s;
}

static inline char *fake_server_url(const struct fake_server *s, const char *path)
{
	return g_strdup_printf("http://127.0.0.1:%d%s", s->port, path);
}

static inline int fake_server_requests(struct fake_server *s)
{
	return g_atomic_int_get(&s->requests);
}

/* The @i-th request seen (a copy of its body; g_free), or NULL. */
static inline char *fake_server_body(struct fake_server *s, guint i)
{
	g_mutex_lock(&s->lock);
	char *b =
	    i < s->seen->len ? g_strdup(((struct fake_request *)s->seen->pdata[i])->body) : NULL;
	g_mutex_unlock(&s->lock);
	return b;
}

static inline char *fake_server_headers(struct fake_server *s, guint i)
{
	g_mutex_lock(&s->lock);
	char *b =
	    i < s->seen->len ? g_strdup(((struct fake_request *)s->seen->pdata[i])->headers) : NULL;
	g_mutex_unlock(&s->lock);
	return b;
}

static inline void fake_server_stop(struct fake_server *s)
{
	g_atomic_int_set(&s->stop, 1);
	g_thread_join(s->thread);
	close(s->fd);
	g_ptr_array_unref(s->seen);
	g_mutex_clear(&s->lock);
	g_free(s);
}
