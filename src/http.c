/* http: libcurl behind one small function. Every FUSE worker may call http_request()
 * at once, so the client shares what is expensive to rebuild (connections, TLS
 * sessions, DNS answers) through a CURLSH, and a request borrows an easy handle that no
 * other request is using (curl allows one thread per handle) and gives it back.
 * Handles are not tied to threads: a thread's exit (a pool's spare thread, a FUSE
 * worker going idle) may come at any time, also while the client is freed, and would
 * otherwise race with http_client_free for its handle and the share it holds. */
#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <curl/curl.h>

#include "log.h"
#include "ratelimit.h"
#include "version.h"

#define BACKOFF_BASE_MS 400
#define BACKOFF_CAP_MS	15000
/* Connecting never needs long; a dead host should not eat the whole deadline. */
#define CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_S  30
/* Connections the shared pool keeps. curl's default (5) is below the number of threads
 * that fetch at once (FUSE workers and prefetch), and past it every request closes the
 * oldest idle connection: a walk would open a new TLS connection for most requests. */
#define POOL_CONNECTIONS 64

struct http_client {
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t idle_lock;
	GPtrArray *idle; /* (idle_lock) CURL *: the handles no request is using */
	char *cafile;
	gint64 timeout_us;
	size_t max_body;
	char *user_agent;
};

/* Bodies over HTTP_LARGE_BODY received, or answered and not yet cleared, at once in the
 * process (a mount of all accounts has a client each): each up to max_body. Bodies under
 * it are bounded by the threads that fetch; these by this, whatever the number of
 * readers. A transfer past HTTP_LARGE_BODY waits for a slot (the server's bytes wait in
 * the socket meanwhile) until its deadline. Held by a thread that never waits for
 * another (session_large_begin, the cache's locks) while holding one. */
#define LARGE_SLOTS 2
static GMutex large_slots_lock;
static GCond large_slots_cond;
static unsigned large_slots_used; /* (large_slots_lock) */

/* Takes a slot, waiting until monotonic @deadline_us at most; false when none came. */
static bool large_slot_take(gint64 deadline_us)
{
	g_mutex_lock(&large_slots_lock);
	while (large_slots_used >= LARGE_SLOTS) {
		if (!g_cond_wait_until(&large_slots_cond, &large_slots_lock, deadline_us) &&
		    large_slots_used >= LARGE_SLOTS) {
			g_mutex_unlock(&large_slots_lock);
			return false;
		}
	}
	large_slots_used++;
	g_mutex_unlock(&large_slots_lock);
	return true;
}

static void large_slot_give_back(void)
{
	g_mutex_lock(&large_slots_lock);
	large_slots_used--;
	g_cond_signal(&large_slots_cond);
	g_mutex_unlock(&large_slots_lock);
}

/* What one attempt collects while curl runs. */
struct http_transfer {
	GByteArray *body;
	size_t max_body;
	gint64 deadline_us; /* monotonic: the request's end */
	bool too_big;
	bool large_slot; /* holds one (large_slot_take) */
	bool no_slot;	 /* no slot came before the deadline */
	char *retry_after;
	char *ratelimit;
	char *ratelimit_policy;
	char *content_type;
	char *date;
	long http_version; /* CURL_HTTP_VERSION_*: what the server and curl agreed on */
};

static pthread_once_t curl_init_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
	/* libcurl's TLS backends write every session's secrets to the file this names,
	 * enough to decrypt captured bearer traffic: no process of ours honours it. It is
	 * read when curl starts, so it goes first. */
	g_unsetenv("SSLKEYLOGFILE");
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *userptr)
{
	struct http_client *c = userptr;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
	struct http_client *c = userptr;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&c->share_locks[data]);
}

void http_global_init(void)
{
	pthread_once(&curl_init_once, curl_init);
}

struct http_client *http_client_new(const char *cafile, int timeout_s, size_t max_body,
				    const char *user_agent)
{
	http_global_init();

	struct http_client *c = g_new0(struct http_client, 1);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->idle_lock, NULL);
	c->idle = g_ptr_array_new();
	c->cafile = g_strdup(cafile && *cafile ? cafile : NULL);
	c->timeout_us = (gint64)(timeout_s > 0 ? timeout_s : DEFAULT_TIMEOUT_S) * G_USEC_PER_SEC;
	c->max_body = max_body ? max_body : (size_t)16 << 20;
	c->user_agent =
	    g_strdup(user_agent && *user_agent ? user_agent : "smarthomefs/" SMARTHOMEFS_VERSION);

	c->share = curl_share_init();
	if (!c->share)
		g_error("http: curl_share_init failed");
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	return c;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	for (guint i = 0; i < c->idle->len; i++)
		curl_easy_cleanup(c->idle->pdata[i]);
	g_ptr_array_unref(c->idle);
	pthread_mutex_destroy(&c->idle_lock);
	/* Refused only while a handle still holds the share: a request outlived us. */
	if (curl_share_cleanup(c->share) != CURLSHE_OK)
		log_warn("http: freed while a request still ran (a bug: libcurl's share is left)");
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	g_free(c->cafile);
	g_free(c->user_agent);
	g_free(c);
}

gint64 http_client_timeout_us(const struct http_client *c)
{
	return c->timeout_us;
}

/* An easy handle for one request: an idle one, or a new one (NULL when curl cannot
 * make one). Give it back with easy_give_back. */
static CURL *easy_borrow(struct http_client *c)
{
	CURL *curl = NULL;

	pthread_mutex_lock(&c->idle_lock);
	if (c->idle->len)
		curl = g_ptr_array_steal_index_fast(c->idle, c->idle->len - 1);
	pthread_mutex_unlock(&c->idle_lock);
	return curl ? curl : curl_easy_init();
}

static void easy_give_back(struct http_client *c, CURL *curl)
{
	pthread_mutex_lock(&c->idle_lock);
	g_ptr_array_add(c->idle, curl);
	pthread_mutex_unlock(&c->idle_lock);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct http_transfer *t = userdata;
	size_t n = size * nmemb;
	/* Checked on the decoded bytes, so a small gzip bomb is caught too. */
	if (t->body->len + n > t->max_body) {
		t->too_big = true;
		return 0; /* CURLE_WRITE_ERROR aborts the transfer */
	}
	if (!t->large_slot && t->body->len + n > HTTP_LARGE_BODY) {
		if (!large_slot_take(t->deadline_us)) {
			t->no_slot = true;
			return 0;
		}
		t->large_slot = true;
	}
	g_byte_array_append(t->body, (const guint8 *)data, (guint)n);
	return n;
}

static void transfer_reset_headers(struct http_transfer *t)
{
	g_clear_pointer(&t->retry_after, g_free);
	g_clear_pointer(&t->ratelimit, g_free);
	g_clear_pointer(&t->ratelimit_policy, g_free);
	g_clear_pointer(&t->content_type, g_free);
	g_clear_pointer(&t->date, g_free);
}

/* Header names are compared in any letter case: HTTP/2 sends them lower case, some
 * servers in their own spelling. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct http_transfer *t = userdata;
	size_t n = size * nmemb;
	static const struct {
		const char *name;
		size_t field;
	} wanted[] = {
	    {"retry-after", offsetof(struct http_transfer, retry_after)},
	    {"ratelimit", offsetof(struct http_transfer, ratelimit)},
	    {"ratelimit-policy", offsetof(struct http_transfer, ratelimit_policy)},
	    {"content-type", offsetof(struct http_transfer, content_type)},
	    {"date", offsetof(struct http_transfer, date)},
	};

	/* A status line starts a new header block (after a 100 Continue or an
	 * interim answer): only the final block counts. */
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		transfer_reset_headers(t);
		return n;
	}
	const char *colon = memchr(data, ':', n);
	if (!colon)
		return n;
	size_t name_len = (size_t)(colon - data);
	for (size_t i = 0; i < G_N_ELEMENTS(wanted); i++) {
		if (strlen(wanted[i].name) != name_len ||
		    g_ascii_strncasecmp(wanted[i].name, data, name_len) != 0)
			continue;
		const char *v = colon + 1;
		const char *end = data + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v &&
		       (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
			end--;
		char **field = (char **)((char *)t + wanted[i].field);
		g_free(*field);
		*field = g_strndup(v, (gsize)(end - v));
		break;
	}
	return n;
}

static int curl_errno(CURLcode rc, bool too_big, bool no_slot)
{
	if (too_big)
		return -EFBIG;
	if (no_slot)
		return -ETIMEDOUT;
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_USE_SSL_FAILED:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_BAD_CONTENT_ENCODING:
		return -EPROTO;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	default:
		return -EIO;
	}
}

/* Transport failures worth another attempt: the request may not have reached the
 * server, or the server went away. Certificate and protocol errors will not heal. */
static bool errno_is_retryable(int r)
{
	return r == -ECONNREFUSED || r == -ECONNRESET || r == -EHOSTUNREACH || r == -ETIMEDOUT;
}

/* Never 429: a quota (tado's is per day) does not refill within one request, and
 * hammering a limit has preceded lockouts; the caller blocks calls until the refill. */
static bool status_is_retryable(long status)
{
	return status == 500 || status == 502 || status == 503 || status == 504;
}

/* The URL without query and fragment, for a log line when the caller gave no log_path:
 * a query may hold an id or a code. */
static char *url_for_log(const char *url)
{
	if (!url)
		return g_strdup("?");
	return g_strndup(url, strcspn(url, "?#"));
}

/* For the debug line: whether ALPN gave us HTTP/2 shows only here. */
static const char *http_version_name(long version)
{
	switch (version) {
	case CURL_HTTP_VERSION_1_0:
		return "HTTP/1.0";
	case CURL_HTTP_VERSION_1_1:
		return "HTTP/1.1";
	case CURL_HTTP_VERSION_2_0:
		return "HTTP/2";
	case CURL_HTTP_VERSION_3:
		return "HTTP/3";
	default:
		return "HTTP/?";
	}
}

static int http_attempt(struct http_client *c, CURL *curl, const struct http_request *req,
			gint64 remaining_us, struct http_transfer *t, long *status)
{
	curl_easy_reset(curl); /* keeps the connections, the DNS and session caches */

	long timeout_ms = (long)MAX(remaining_us / 1000, 1);
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	curl_easy_setopt(curl, CURLOPT_SHARE, c->share);
	curl_easy_setopt(curl, CURLOPT_MAXCONNECTS, (long)POOL_CONNECTIONS);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, MIN(timeout_ms, CONNECT_TIMEOUT_MS));
	curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "gzip");
	curl_easy_setopt(curl, CURLOPT_USERAGENT, c->user_agent);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->cafile)
		curl_easy_setopt(curl, CURLOPT_CAINFO, c->cafile);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
#endif
	curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
	/* The smallest curl allows: we send a request line and a small form, and every
	 * thread's handle would otherwise keep 64 KiB for it. */
	curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, t);
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);

	const char *method = req->method ? req->method : "GET";
	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "POST") == 0) {
		const char *form = req->form ? req->form : "";
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(form));
	} else {
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
		if (req->form) {
			curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->form);
			curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
					 (curl_off_t)strlen(req->form));
		}
	}

	struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
	if (req->form)
		headers =
		    curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
	char *auth_header = NULL;
	if (req->bearer) {
		auth_header = g_strconcat("Authorization: Bearer ", req->bearer, NULL);
		headers = curl_slist_append(headers, auth_header);
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

	CURLcode rc = curl_easy_perform(curl);

	/* curl_slist_append copied the header; wipe both copies of the token. */
	for (struct curl_slist *h = headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
	if (auth_header) {
		explicit_bzero(auth_header, strlen(auth_header));
		g_free(auth_header);
	}
	/* Nothing may point at freed memory once we return. */
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
	/* A certificate problem is the user's to fix (cafile=, the system store, a proxy):
	 * say which, as curl knows it. Verification itself is never turned off. */
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
	    rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM ||
	    rc == CURLE_SSL_ISSUER_ERROR) {
		g_autofree char *where = url_for_log(req->url);
		log_warn("TLS with %s failed: %s", where,
			 errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}

	*status = 0;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
		curl_easy_getinfo(curl, CURLINFO_HTTP_VERSION, &t->http_version);
	}
	return curl_errno(rc, t->too_big, t->no_slot);
}

/* Full jitter: a random wait in [0, min(cap, base * 2^(attempt-1))]. */
static gint64 backoff_us(int attempt)
{
	gint64 ms = BACKOFF_BASE_MS;
	for (int i = 1; i < attempt && ms < BACKOFF_CAP_MS; i++)
		ms *= 2;
	ms = MIN(ms, BACKOFF_CAP_MS);
	return (gint64)(g_random_double() * (double)ms * 1000.0);
}

static void transfer_to_response(struct http_transfer *t, long status, struct http_response *resp)
{
	guint len;
	guint8 *data;

	http_response_clear(resp);
	resp->status = status;
	/* The array grew by doubling: give back the spare room, as the cache keeps the
	 * body (glibc shrinks in place). */
	len = t->body->len;
	data = g_byte_array_free(g_steal_pointer(&t->body), FALSE);
	resp->body = g_bytes_new_take(g_realloc(data, len ? len : 1), len);
	resp->retry_after = g_steal_pointer(&t->retry_after);
	resp->ratelimit = g_steal_pointer(&t->ratelimit);
	resp->ratelimit_policy = g_steal_pointer(&t->ratelimit_policy);
	resp->content_type = g_steal_pointer(&t->content_type);
	/* curl_getdate: -1 for what is no date. */
	resp->date_s = t->date ? MAX((gint64)curl_getdate(t->date, NULL), 0) : 0;
	resp->large_slot = t->large_slot; /* given back by http_response_clear */
	t->large_slot = false;
}

int http_request(struct http_client *c, const struct http_request *req, struct http_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	CURL *curl = easy_borrow(c);
	if (!curl)
		return -ENOMEM;

	const char *method = req->method ? req->method : "GET";
	g_autofree char *log_path = req->log_path ? g_strdup(req->log_path) : url_for_log(req->url);
	int tries = req->tries > 0 ? req->tries : 1;
	gint64 start = g_get_monotonic_time();
	gint64 deadline = start + c->timeout_us;
	int r = -ETIMEDOUT;

	for (int attempt = 1; attempt <= tries; attempt++) {
		gint64 now = g_get_monotonic_time();
		if (now >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		struct http_transfer t = {
		    .body = g_byte_array_new(),
		    .max_body = c->max_body,
		    .deadline_us = deadline,
		};
		long status = 0;
		r = http_attempt(c, curl, req, deadline - now, &t, &status);
		gint64 done = g_get_monotonic_time();
		if (r == 0)
			log_debug("%s %s -> %ld in %.3f s over %s (attempt %d)", method, log_path,
				  status, (double)(done - now) / G_USEC_PER_SEC,
				  http_version_name(t.http_version), attempt);
		else
			log_debug("%s %s -> %s in %.3f s (attempt %d)", method, log_path,
				  g_strerror(-r), (double)(done - now) / G_USEC_PER_SEC, attempt);

		if (r == 0) {
			transfer_to_response(&t, status, resp);
			resp->attempts = attempt;
		}
		g_clear_pointer(&t.body, g_byte_array_unref);
		transfer_reset_headers(&t);
		if (t.large_slot) /* a failed attempt's */
			large_slot_give_back();

		bool retry = r == 0 ? status_is_retryable(resp->status) : errno_is_retryable(r);
		if (!retry || attempt == tries)
			break;

		gint64 wait = backoff_us(attempt);
		long retry_after;
		if (r == 0 && resp->retry_after &&
		    retry_after_parse(resp->retry_after, time(NULL), &retry_after) == 0)
			wait = (gint64)retry_after * G_USEC_PER_SEC;
		/* A wait that ends after the deadline helps nobody: the caller gets the
		 * answer now (a 503 with its Retry-After, for the status file). */
		if (g_get_monotonic_time() + wait >= deadline)
			break;
		if (r == 0)
			http_response_clear(resp);
		g_usleep((gulong)wait);
	}

	easy_give_back(c, curl);
	resp->seconds = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
	if (r < 0) {
		http_response_clear(resp);
		return r;
	}
	return 0;
}

void http_response_clear(struct http_response *resp)
{
	g_clear_pointer(&resp->body, g_bytes_unref);
	if (resp->large_slot)
		large_slot_give_back();
	resp->large_slot = false;
	g_clear_pointer(&resp->retry_after, g_free);
	g_clear_pointer(&resp->ratelimit, g_free);
	g_clear_pointer(&resp->ratelimit_policy, g_free);
	g_clear_pointer(&resp->content_type, g_free);
	resp->date_s = 0;
	resp->status = 0;
	resp->seconds = 0;
	resp->attempts = 0;
}

int http_status_errno(long status)
{
	static const struct {
		long status;
		int err;
	} table[] = {
	    {401, -EACCES}, {403, -EACCES},    {404, -ENOENT},	  {410, -ENOENT},
	    {429, -EAGAIN}, {408, -ETIMEDOUT}, {504, -ETIMEDOUT},
	};
	for (size_t i = 0; i < G_N_ELEMENTS(table); i++)
		if (table[i].status == status)
			return table[i].err;
	if (status >= 200 && status < 300)
		return 0;
	/* The server failed, rather than refused: worth asking again later (history_fill). */
	if (status >= 500 && status < 600)
		return -EREMOTEIO;
	return -EIO;
}

char *http_form(const char *key, ...)
{
	GString *s = g_string_new(NULL);
	va_list ap;
	va_start(ap, key);
	for (const char *k = key; k; k = va_arg(ap, const char *)) {
		const char *v = va_arg(ap, const char *);
		if (!v)
			continue;
		if (s->len)
			g_string_append_c(s, '&');
		g_string_append_uri_escaped(s, k, NULL, FALSE);
		g_string_append_c(s, '=');
		g_string_append_uri_escaped(s, v, NULL, FALSE);
	}
	va_end(ap);
	return g_string_free(s, FALSE);
}

/* Decodes one side of a pair: '+' is a space in forms; an escape that is invalid or
 * decodes to NUL makes the whole side invalid (NULL). */
static char *form_decode(const char *s, size_t len)
{
	g_autofree char *raw = g_strndup(s, len);
	for (char *p = raw; *p; p++)
		if (*p == '+')
			*p = ' ';
	return g_uri_unescape_string(raw, NULL);
}

char *http_form_get(const char *form, const char *key)
{
	if (!form || !key)
		return NULL;
	if (*form == '?')
		form++;
	const char *p = form;
	while (*p && *p != '#') {
		size_t len = strcspn(p, "&#");
		const char *eq = memchr(p, '=', len);
		size_t key_len = eq ? (size_t)(eq - p) : len;
		g_autofree char *k = form_decode(p, key_len);
		if (k && strcmp(k, key) == 0) {
			if (!eq)
				return g_strdup("");
			return form_decode(eq + 1, len - key_len - 1);
		}
		p += len;
		if (*p == '&')
			p++;
	}
	return NULL;
}
