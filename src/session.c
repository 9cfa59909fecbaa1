/* session: one mounted account and the road from a resource to the cloud. */
#include "session.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "auth.h"
#include "cache.h"
#include "http.h"
#include "log.h"
#include "history.h"
#include "ratelimit.h"

/* A body larger than this is refused (-EFBIG): no home is that big, a hostile one might be. */
#define MAX_BODY (16 * 1024 * 1024)
/* After the API could not be reached (no answer, timeout), other requests fail at once
 * for this long: a lookup that needs several expired resources then costs one `timeout`,
 * not one each. */
#define UNREACHABLE_MEMORY_US (2 * G_USEC_PER_SEC)
/* Parsed bodies kept for resource_json: a walk reads every file of a resource (a device's
 * device.json and each of its values) one after the other, so a few suffice; a bound in
 * count and in bytes of text keeps them from weighing on the memory a big cache takes. A
 * jansson tree weighs some ten times its text, so 32 bodies of 64 KiB would hold 20 MiB;
 * 256 KiB of text, a few big bodies or many small ones, holds under 3 MiB. */
#define JSON_MEMO_SIZE	   32
#define JSON_MEMO_MAX_BODY (64 * 1024)
#define JSON_MEMO_BYTES	   (256 * 1024)
/* A paged resource (a period of history) that needs more pages than this is refused
 * (-EIO): a cloud whose cursors never end must not spend the quota in one read. A day of
 * quarter hours is 96 points; even one point a page stays below it. */
#define MAX_PAGES 200
/* How long the kernel may keep what is made of an immutable resource: it never changes. */
#define IMMUTABLE_FRESH_S 86400.0
/* The cache key of an immutable resource's final copy: apart from the copies fetched
 * before it was final (today's file, which changed). */
#define FINAL_KEY_SUFFIX "#final"

struct json_memo {
	uint64_t gen; /* the cache's generation: names one body of one resource */
	json_t *json; /* NULL: an empty slot */
	size_t len;   /* the body's length, counted against JSON_MEMO_BYTES */
};

struct session {
	struct account account;
	const struct provider *provider;
	struct options opts;
	char *api_url;
	char *second_api_url; /* hops_url; NULL: the provider has no second host */
	char *auth_url;
	struct token_store store;
	struct http_client *http;
	struct auth *auth;
	struct cache *cache;
	gint64 started_at_s;	       /* unix */
	gint64 (*wall_clock_us)(void); /* unix µs: g_get_real_time, or a test's clock */
	char *reset_phase_file;	       /* where the learned reset phase is kept */
	char *clock_file;	       /* where the cloud's clock offset is kept */

	GMutex mutex;	    /* guards the fields below */
	uint64_t api_calls; /* answered requests to the API (auth not counted) */
	uint64_t api_errors;
	struct budget budget;	     /* what the API announced of its quota, and learned */
	long in_flight;		     /* API requests sent and not answered yet */
	bool login_expired;	     /* a refresh was refused: the user must log in again */
	gint64 login_expired_at_s;   /* unix */
	gint64 unreachable_until_us; /* monotonic: the API gave no answer just now */
	gint64 cloud_offset_us;	     /* the cloud's clock (its Date) minus wall_clock_us */
	int unreachable_error;
	char *last_error; /* a sentence */
	char *last_error_path;
	gint64 last_error_at_s; /* unix */
	GPtrArray *notes;	/* sentences: what the cloud sent that cannot be shown */
	char *last_stale_path;	/* the last stale copy served: which, when, why */
	gint64 last_stale_at_s; /* unix */
	int last_stale_error;

	GMutex json_lock;			    /* guards json_memo and json_memo_bytes */
	struct json_memo json_memo[JSON_MEMO_SIZE]; /* the most recently used first */
	size_t json_memo_bytes;			    /* the sum of the slots' len */
};

/* The cloud's clock (its Date) minus ours, as the last mount learned it, so that a new
 * mount's listings of history ("today") agree with the cloud before its first answer.
 * A missing or damaged file is 0: the first answer corrects it. */
static gint64 clock_offset_load(const char *file)
{
	g_autoptr(GKeyFile) kf = g_key_file_new();

	if (!g_key_file_load_from_file(kf, file, G_KEY_FILE_NONE, NULL))
		return 0;
	gint64 offset_s = g_key_file_get_int64(kf, "clock", "offset_s", NULL);
	/* The emulator's and a misset machine's clocks: years are a damaged file. */
	return ABS(offset_s) <= (gint64)HISTORY_MAX_DAYS * 86400 ? offset_s * G_USEC_PER_SEC : 0;
}

static void clock_offset_save(const char *file, gint64 offset_us)
{
	g_autofree char *dir = g_path_get_dirname(file);
	g_autofree char *text = g_strdup_printf(
	    "# smarthomefs: the cloud's clock (its Date header) minus this machine's, in s\n"
	    "[clock]\noffset_s=%" G_GINT64_FORMAT "\n",
	    offset_us / G_USEC_PER_SEC);

	if (g_mkdir_with_parents(dir, 0700) != 0 ||
	    !g_file_set_contents_full(file, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL))
		log_warn("could not keep the cloud's clock in %s", file);
}

struct session *session_new(const struct account *account, struct options *opts)
{
	struct session *s = g_new0(struct session, 1);
	const struct provider *p = account->provider;

	s->account.id = g_strdup(account->id);
	s->account.provider = p;
	s->provider = p;
	s->opts = *opts;
	memset(opts, 0, sizeof(*opts));
	s->api_url = g_strdup(s->opts.api_url ? s->opts.api_url : p->api_url);
	s->second_api_url = g_strdup(s->opts.hops_url ? s->opts.hops_url : p->second_api_url);
	s->notes = g_ptr_array_new_with_free_func(g_free);
	s->auth_url = g_strdup(s->opts.auth_url ? s->opts.auth_url : p->auth_url);
	options_token_store(&s->opts, &s->store);
	s->http = http_client_new(s->opts.cafile, s->opts.timeout, MAX_BODY, NULL);
	g_autofree char *cache_dir = options_cache_dir(&s->opts, s->account.id);
	s->cache = cache_new(cache_dir, s->opts.timeout);
	/* Pinned copies (finished periods of history) outlive no listing that could show
	 * them: history reaches HISTORY_MAX_DAYS back at most. */
	cache_set_pinned_max_age(s->cache, (gint64)HISTORY_MAX_DAYS * 86400);
	cache_set_bounds(s->cache, (uint64_t)MAX(s->opts.cache_memory_mib, 0) << 20,
			 (uint64_t)MAX(s->opts.cache_disk_mib, 0) << 20);
	s->wall_clock_us = g_get_real_time;
	s->started_at_s = g_get_real_time() / G_USEC_PER_SEC;
	g_mutex_init(&s->mutex);
	g_mutex_init(&s->json_lock);
	budget_init(&s->budget);
	g_autofree char *file_name = g_strdelimit(g_strdup(s->account.id), "/", '_');
	s->reset_phase_file = g_build_filename(s->store.state_dir, "quota", file_name, NULL);
	reset_phase_load(s->reset_phase_file, &s->budget.learned);
	s->clock_file = g_build_filename(s->store.state_dir, "clock", file_name, NULL);
	s->cloud_offset_us = clock_offset_load(s->clock_file);
	return s;
}

void session_free(struct session *s)
{
	if (!s)
		return;
	if (s->auth)
		auth_free(s->auth);
	cache_free(s->cache);
	http_client_free(s->http);
	g_free(s->api_url);
	g_free(s->second_api_url);
	g_ptr_array_unref(s->notes);
	g_free(s->auth_url);
	token_store_clear(&s->store);
	g_free(s->reset_phase_file);
	g_free(s->clock_file);
	g_free(s->last_error);
	g_free(s->last_error_path);
	g_free(s->last_stale_path);
	options_clear(&s->opts);
	account_clear(&s->account);
	g_mutex_clear(&s->mutex);
	for (size_t i = 0; i < JSON_MEMO_SIZE; i++)
		json_decref(s->json_memo[i].json);
	g_mutex_clear(&s->json_lock);
	g_free(s);
}

int session_start(struct session *s, GError **err)
{
	g_autofree char *lock_dir = options_lock_dir(&s->opts);

	s->auth = auth_new(s->account.id, s->provider, s->http, s->auth_url, &s->store, lock_dir);
	if (s->opts.offline) {
		/* Offline serves the disk cache; a missing login must not stop that. */
		g_autoptr(GError) ignored = NULL;
		auth_load(s->auth, &ignored);
		return 0;
	}
	return auth_load(s->auth, err);
}

const struct provider *session_provider(struct session *s)
{
	return s->provider;
}

const struct options *session_options(struct session *s)
{
	return &s->opts;
}

const char *session_account_id(struct session *s)
{
	return s->account.id;
}

void session_log_out(struct session *s)
{
	if (s->auth)
		auth_forget(s->auth);
}

char *session_cache_dir(struct session *s)
{
	return options_cache_dir(&s->opts, s->account.id);
}

void session_set_wall_clock(struct session *s, gint64 (*wall_clock_us)(void))
{
	s->wall_clock_us = wall_clock_us ? wall_clock_us : g_get_real_time;
}

/* Unix seconds on the session's wall clock, which the budget is reckoned by. */
static gint64 now_s(struct session *s)
{
	return s->wall_clock_us() / G_USEC_PER_SEC;
}

gint64 session_now_s(struct session *s)
{
	g_mutex_lock(&s->mutex);
	gint64 offset_us = s->cloud_offset_us;
	g_mutex_unlock(&s->mutex);
	return (s->wall_clock_us() + offset_us) / G_USEC_PER_SEC;
}

gint64 session_history_from_s(struct session *s, gint64 now)
{
	int days = s->opts.history_days;

	return days > 0 ? now - (gint64)(days - 1) * 86400 : G_MAXINT64;
}

/* Held through the work on one large body (session_large_begin); one for the process,
 * since a mount of all accounts has a session each. A static GMutex needs no init. */
static GMutex large_lock;

bool session_large_begin(size_t len)
{
	if (len <= SESSION_LARGE_BODY)
		return false;
	g_mutex_lock(&large_lock);
	return true;
}

void session_large_end(bool locked)
{
	if (locked)
		g_mutex_unlock(&large_lock);
}

void resource_clear(struct resource *r)
{
	g_clear_pointer(&r->bytes, g_bytes_unref);
}

/* The memo's tree of generation @gen (a new reference) moved to the front, or NULL.
 * Called with json_lock held. */
static json_t *json_memo_take(struct session *s, uint64_t gen)
{
	for (size_t i = 0; i < JSON_MEMO_SIZE && s->json_memo[i].json; i++) {
		if (s->json_memo[i].gen != gen)
			continue;
		struct json_memo hit = s->json_memo[i];
		memmove(&s->json_memo[1], &s->json_memo[0], i * sizeof(hit));
		s->json_memo[0] = hit;
		return json_incref(hit.json);
	}
	return NULL;
}

/* Puts @json (body of @len bytes, generation @gen) first, after making room in count and
 * bytes by taking out the least recently used; their trees go to @evicted, for the caller
 * to release outside the lock. Returns how many. Called with json_lock held. */
static size_t json_memo_put(struct session *s, uint64_t gen, json_t *json, size_t len,
			    json_t *evicted[JSON_MEMO_SIZE])
{
	size_t used = 0, n = 0;

	while (used < JSON_MEMO_SIZE && s->json_memo[used].json)
		used++;
	while (used > 0 && (used == JSON_MEMO_SIZE || s->json_memo_bytes + len > JSON_MEMO_BYTES)) {
		used--;
		s->json_memo_bytes -= s->json_memo[used].len;
		evicted[n++] = s->json_memo[used].json;
		s->json_memo[used] = (struct json_memo){0};
	}
	memmove(&s->json_memo[1], &s->json_memo[0], used * sizeof(s->json_memo[0]));
	s->json_memo[0] = (struct json_memo){gen, json_incref(json), len};
	s->json_memo_bytes += len;
	return n;
}

/* Keeps @json, the parse of generation @gen's body of @len bytes, unless the memo has
 * that generation already: then returns its tree (a new reference) and keeps nothing. */
static json_t *json_memo_offer(struct session *s, uint64_t gen, json_t *json, size_t len)
{
	json_t *known, *evicted[JSON_MEMO_SIZE];
	size_t n_evicted = 0;

	if (!gen || len > JSON_MEMO_MAX_BODY)
		return NULL;
	g_mutex_lock(&s->json_lock);
	known = json_memo_take(s, gen);
	if (!known)
		n_evicted = json_memo_put(s, gen, json, len, evicted);
	g_mutex_unlock(&s->json_lock);
	for (size_t i = 0; i < n_evicted; i++)
		json_decref(evicted[i]);
	return known;
}

json_t *resource_json(const struct resource *r)
{
	gsize len = 0;
	const char *data = r->bytes ? g_bytes_get_data(r->bytes, &len) : NULL;
	struct session *s = r->session;
	json_t *json, *known;

	if (!data)
		return NULL;
	/* Depth and size are bounded by jansson's own limit and MAX_BODY. */
	if (!s || !r->gen || len > JSON_MEMO_MAX_BODY)
		return provider_json_parse(data, len, NULL);
	g_mutex_lock(&s->json_lock);
	json = json_memo_take(s, r->gen);
	g_mutex_unlock(&s->json_lock);
	if (json)
		return json;
	/* Parsed without the lock; another thread may have done the same meanwhile. */
	json = provider_json_parse(data, len, NULL);
	if (!json)
		return NULL;
	known = json_memo_offer(s, r->gen, json, len);
	if (known) {
		json_decref(json);
		json = known;
	}
	return json;
}

static void session_note_error(struct session *s, const char *path, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void session_note_error(struct session *s, const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);

	g_mutex_lock(&s->mutex);
	g_free(s->last_error);
	g_free(s->last_error_path);
	s->last_error = g_strdup(msg);
	s->last_error_path = g_strdup(path);
	s->last_error_at_s = now_s(s);
	s->api_errors++;
	g_mutex_unlock(&s->mutex);
	log_warn("%s%s: %s", s->api_url, path, msg);
}

/* Takes note of the budget the answer announced; on 429, blocks calls until the refill.
 * A reset phase learned from it is kept in the state directory for the next mount. */
static void session_account_call(struct session *s, const struct http_response *resp)
{
	struct reset_phase learned;
	bool save;

	gint64 clock_moved_us = G_MININT64;

	g_mutex_lock(&s->mutex);
	/* Date has whole seconds: a jump under 2 s is its rounding, not the cloud's clock. */
	if (resp->date_s > 0) {
		gint64 offset_us = resp->date_s * G_USEC_PER_SEC - s->wall_clock_us();
		if (ABS(offset_us - s->cloud_offset_us) >= 2 * G_USEC_PER_SEC)
			s->cloud_offset_us = clock_moved_us = offset_us;
	}
	s->api_calls++;
	save = budget_note_answer(&s->budget, resp->status, resp->ratelimit, resp->ratelimit_policy,
				  resp->retry_after, s->in_flight, now_s(s));
	s->in_flight--;
	learned = s->budget.learned;
	g_mutex_unlock(&s->mutex);
	if (save && reset_phase_save(s->reset_phase_file, &learned) < 0)
		log_warn("could not keep the API budget's reset time in %s", s->reset_phase_file);
	if (clock_moved_us != G_MININT64)
		clock_offset_save(s->clock_file, clock_moved_us);
}

/* Whether a call may be sent now; if so, it counts as in flight until
 * session_account_call or session_call_failed. */
static bool session_call_begin(struct session *s, gint64 *until)
{
	bool ok;

	g_mutex_lock(&s->mutex);
	*until = budget_blocked_until(&s->budget, s->in_flight, now_s(s));
	ok = *until == 0;
	if (ok)
		s->in_flight++;
	g_mutex_unlock(&s->mutex);
	return ok;
}

static void session_call_failed(struct session *s)
{
	g_mutex_lock(&s->mutex);
	s->in_flight--;
	g_mutex_unlock(&s->mutex);
}

/* One session_get's fetch: the host it asks, and the body it fetched, parsed, so that
 * resource_json need not parse it again. */
struct fetch_call {
	struct session *s;
	const char *base_url; /* api_url or second_api_url */
	bool paged;	      /* follow the pages' next links (resource_ref.paged) */
	GBytes *body;	      /* a reference, or NULL */
	json_t *json;	      /* the body parsed, or NULL */
};

/* Keeps whether the login still holds: -EACCES from auth_bearer is a refused refresh;
 * any token handed out (after the user logged in again) means it holds. */
static void session_note_login(struct session *s, int r)
{
	if (r < 0 && r != -EACCES)
		return;
	g_mutex_lock(&s->mutex);
	if (r == -EACCES && !s->login_expired)
		s->login_expired_at_s = now_s(s);
	s->login_expired = r == -EACCES;
	g_mutex_unlock(&s->mutex);
}

/* One authorized GET, retried once after a refresh on 401: the body in *body and parsed
 * in *json (NULL for a 204, whose body is "null"). */
static int fetch_one(struct fetch_call *call, const char *path, GBytes **body, json_t **json_out)
{
	struct session *s = call->s;
	g_autofree char *url = g_strconcat(call->base_url, path, NULL);
	gint64 until;
	int r;

	g_mutex_lock(&s->mutex);
	r = g_get_monotonic_time() < s->unreachable_until_us ? s->unreachable_error : 0;
	g_mutex_unlock(&s->mutex);
	if (r < 0) {
		log_debug("GET %s not sent: the API did not answer a moment ago (%s)", path,
			  g_strerror(-r));
		return r;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		g_autofree char *token = NULL;
		struct http_response resp = {0};

		r = auth_bearer(s->auth, &token);
		session_note_login(s, r);
		if (r < 0) {
			session_note_error(s, path, "no valid login token (%s)%s", g_strerror(-r),
					   r == -EACCES ? ": run `smarthomefs login` again" : "");
			return r;
		}
		struct http_request req = {
		    .method = "GET",
		    .url = url,
		    .bearer = token,
		    .tries = 3,
		    .log_path = path,
		};
		if (!session_call_begin(s, &until)) {
			log_debug(
			    "GET %s not sent: the rate limit blocks calls for %" G_GINT64_FORMAT
			    " s more",
			    path, until - now_s(s));
			return -EAGAIN;
		}
		r = http_request(s->http, &req, &resp);
		if (r < 0) {
			session_call_failed(s);
			if (r != -EFBIG) {
				g_mutex_lock(&s->mutex);
				s->unreachable_until_us =
				    g_get_monotonic_time() + UNREACHABLE_MEMORY_US;
				s->unreachable_error = r;
				g_mutex_unlock(&s->mutex);
			}
			session_note_error(s, path, "request failed: %s", g_strerror(-r));
			return r == -EFBIG ? -EIO : r;
		}
		session_account_call(s, &resp);
		if (resp.status == 401 && attempt == 0) {
			auth_rejected(s->auth, token);
			http_response_clear(&resp);
			continue;
		}
		if (resp.status >= 200 && resp.status < 300) {
			gsize len = 0;
			const char *data = g_bytes_get_data(resp.body, &len);
			json_error_t jerr;
			bool large = session_large_begin(len);
			json_t *json = provider_json_parse(data, len, &jerr);
			bool valid = json != NULL;
			/* A tree the memo will not keep goes now, not after the disk write. */
			if (len > JSON_MEMO_MAX_BODY)
				g_clear_pointer(&json, json_decref);
			session_large_end(large);
			if (!valid && resp.status != 204) {
				session_note_error(s, path, "malformed answer: %s", jerr.text);
				http_response_clear(&resp);
				return -EIO;
			}
			if (resp.status == 204) {
				json_decref(json);
				*body = g_bytes_new_static("null", 4);
				*json_out = NULL;
			} else {
				*body = g_bytes_ref(resp.body);
				*json_out = json;
			}
			http_response_clear(&resp);
			return 0;
		}
		r = http_status_errno(resp.status);
		if (resp.status == 401)
			session_note_error(s, path,
					   "HTTP 401 after a token refresh: log in again with "
					   "`smarthomefs login %s`",
					   s->account.id);
		else if (resp.status == 429)
			session_note_error(s, path, "HTTP 429: the API's rate limit is spent");
		else if (resp.status != 404)
			session_note_error(s, path, "HTTP %ld", resp.status);
		http_response_clear(&resp);
		return r;
	}
	return -EACCES;
}

/* The API path a page's @link ("next") names, when it is the same resource as @first's
 * (same host, same path, another query); NULL for anything else: a cursor must not lead
 * the token to another host or resource. */
static char *page_path(const char *base_url, const char *link, const char *first)
{
	const char *scheme_end = strstr(base_url, "://");
	const char *base_path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;
	size_t first_len = strcspn(first, "?");
	const char *rest = NULL;

	if (!link || strspn(link, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				  "0123456789-._~:/?#[]@!$&'()*+,;=%") != strlen(link))
		return NULL;
	if (g_str_has_prefix(link, base_url))
		rest = link + strlen(base_url);
	else if (link[0] == '/' && base_path && g_str_has_prefix(link, base_path))
		rest = link + strlen(base_path);
	else if (link[0] == '/' && !base_path)
		rest = link;
	if (!rest || strncmp(rest, first, first_len) != 0 || rest[first_len] != '?' ||
	    strchr(rest, '#'))
		return NULL;
	return g_strdup(rest);
}

/* Fetches every page of @path, following "next", into one JSON array of the page
 * bodies as they came: at most MAX_PAGES pages and MAX_BODY bytes in all. */
static int fetch_pages(struct fetch_call *call, const char *path, GBytes **body)
{
	g_autoptr(GString) all = g_string_new("[");
	g_autofree char *at = g_strdup(path);
	int r = 0;

	for (int n = 0; at; n++) {
		GBytes *page = NULL;
		json_t *json = NULL;
		char *next = NULL;

		if (n == MAX_PAGES) {
			session_note_error(call->s, path, "more than %d pages: not read",
					   MAX_PAGES);
			return -EIO;
		}
		r = fetch_one(call, at, &page, &json);
		if (r < 0)
			return r;
		gsize len = 0;
		const char *data = g_bytes_get_data(page, &len);
		if (all->len + len + 2 > MAX_BODY) {
			session_note_error(call->s, path, "its pages weigh over %d MiB: not read",
					   MAX_BODY >> 20);
			json_decref(json);
			g_bytes_unref(page);
			return -EIO;
		}
		if (n)
			g_string_append_c(all, ',');
		g_string_append_len(all, data, (gssize)len);
		json_t *link = json_object_get(json, "next");
		json_t *points = json_object_get(json, "data");
		if (json_is_string(link) && json_array_size(points) > 0) {
			next = page_path(call->base_url, json_string_value(link), path);
			if (!next || strcmp(next, at) == 0) {
				g_autofree char *quoted =
				    provider_quote(json_string_value(link), 120);
				session_note_error(
				    call->s, path, "a page's next link \"%s\" %s", quoted,
				    next ? "names the same page" : "leaves the resource");
				g_free(next);
				r = -EIO;
			}
		}
		json_decref(json);
		g_bytes_unref(page);
		if (r < 0)
			return r;
		g_free(at);
		at = next;
	}
	g_string_append(all, "]");
	*body = g_string_free_to_bytes(g_steal_pointer(&all));
	return 0;
}

/* The cache's fetch function. */
static int session_fetch(void *ctx, const char *path, GBytes **body)
{
	struct fetch_call *call = ctx;
	json_t *json = NULL;
	int r;

	if (call->paged)
		return fetch_pages(call, path, body);
	r = fetch_one(call, path, body, &json);
	if (r == 0 && json) {
		call->body = g_bytes_ref(*body);
		call->json = json;
	}
	return r;
}

int session_ttl(struct session *s, const struct resource_ref *ref)
{
	/* A ttl the user set is meant for every file; otherwise each resource has its own,
	 * after how often it changes (docs/reliability.md). */
	int ttl = s->opts.ttl >= 0 ? s->opts.ttl
		  : ref->ttl > 0   ? ref->ttl
				   : s->provider->default_ttl;
	struct cache_stats cs;

	cache_get_stats(s->cache, &cs);
	g_mutex_lock(&s->mutex);
	ttl = budget_stretch_ttl(&s->budget, ttl, (long)cs.entries, now_s(s));
	g_mutex_unlock(&s->mutex);
	return ttl;
}

/* Says that a stale copy of @path was served: in status.json always, in the log once a
 * minute per path at most (a reader polling through an outage must not flood it). */
static void session_note_stale(struct session *s, const char *path, int error)
{
	gint64 now = now_s(s);
	bool say;

	g_mutex_lock(&s->mutex);
	say = g_strcmp0(s->last_stale_path, path) != 0 || now - s->last_stale_at_s >= 60;
	g_free(s->last_stale_path);
	s->last_stale_path = g_strdup(path);
	s->last_stale_at_s = now;
	s->last_stale_error = error;
	g_mutex_unlock(&s->mutex);
	if (say)
		log_warn("%s%s: serving the last good copy (a stale copy) because %s", s->api_url,
			 path,
			 error == -EAGAIN ? "the rate limit blocks calls" : g_strerror(-error));
}

/* @out made from cache answer @hit (which keeps its own reference). */
static void resource_from_hit(struct session *s, const struct cache_hit *hit, struct resource *out)
{
	memset(out, 0, sizeof(*out));
	out->bytes = g_bytes_ref(hit->body);
	out->gen = hit->gen;
	out->changed_at_us = hit->changed_at_us;
	out->stale = hit->stale;
	out->session = s;
}

/* Whether @ref is final now: immutable, and its time and its settling are past on the
 * cloud's clock. */
static bool ref_final(struct session *s, const struct resource_ref *ref)
{
	return ref->immutable_at_s > 0 &&
	       session_now_s(s) >= ref->immutable_at_s + MAX(ref->settle_s, 0);
}

/* The cache key of @ref (g_free): its final copy's once it is final. */
static char *ref_key(struct session *s, const struct resource_ref *ref)
{
	const char *key = ref->key ? ref->key : ref->path;

	return ref_final(s, ref) ? g_strconcat(key, FINAL_KEY_SUFFIX, NULL) : g_strdup(key);
}

bool session_history_filled(struct session *s)
{
	return s->provider->quota_is_scarce && s->opts.history_days > 0 &&
	       s->opts.history_budget > 0 && !s->opts.offline;
}

/* The key of the copy @ref had before it was final (g_free), when that is what a read of
 * it has: @ref is final, its final copy is not held yet, and the earlier one is (the file
 * of a day while it was today's). NULL otherwise. */
static char *earlier_key(struct session *s, const struct resource_ref *ref)
{
	const char *key = ref->key ? ref->key : ref->path;

	if (!ref_final(s, ref))
		return NULL;
	g_autofree char *final = g_strconcat(key, FINAL_KEY_SUFFIX, NULL);
	if (cache_holds(s->cache, final) || !cache_holds(s->cache, key))
		return NULL;
	return g_strdup(key);
}

/* @ref's copy under @key from before it was final, without a call (memory or disk). */
static int get_earlier(struct session *s, const struct resource_ref *ref, const char *key,
		       struct resource *out)
{
	struct cache_hit hit;
	/* Offline and fresh for as long as a copy can be: never a fetch. */
	int r = cache_get(s->cache, key, ref->path, G_MAXINT, true, session_fetch, NULL, &hit);

	memset(out, 0, sizeof(*out));
	if (r < 0)
		return r;
	/* With its own change time, not the end (no fixed_time): on a mount that never
	 * showed this file, the final copy, whose mtime is the end, must still look newer
	 * (stamps_change). */
	resource_from_hit(s, &hit, out);
	/* Its final copy replaces it once fetched: the kernel asks again soon, at no cost. */
	out->fresh_for_s = 1;
	cache_hit_clear(&hit);
	return 0;
}

/* session_get; with @latest, a final resource is fetched when its final copy is not held,
 * never answered with the copy from before. */
static int get(struct session *s, const struct resource_ref *ref, struct resource *out, bool latest)
{
	bool final = ref_final(s, ref);
	g_autofree char *key = ref_key(s, ref);
	g_autofree char *earlier = latest ? NULL : earlier_key(s, ref);
	struct cache_hit hit = {0};
	struct fetch_call call = {.s = s,
				  .base_url =
				      ref->base == API_BASE_SECOND ? s->second_api_url : s->api_url,
				  .paged = ref->paged};
	int ttl = session_ttl(s, ref);
	uint64_t fetches_before = 0;
	struct cache_stats cs;
	int r;

	/* A period that ended while it was listed stays what it was until the history fill
	 * fetches its final copy (within its budget): a read spends no call on it. */
	if (earlier && session_history_filled(s) && get_earlier(s, ref, earlier, out) == 0)
		return 0;
	if (final) {
		cache_get_stats(s->cache, &cs);
		fetches_before = cs.fetches;
	}
	r = !call.base_url ? -ENOENT
	    : final ? cache_get_pinned(s->cache, key, ref->path, s->opts.offline, session_fetch,
				       &call, &hit)
		    : cache_get(s->cache, key, ref->path, ttl, s->opts.offline, session_fetch,
				&call, &hit);

	memset(out, 0, sizeof(*out));
	/* The cache kept the very bytes this call fetched (not an equal older copy, whose
	 * tree the memo may hold already): their parse is the generation's. */
	if (r == 0 && call.json && hit.body == call.body)
		json_decref(json_memo_offer(s, hit.gen, call.json, g_bytes_get_size(hit.body)));
	json_decref(call.json);
	if (call.body)
		g_bytes_unref(call.body);
	/* No fill (offline, history_budget=0) and no final copy to be had now: the earlier
	 * copy beats none, as a stale copy does. */
	if (r < 0 && earlier && r != -ENOENT && r != -EACCES &&
	    get_earlier(s, ref, earlier, out) == 0)
		return 0;
	if (r < 0)
		return r;
	resource_from_hit(s, &hit, out);
	if (final) {
		/* Fetched once for good: the copies from before it was final go. */
		cache_get_stats(s->cache, &cs);
		if (cs.fetches != fetches_before)
			cache_forget(s->cache, ref->key ? ref->key : ref->path);
		out->fresh_for_s = IMMUTABLE_FRESH_S;
	} else if (hit.stale) {
		out->fresh_for_s = 1;
	} else {
		double age = (double)(g_get_monotonic_time() - hit.fetched_at_us) / G_USEC_PER_SEC;
		out->fresh_for_s = MAX(ttl - age, 0);
	}
	/* Ended (final, or still settling): its time is its files' change time. */
	if (ref->immutable_at_s > 0 && session_now_s(s) >= ref->immutable_at_s) {
		out->fixed_time = true;
		out->changed_at_us = ref->immutable_at_s * G_USEC_PER_SEC;
	}
	if (hit.stale && !s->opts.offline)
		session_note_stale(s, ref->path, hit.error);
	cache_hit_clear(&hit);
	return 0;
}

int session_get(struct session *s, const struct resource_ref *ref, struct resource *out)
{
	return get(s, ref, out, false);
}

int session_get_latest(struct session *s, const struct resource_ref *ref, struct resource *out)
{
	return get(s, ref, out, true);
}

int session_get_cached(struct session *s, const struct resource_ref *ref, struct resource *out)
{
	struct cache_hit hit;
	bool fresh;

	memset(out, 0, sizeof(*out));
	if (s->opts.offline)
		return session_get(s, ref, out); /* never fetches */
	g_autofree char *earlier = session_history_filled(s) ? earlier_key(s, ref) : NULL;
	g_autofree char *key = earlier ? g_strdup(earlier) : ref_key(s, ref);
	if (cache_peek(s->cache, key, &hit) < 0)
		return -EINPROGRESS;
	int ttl_s = session_ttl(s, ref);
	fresh = !hit.stale && ttl_s > 0 &&
		g_get_monotonic_time() - hit.fetched_at_us < (gint64)ttl_s * G_USEC_PER_SEC;
	/* A final copy in memory is fresh for good; an earlier one is read without a call. */
	fresh = fresh || ref_final(s, ref);
	cache_hit_clear(&hit);
	return fresh ? session_get(s, ref, out) : -EINPROGRESS;
}

bool session_holds(struct session *s, const struct resource_ref *ref)
{
	/* Else a final period whose final copy is not here yet holds the copy it had before
	 * (earlier_key). */
	return session_holds_latest(s, ref) ||
	       (ref_final(s, ref) && cache_holds(s->cache, ref->key ? ref->key : ref->path));
}

bool session_holds_latest(struct session *s, const struct resource_ref *ref)
{
	g_autofree char *key = ref_key(s, ref);

	return cache_holds(s->cache, key);
}

bool session_background_allows(struct session *s)
{
	bool ok;

	g_mutex_lock(&s->mutex);
	ok = budget_background_allows(&s->budget, s->opts.history_budget, s->in_flight, now_s(s));
	g_mutex_unlock(&s->mutex);
	return ok;
}

long session_budget_remaining(struct session *s)
{
	g_mutex_lock(&s->mutex);
	long remaining = s->budget.last.remaining;
	g_mutex_unlock(&s->mutex);
	return remaining;
}

void session_forget(struct session *s, const struct resource_ref *ref)
{
	const char *key = ref->key ? ref->key : ref->path;

	cache_forget(s->cache, key);
	if (ref->immutable_at_s > 0) {
		g_autofree char *final = g_strconcat(key, FINAL_KEY_SUFFIX, NULL);
		cache_forget(s->cache, final);
	}
}

int session_peek(struct session *s, const struct resource_ref *ref, struct resource *out)
{
	struct cache_hit hit;
	g_autofree char *key = ref_key(s, ref);
	int r = cache_peek(s->cache, key, &hit);
	bool earlier = false;

	/* A final period whose final copy is not here yet has the earlier one's bytes, and
	 * their time (get_earlier). */
	if (r < 0 && ref_final(s, ref)) {
		r = cache_peek(s->cache, ref->key ? ref->key : ref->path, &hit);
		earlier = true;
	}
	memset(out, 0, sizeof(*out));
	if (r < 0)
		return r;
	resource_from_hit(s, &hit, out);
	if (!earlier && ref->immutable_at_s > 0 && session_now_s(s) >= ref->immutable_at_s) {
		out->fixed_time = true;
		out->changed_at_us = ref->immutable_at_s * G_USEC_PER_SEC;
	}
	cache_hit_clear(&hit);
	return 0;
}

/* Logs @note the first time it is noted, and keeps it for status.json. */
static void session_note(struct session *s, const char *note)
{
	bool known = false;

	g_mutex_lock(&s->mutex);
	for (guint i = 0; i < s->notes->len && !known; i++)
		known = strcmp(g_ptr_array_index(s->notes, i), note) == 0;
	if (!known)
		g_ptr_array_add(s->notes, g_strdup(note));
	g_mutex_unlock(&s->mutex);
	if (!known)
		log_warn("%s", note);
}

/* A provider needs at most this many resources read to say which one a path is made of
 * (tado: a home's zone list, then the home). */
#define MAX_CONTEXTS 3

int session_source(struct session *s, const struct provider_path *path, struct resource_ref *ref,
		   bool peek)
{
	int r = s->provider->source(path, ref);

	for (int depth = 0; r == 0 && ref->context; depth++) {
		struct resource_ref *context = g_steal_pointer(&ref->context);
		struct resource res = {0};
		g_autofree char *note = NULL;

		resource_ref_clear(ref);
		r = depth == MAX_CONTEXTS || !s->provider->source_in ? -EIO
		    : peek ? session_peek(s, context, &res)
			   : session_get(s, context, &res);
		if (r == 0) {
			json_t *body = resource_json(&res);
			r = body ? s->provider->source_in(path, body, ref, &note) : -EIO;
			json_decref(body);
		}
		if (note)
			session_note(s, note);
		resource_clear(&res);
		resource_ref_clear(context);
		g_free(context);
	}
	if (r < 0)
		resource_ref_clear(ref);
	return r;
}

static json_t *json_time(gint64 unix_s)
{
	g_autofree char *t = iso_time_utc(unix_s);
	return t ? json_string(t) : json_null();
}

static json_t *json_count(long v)
{
	return v >= 0 ? json_integer(v) : json_null();
}

/* Everything status.json and metrics show, gathered once. */
struct session_snapshot {
	struct cache_stats cache;
	uint64_t api_calls, api_errors;
	struct ratelimit budget;
	gint64 refill_at_s, blocked_until_s;
	enum refill_source refill_source;
	bool login_expired;
	gint64 login_expired_at_s;
	char *last_error, *last_error_path;
	gint64 last_error_at_s;
	gint64 token_expires_at;
	unsigned refreshes;
	char *last_stale_path;
	gint64 last_stale_at_s;
	int last_stale_error;
};

static void session_snapshot(struct session *s, struct session_snapshot *snap)
{
	memset(snap, 0, sizeof(*snap));
	cache_get_stats(s->cache, &snap->cache);
	g_mutex_lock(&s->mutex);
	snap->api_calls = s->api_calls;
	snap->api_errors = s->api_errors;
	snap->budget = s->budget.last;
	snap->refill_at_s = budget_refill_at(&s->budget, &snap->refill_source);
	snap->blocked_until_s = budget_blocked_until(&s->budget, 0, now_s(s));
	snap->login_expired = s->login_expired;
	snap->login_expired_at_s = s->login_expired_at_s;
	snap->last_error = g_strdup(s->last_error);
	snap->last_error_path = g_strdup(s->last_error_path);
	snap->last_error_at_s = s->last_error_at_s;
	snap->last_stale_path = g_strdup(s->last_stale_path);
	snap->last_stale_at_s = s->last_stale_at_s;
	snap->last_stale_error = s->last_stale_error;
	g_mutex_unlock(&s->mutex);
	snap->token_expires_at = s->auth ? auth_expires_at_s(s->auth) : 0;
	snap->refreshes = s->auth ? auth_refresh_count(s->auth) : 0;
}

static void session_snapshot_clear(struct session_snapshot *snap)
{
	g_free(snap->last_error);
	g_free(snap->last_error_path);
	g_free(snap->last_stale_path);
}

json_t *session_status_json(struct session *s)
{
	struct session_snapshot snap;
	session_snapshot(s, &snap);

	json_t *root = json_pack(
	    "{s:s, s:s, s:s, s:o, s:b, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:{s:o, s:o, s:o, s:o, s:s?, s:o}, s:{s:o, s:s, s:I}, s:{s:b, s:o}}",
	    "account", s->account.id, "provider", s->provider->name, "api_url", s->api_url,
	    "mounted_since", json_time(s->started_at_s), "offline", s->opts.offline, "api_calls",
	    (json_int_t)snap.api_calls, "api_errors", (json_int_t)snap.api_errors, "cache", "hits",
	    (json_int_t)snap.cache.hits, "fetches", (json_int_t)snap.cache.fetches, "stale_served",
	    (json_int_t)snap.cache.stale_served, "errors", (json_int_t)snap.cache.errors, "entries",
	    (json_int_t)snap.cache.entries, "bytes", (json_int_t)snap.cache.bytes, "rate_limit",
	    "quota", json_count(snap.budget.quota), "window_seconds",
	    json_count(snap.budget.window_s), "remaining", json_count(snap.budget.remaining),
	    "refill_at", json_time(snap.refill_at_s), "refill_source",
	    refill_source_name(snap.refill_source), "blocked_until",
	    json_time(snap.blocked_until_s), "token", "expires_at",
	    json_time(snap.token_expires_at), "store", token_store_name(s->store.kind), "refreshes",
	    (json_int_t)snap.refreshes, "login", "expired", snap.login_expired, "expired_at",
	    json_time(snap.login_expired ? snap.login_expired_at_s : 0));
	json_t *err = snap.last_error
			  ? json_pack("{s:s, s:s?, s:o}", "message", snap.last_error, "path",
				      snap.last_error_path, "at", json_time(snap.last_error_at_s))
			  : json_null();
	json_t *cache = json_object_get(root, "cache");
	json_object_set_new(cache, "evictions", json_integer((json_int_t)snap.cache.evictions));
	json_object_set_new(cache, "disk_bytes", json_integer((json_int_t)snap.cache.disk_bytes));
	json_object_set_new(cache, "pinned_bytes",
			    json_integer((json_int_t)snap.cache.pinned_bytes));
	json_object_set_new(root, "last_error", err);
	json_t *stale = snap.last_stale_path
			    ? json_pack("{s:s, s:o, s:s}", "path", snap.last_stale_path, "at",
					json_time(snap.last_stale_at_s), "reason",
					g_strerror(-snap.last_stale_error))
			    : json_null();
	json_object_set_new(root, "last_stale", stale);
	json_t *notes = json_array();
	g_mutex_lock(&s->mutex);
	for (guint i = 0; i < s->notes->len; i++)
		json_array_append_new(notes, json_string(g_ptr_array_index(s->notes, i)));
	g_mutex_unlock(&s->mutex);
	json_object_set_new(root, "notes", notes);
	/* When the login ends unless refreshed; `smarthomefs status` reads login.expired. */
	json_object_set_new(json_object_get(root, "login"), "expires_at",
			    json_time(s->auth ? auth_login_expires_at_s(s->auth) : 0));
	/* main.c turns core dumps off: show that it holds in the process with the tokens. */
	json_object_set_new(root, "dumpable", json_boolean(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) > 0));
	session_snapshot_clear(&snap);
	return root;
}

void session_render_status(struct session *s, GString *out)
{
	json_t *root = session_status_json(s);

	provider_render_json(root, out);
	json_decref(root);
}

/* One metric family: its HELP and TYPE once, then one sample per account (the text
 * format allows no second HELP line for a name). */
static void metric(GString *out, const char *name, const char *type, const char *help,
		   struct session *const *s, const struct session_snapshot *snap, size_t n,
		   double (*value)(const struct session_snapshot *snap))
{
	bool any = false;

	for (size_t i = 0; i < n; i++) {
		double v = value(&snap[i]);
		if (v < 0)
			continue; /* unknown for this account */
		if (!any)
			g_string_append_printf(out, "# HELP smarthomefs_%s %s\n# TYPE smarthomefs_%s %s\n",
					       name, help, name, type);
		any = true;
		g_string_append_printf(out, "smarthomefs_%s{account=\"%s\"} %.17g\n", name,
				       s[i]->account.id, v);
	}
}

static double m_api_calls(const struct session_snapshot *x) { return (double)x->api_calls; }
static double m_api_errors(const struct session_snapshot *x) { return (double)x->api_errors; }
static double m_hits(const struct session_snapshot *x) { return (double)x->cache.hits; }
static double m_stale(const struct session_snapshot *x) { return (double)x->cache.stale_served; }
static double m_entries(const struct session_snapshot *x) { return (double)x->cache.entries; }
static double m_bytes(const struct session_snapshot *x) { return (double)x->cache.bytes; }
static double m_remaining(const struct session_snapshot *x) { return (double)x->budget.remaining; }
static double m_quota(const struct session_snapshot *x) { return (double)x->budget.quota; }
static double m_refill(const struct session_snapshot *x)
{
	return x->refill_at_s > 0 ? (double)x->refill_at_s : -1;
}
static double m_token_expiry(const struct session_snapshot *x)
{
	return (double)x->token_expires_at;
}
static double m_refreshes(const struct session_snapshot *x) { return (double)x->refreshes; }
static double m_login_expired(const struct session_snapshot *x) { return x->login_expired; }

void session_render_metrics(struct session *const *s, size_t n, GString *out)
{
	struct session_snapshot *snap = g_new0(struct session_snapshot, n);

	for (size_t i = 0; i < n; i++)
		session_snapshot(s[i], &snap[i]);
	metric(out, "api_calls_total", "counter", "Requests answered by the cloud's API.", s, snap,
	       n, m_api_calls);
	metric(out, "api_errors_total", "counter", "Failed API requests.", s, snap, n,
	       m_api_errors);
	metric(out, "cache_hits_total", "counter", "Reads served from the cache.", s, snap, n,
	       m_hits);
	metric(out, "cache_stale_served_total", "counter",
	       "Reads served from a stale copy after an error.", s, snap, n, m_stale);
	metric(out, "cache_entries", "gauge", "Resources cached.", s, snap, n, m_entries);
	metric(out, "cache_bytes", "gauge", "Bytes of cached bodies.", s, snap, n, m_bytes);
	metric(out, "rate_limit_remaining", "gauge", "API calls left in the window.", s, snap, n,
	       m_remaining);
	metric(out, "rate_limit_quota", "gauge", "API calls allowed per window.", s, snap, n,
	       m_quota);
	metric(out, "rate_limit_refill_timestamp_seconds", "gauge", "When the API budget refills.",
	       s, snap, n, m_refill);
	metric(out, "token_expiry_timestamp_seconds", "gauge", "When the access token expires.", s,
	       snap, n, m_token_expiry);
	metric(out, "token_refreshes_total", "counter", "Access token refreshes.", s, snap, n,
	       m_refreshes);
	metric(out, "login_expired", "gauge",
	       "1 when the login ended (a refresh was refused): run smarthomefs login.", s, snap, n,
	       m_login_expired);
	for (size_t i = 0; i < n; i++)
		session_snapshot_clear(&snap[i]);
	g_free(snap);
}
