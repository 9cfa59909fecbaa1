/* http: libcurl for every request the program makes. One client is shared by all
 * threads: connections, TLS sessions and DNS answers are shared through a CURLSH, and
 * each request borrows an idle easy handle (or makes one) and gives it back. TLS is always
 * verified: against @cafile when given (it replaces the system's CA store), else the
 * system's.
 *
 * Retries: http_request() retries 500, 502, 503, 504 and connection failures with
 * exponential backoff and full jitter (base 400 ms, factor 2, cap 15 s), honouring
 * Retry-After, until @tries or the deadline is spent; never 400/401/403/404, and never
 * 429 (a quota does not refill within a request: the caller waits for the refill).
 *
 * Memory: a body over HTTP_LARGE_BODY takes one of a few slots of the process while it
 * is received and until its response is cleared; a transfer that passes the size waits
 * for one, until its deadline (then -ETIMEDOUT). So bodies in flight weigh at most the
 * fetching threads x HTTP_LARGE_BODY plus those few x the body cap, whatever the number
 * of readers. Clear a response before waiting for anything else.
 * All functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <glib.h>

struct http_client;

/* A body past this size is large (see Memory above; session.h parses such bodies one at a
 * time). */
#define HTTP_LARGE_BODY (1024 * 1024)

/* Starts libcurl, once per process, before any thread: call it first in main. It
 * clears SSLKEYLOGFILE first, so that no TLS secret is ever written out. */
void http_global_init(void);

struct http_request {
	const char *method; /* "GET" or "POST" */
	const char *url;
	const char *bearer;   /* Authorization: Bearer …, or NULL */
	const char *form;     /* application/x-www-form-urlencoded body, or NULL */
	int tries;	      /* attempts at most; 0 means 1 */
	const char *log_path; /* what a debug line shows instead of the URL (no query), or NULL */
};

struct http_response {
	long status;
	GBytes *body;	   /* never NULL after success */
	char *retry_after; /* header values, or NULL */
	char *ratelimit;
	char *ratelimit_policy;
	char *content_type;
	gint64 date_s; /* the server's clock (its Date header), unix s; 0: none */
	double seconds;
	int attempts;
	bool large_slot; /* the body is over HTTP_LARGE_BODY: holds one of the process's few
			  * slots for such bodies until http_response_clear */
};

/* @timeout_s bounds each request from start to end (retries included); @max_body caps
 * a response body. @user_agent is sent on every request; NULL sends the program's one,
 * "smarthomefs/VERSION" (only tests pass another). */
struct http_client *http_client_new(const char *cafile, int timeout_s, size_t max_body,
				    const char *user_agent);
/* Once no request runs (the threads that make them need not have ended). */
void http_client_free(struct http_client *c);
/* The bound of one request, retries included, in microseconds. */
gint64 http_client_timeout_us(const struct http_client *c);

/* Performs @req. Returns 0 when an HTTP answer came (any status: check resp->status),
 * else -ETIMEDOUT (also: no slot for a large body in time), -ECONNREFUSED, -EHOSTUNREACH,
 * -ECONNRESET, -EPROTO (TLS or protocol failure, certificate not trusted), -EFBIG (body over the
 * cap), -EIO. */
int http_request(struct http_client *c, const struct http_request *req, struct http_response *resp);
void http_response_clear(struct http_response *resp);

/* The errno a reader gets for an HTTP status: 401/403 -EACCES, 404/410 -ENOENT,
 * 429 -EAGAIN, 408/504 -ETIMEDOUT, other 5xx -EREMOTEIO (the server failed: EIO at the
 * FUSE edge), other 4xx and anything else -EIO, 2xx 0. */
int http_status_errno(long status);

/* Builds "k1=v1&k2=v2" with both sides percent-encoded from NULL-terminated pairs;
 * a NULL value skips its pair. g_free. */
char *http_form(const char *key, ...) G_GNUC_NULL_TERMINATED;
/* The value of @key in a form or query string (decoded; g_free), or NULL. */
char *http_form_get(const char *form, const char *key);
