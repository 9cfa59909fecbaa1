/* session: the parsed bodies resource_json keeps, and how much they may weigh; the road
 * to the cloud (budget, TTL stretch, 401 retry) against a loopback API with a fake clock. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "auth.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "keyring.h"
#include "provider.h"
#include "session.h"
#include "fake_http.h"
#include "fake_login.h"

struct fixture {
	char *dir;
	struct session *session;
};

static void fixture_set_up(struct fixture *f, gconstpointer data)
{
	struct account account = {0};
	struct options opts;

	f->dir = g_dir_make_tmp("smarthomefs-session-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	g_assert_cmpint(account_parse("tibber", &account, NULL), ==, 0);
	options_init(&opts);
	opts.cache_dir = g_build_filename(f->dir, "cache", NULL);
	opts.state_dir = g_build_filename(f->dir, "state", NULL);
	f->session = session_new(&account, &opts);
	account_clear(&account);
}

static void fixture_tear_down(struct fixture *f, gconstpointer data)
{
	session_free(f->session);
	g_autofree char *cache = g_build_filename(f->dir, "cache", NULL);
	g_rmdir(cache);
	g_rmdir(f->dir);
	g_free(f->dir);
}

/* A resource of generation @gen whose body is a JSON object of about @len bytes. */
static struct resource resource_of(struct fixture *f, uint64_t gen, size_t len)
{
	GString *body = g_string_new("{\"id\": \"");
	while (body->len < len - 2)
		g_string_append_c(body, 'x');
	g_string_append(body, "\"}");
	return (struct resource){
	    .bytes = g_string_free_to_bytes(body), .gen = gen, .session = f->session};
}

/* Whether resource_json gives the tree it gave before (kept) or parses anew; @first stays
 * referenced, so a new parse cannot land at the same address. */
static bool kept(struct resource *r, json_t *first)
{
	json_t *again = resource_json(r);
	bool same = again == first;
	json_decref(again);
	return same;
}

static void test_recent_small_bodies_are_parsed_once(struct fixture *f, gconstpointer data)
{
	struct resource r[32];
	json_t *first[32];

	for (size_t i = 0; i < 32; i++) {
		r[i] = resource_of(f, i + 1, 2048);
		first[i] = resource_json(&r[i]);
		g_assert_nonnull(first[i]);
	}
	for (size_t i = 0; i < 32; i++)
		g_assert_true(kept(&r[i], first[i]));
	for (size_t i = 0; i < 32; i++) {
		json_decref(first[i]);
		resource_clear(&r[i]);
	}
}

static void test_big_bodies_keep_at_most_256_kib_of_text(struct fixture *f, gconstpointer data)
{
	/* Five bodies of 60 KiB: all five would hold 300 KiB of text, so the oldest goes,
	 * though the memo has slots left. */
	struct resource r[5];
	json_t *first[5];

	for (size_t i = 0; i < 5; i++) {
		r[i] = resource_of(f, i + 1, 60 * 1024);
		first[i] = resource_json(&r[i]);
		g_assert_nonnull(first[i]);
	}
	g_assert_false(kept(&r[0], first[0]));
	/* Parsing the first again pushed out the next oldest; the newest stayed. */
	g_assert_false(kept(&r[1], first[1]));
	g_assert_true(kept(&r[4], first[4]));
	for (size_t i = 0; i < 5; i++) {
		json_decref(first[i]);
		resource_clear(&r[i]);
	}
}

/* ---- the road to a loopback API ---- */

#define ACCOUNT "testcloud:home"

static const struct provider test_provider = {
    .name = "testcloud",
    .title = "Testcloud",
    .login = LOGIN_DEVICE_CODE,
    .client_id = "public-client",
    .token_path = "/token",
    .default_ttl = 60,
};

/* An API and its token endpoint. API answers carry @ratelimit (a RateLimit header value)
 * and @retry_after when set; @status, when set, answers every API request; the token
 * endpoint rotates RT-<n> into AT-<n+1>/RT-<n+1>. */
struct cloud {
	GMutex lock;
	char *ratelimit;
	char *retry_after;
	int status;
	int api_token;	/* the API takes AT-<api_token> only (-1: none) */
	int generation; /* the token endpoint takes RT-<generation> */
	int api_requests;
	int token_requests;
	char *base; /* the server's URL, for the pages' next links */
	char *date; /* a Date header for every answer, or NULL */
};

static void cloud_handler(const struct fake_request *req, int *status, GString *headers,
			  GString *body, void *data)
{
	struct cloud *c = data;

	g_mutex_lock(&c->lock);
	if (g_str_has_prefix(req->target, "/token")) {
		g_autofree char *rt = http_form_get(req->body, "refresh_token");
		g_autofree char *valid = g_strdup_printf("RT-%d", c->generation);
		c->token_requests++;
		if (g_strcmp0(rt, valid) != 0) {
			*status = 400;
			g_string_append(body, "{\"error\":\"invalid_grant\"}");
		} else {
			c->generation++;
			g_string_append_printf(body,
					       "{\"access_token\":\"AT-%d\",\"refresh_token\":"
					       "\"RT-%d\",\"expires_in\":600}",
					       c->generation, c->generation);
		}
		g_mutex_unlock(&c->lock);
		return;
	}
	g_autofree char *bearer = g_strdup_printf("Authorization: Bearer AT-%d\r\n", c->api_token);
	c->api_requests++;
	if (c->ratelimit)
		g_string_append_printf(headers, "RateLimit: %s\r\n", c->ratelimit);
	if (c->retry_after)
		g_string_append_printf(headers, "Retry-After: %s\r\n", c->retry_after);
	if (c->date)
		g_string_append_printf(headers, "Date: %s\r\n", c->date);
	if (!strstr(req->headers, bearer)) {
		*status = 401;
		g_string_append(body, "{\"error\":\"unauthorized\"}");
	} else if (g_str_has_prefix(req->target, "/pages?at=")) {
		/* Three pages; /pages?at=N&to=URL sends page N's next to URL instead. */
		int at = atoi(req->target + strlen("/pages?at="));
		const char *to = strstr(req->target, "&to=");
		g_autofree char *next = to ? g_strdup(to + 4)
					: at < 2
					    ? g_strdup_printf("\"%s/pages?at=%d\"", c->base, at + 1)
					    : g_strdup("null");
		g_string_append_printf(body, "{\"data\": [{\"n\": %d}], \"next\": %s}", at, next);
	} else if (c->status) {
		*status = c->status;
		g_string_append(body, "{}");
	} else {
		g_string_append_printf(body, "{\"path\": \"%s\"}", req->target);
	}
	g_mutex_unlock(&c->lock);
}

static void cloud_set(struct cloud *c, const char *ratelimit, const char *retry_after, int status)
{
	g_mutex_lock(&c->lock);
	g_free(c->ratelimit);
	g_free(c->retry_after);
	c->ratelimit = g_strdup(ratelimit);
	c->retry_after = g_strdup(retry_after);
	c->status = status;
	g_mutex_unlock(&c->lock);
}

static int cloud_api_requests(struct cloud *c)
{
	g_mutex_lock(&c->lock);
	int n = c->api_requests;
	g_mutex_unlock(&c->lock);
	return n;
}

/* The wall clock the session reckons its budget by: moved by the tests only. */
static gint64 fake_now_us;

static gint64 fake_clock(void)
{
	return fake_now_us;
}

struct road {
	char *dir;
	struct cloud cloud;
	struct fake_server *srv;
	struct session *session;
};

/* test_provider with a scarce quota: its history is filled in the background. */
static const struct provider scarce_provider = {
    .name = "testcloud",
    .title = "Testcloud",
    .login = LOGIN_DEVICE_CODE,
    .client_id = "public-client",
    .token_path = "/token",
    .default_ttl = 60,
    .quota_is_scarce = true,
};

/* @data: the provider (NULL: test_provider). */
static void road_set_up(struct road *f, gconstpointer data)
{
	struct account account = {.id = g_strdup(ACCOUNT),
				  .provider = data ? data : &test_provider};
	struct options opts;

	f->dir = g_dir_make_tmp("smarthomefs-road-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	g_mutex_init(&f->cloud.lock);
	f->srv = fake_server_start(cloud_handler, &f->cloud);
	f->cloud.base = fake_server_url(f->srv, "");
	options_init(&opts);
	opts.api_url = fake_server_url(f->srv, "");
	opts.auth_url = fake_server_url(f->srv, "");
	opts.cache_dir = g_build_filename(f->dir, "cache", NULL);
	opts.state_dir = g_build_filename(f->dir, "state", NULL);
	opts.token_store = TOKEN_STORE_FILE;
	opts.timeout = 5;

	/* A login: AT-0 valid for long, RT-0 to refresh it. */
	struct token_store store = {.kind = TOKEN_STORE_FILE, .state_dir = opts.state_dir};
	fake_login_save(&store, ACCOUNT, "testcloud", "AT-0", "RT-0", NULL);

	f->session = session_new(&account, &opts);
	account_clear(&account);
	fake_now_us = G_GINT64_CONSTANT(1800000000) * G_USEC_PER_SEC;
	session_set_wall_clock(f->session, fake_clock);
	GError *err = NULL;
	g_assert_cmpint(session_start(f->session, &err), ==, 0);
	g_assert_no_error(err);
}

static void road_tear_down(struct road *f, gconstpointer data)
{
	session_free(f->session);
	fake_server_stop(f->srv);
	g_free(f->cloud.ratelimit);
	g_free(f->cloud.retry_after);
	g_free(f->cloud.base);
	g_free(f->cloud.date);
	g_mutex_clear(&f->cloud.lock);
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
	g_assert_cmpint(system(cmd), ==, 0);
	g_free(f->dir);
}

/* Reads API path @path through the session: 0 or its negative errno. */
static int road_get(struct road *f, const char *path)
{
	struct resource_ref ref = {.path = (char *)path};
	struct resource res = {0};
	int r = session_get(f->session, &ref, &res);

	resource_clear(&res);
	return r;
}

static int road_ttl(struct road *f)
{
	struct resource_ref ref = {.path = "/any"};
	return session_ttl(f->session, &ref);
}

static void test_ttl_stretches_over_what_is_left_until_the_refill(struct road *f,
								  gconstpointer data)
{
	/* 12 calls left, an hour to the refill, 2 kept aside: 5 resources read in a loop
	 * may cost a call each every 5 × 3600 / 10 s. */
	cloud_set(&f->cloud, "\"perday\";r=12;t=3600", NULL, 0);
	g_assert_cmpint(road_ttl(f), ==, 60);
	for (int i = 1; i <= 5; i++) {
		g_autofree char *path = g_strdup_printf("/r/%d", i);
		g_assert_cmpint(road_get(f, path), ==, 0);
	}
	g_assert_cmpint(road_ttl(f), ==, 1800);
	/* Half an hour on, the same calls last half the time. */
	fake_now_us += 1800 * G_USEC_PER_SEC;
	g_assert_cmpint(road_ttl(f), ==, 900);
	/* Past the refill the resource's own TTL holds again. */
	fake_now_us += 1801 * G_USEC_PER_SEC;
	g_assert_cmpint(road_ttl(f), ==, 60);
}

static void test_a_spent_budget_sends_nothing_until_the_refill(struct road *f, gconstpointer data)
{
	cloud_set(&f->cloud, "\"perday\";r=0;t=100", NULL, 0);
	g_assert_cmpint(road_get(f, "/r/1"), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	/* No call left: a new resource gets EAGAIN, and the cloud sees nothing. */
	g_assert_cmpint(road_get(f, "/r/2"), ==, -EAGAIN);
	fake_now_us += 99 * G_USEC_PER_SEC;
	g_assert_cmpint(road_get(f, "/r/3"), ==, -EAGAIN);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	/* Refilled. */
	cloud_set(&f->cloud, "\"perday\";r=50;t=86300", NULL, 0);
	fake_now_us += 2 * G_USEC_PER_SEC;
	g_assert_cmpint(road_get(f, "/r/4"), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
}

static void test_a_401_refreshes_once_and_retries(struct road *f, gconstpointer data)
{
	/* The API no longer takes AT-0, though it has not expired (revoked early): one
	 * refresh (RT-0 → AT-1), one retry, and the reader gets the body. */
	g_mutex_lock(&f->cloud.lock);
	f->cloud.api_token = 1;
	g_mutex_unlock(&f->cloud.lock);
	g_assert_cmpint(road_get(f, "/r/1"), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
	g_assert_cmpint(f->cloud.token_requests, ==, 1);
	/* The new token serves the next read at once. */
	g_assert_cmpint(road_get(f, "/r/2"), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 3);
	g_assert_cmpint(f->cloud.token_requests, ==, 1);
}

static void test_a_401_after_a_refresh_is_eacces(struct road *f, gconstpointer data)
{
	/* A fresh token refused too: the login is no good, and no loop of refreshes. */
	g_mutex_lock(&f->cloud.lock);
	f->cloud.api_token = -1;
	g_mutex_unlock(&f->cloud.lock);
	g_assert_cmpint(road_get(f, "/r/1"), ==, -EACCES);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
	g_assert_cmpint(f->cloud.token_requests, ==, 1);
}

static json_t *road_status(struct road *f)
{
	GString *out = g_string_new(NULL);
	session_render_status(f->session, out);
	json_t *status = json_loads(out->str, 0, NULL);
	g_string_free(out, TRUE);
	g_assert_nonnull(status);
	return status;
}

static void test_a_429_is_sent_once_and_nothing_goes_out_until_retry_after(struct road *f,
									   gconstpointer data)
{
	cloud_set(&f->cloud, "\"perday\";r=0;t=500", "30", 429);
	g_assert_cmpint(road_get(f, "/r/1"), ==, -EAGAIN);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1); /* never retried in the read */
	g_assert_cmpint(road_get(f, "/r/2"), ==, -EAGAIN);
	fake_now_us += 29 * G_USEC_PER_SEC;
	g_assert_cmpint(road_get(f, "/r/3"), ==, -EAGAIN);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	json_t *status = road_status(f);
	g_assert_cmpstr(json_string_value(json_object_get(json_object_get(status, "rate_limit"),
							  "refill_source")),
			==, "announced");
	json_decref(status);

	cloud_set(&f->cloud, "\"perday\";r=99", NULL, 0);
	fake_now_us += 2 * G_USEC_PER_SEC;
	g_assert_cmpint(road_get(f, "/r/4"), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
}

static void test_the_learned_reset_is_kept_for_the_next_mount(struct road *f, gconstpointer data)
{
	cloud_set(&f->cloud, "\"perday\";r=3", NULL, 0);
	g_assert_cmpint(road_get(f, "/r/1"), ==, 0);
	fake_now_us += 100 * G_USEC_PER_SEC;
	cloud_set(&f->cloud, "\"perday\";r=99", NULL, 0);
	g_assert_cmpint(road_get(f, "/r/2"), ==, 0);
	json_t *status = road_status(f);
	json_t *rl = json_object_get(status, "rate_limit");
	g_assert_cmpstr(json_string_value(json_object_get(rl, "refill_source")), ==, "learned");
	g_autofree char *at = iso_time_utc(fake_now_us / G_USEC_PER_SEC + 86400);
	g_assert_cmpstr(json_string_value(json_object_get(rl, "refill_at")), ==, at);
	json_decref(status);

	g_autofree char *file = g_build_filename(f->dir, "state", "quota", ACCOUNT, NULL);
	struct reset_phase p;
	g_assert_cmpint(reset_phase_load(file, &p), ==, 0);
	g_assert_cmpint(p.offset_s, ==, (fake_now_us / G_USEC_PER_SEC) % 86400);
}

static void test_a_refused_refresh_says_the_login_expired(struct road *f, gconstpointer data)
{
	json_t *status = road_status(f);
	g_assert_false(
	    json_boolean_value(json_object_get(json_object_get(status, "login"), "expired")));
	json_decref(status);
	/* AT-0 refused, and RT-0 no longer known to the token endpoint. */
	g_mutex_lock(&f->cloud.lock);
	f->cloud.api_token = 1;
	f->cloud.generation = 7;
	g_mutex_unlock(&f->cloud.lock);
	g_assert_cmpint(road_get(f, "/r/1"), ==, -EACCES);
	status = road_status(f);
	json_t *login = json_object_get(status, "login");
	g_assert_true(json_boolean_value(json_object_get(login, "expired")));
	g_assert_nonnull(json_string_value(json_object_get(login, "expired_at")));
	json_decref(status);
}

/* Reads paged @path: its body in *ret_body (g_free), or a negative errno. */
static int road_get_pages(struct road *f, const char *path, char **ret_body)
{
	struct resource_ref ref = {.path = (char *)path, .paged = true};
	struct resource res = {0};
	int r = session_get(f->session, &ref, &res);

	*ret_body = r == 0
			? g_strndup(g_bytes_get_data(res.bytes, NULL), g_bytes_get_size(res.bytes))
			: NULL;
	resource_clear(&res);
	return r;
}

static void test_pages_are_followed_and_kept_as_one_array(struct road *f, gconstpointer data)
{
	g_autofree char *body = NULL;

	g_assert_cmpint(road_get_pages(f, "/pages?at=0", &body), ==, 0);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 3);
	json_t *pages = json_loads(body, 0, NULL);
	g_assert_cmpuint(json_array_size(pages), ==, 3);
	for (size_t i = 0; i < 3; i++)
		g_assert_cmpint(
		    json_integer_value(json_object_get(
			json_array_get(json_object_get(json_array_get(pages, i), "data"), 0), "n")),
		    ==, (json_int_t)i);
	json_decref(pages);
}

static void test_a_next_link_off_the_resource_is_never_followed(struct road *f, gconstpointer data)
{
	const char *off[] = {
	    "/pages?at=0&to=\"https://evil.example/pages?at=1\"",
	    "/pages?at=0&to=\"/elsewhere?at=1\"",
	    "/pages?at=0&to=\"/pagesX?at=1\"",
	    "/pages?at=0&to=\"http://127.0.0.1:1/pages?at=1\"",
	};
	for (size_t i = 0; i < G_N_ELEMENTS(off); i++) {
		g_autofree char *body = NULL;
		int before = cloud_api_requests(&f->cloud);
		g_assert_cmpint(road_get_pages(f, off[i], &body), ==, -EIO);
		g_assert_cmpint(cloud_api_requests(&f->cloud), ==, before + 1);
	}
}

static void
test_a_final_resource_is_fetched_once_for_good_with_its_time_as_mtime(struct road *f,
								      gconstpointer data)
{
	gint64 end_s = fake_now_us / G_USEC_PER_SEC - 60;
	struct resource_ref ref = {.path = "/pages?at=2", .paged = true, .immutable_at_s = end_s};
	struct resource res = {0};

	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_true(res.fixed_time);
	g_assert_cmpint(res.changed_at_us, ==, end_s * G_USEC_PER_SEC);
	resource_clear(&res);
	/* Pinned: a TTL of 0 does not make it stale, and it is in memory. */
	ref.ttl = 1;
	g_assert_cmpint(session_get_cached(f->session, &ref, &res), ==, 0);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	/* Not final yet (its end is ahead): an ordinary resource. */
	ref.immutable_at_s = end_s + 3600;
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_false(res.fixed_time);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
	/* Ended but settling (data may still arrive): an ordinary resource, which shows its
	 * end as its time already. */
	ref.immutable_at_s = end_s;
	ref.settle_s = 3600;
	ref.path = "/pages?at=1";
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_true(res.fixed_time);
	g_assert_cmpint(res.changed_at_us, ==, end_s * G_USEC_PER_SEC);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 4);
}

static void
test_a_period_that_ends_keeps_its_copy_until_the_fill_fetches_the_final(struct road *f,
									gconstpointer data)
{
	gint64 end_s = fake_now_us / G_USEC_PER_SEC + 60;
	struct resource_ref ref = {.path = "/r/day", .immutable_at_s = end_s};
	struct resource res = {0};

	g_assert_true(session_history_filled(f->session));
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0); /* today's */
	g_autoptr(GBytes) today = g_bytes_ref(res.bytes);
	gint64 today_changed_at_us = res.changed_at_us;
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	/* Its end passes: the final copy is not held, the earlier one is, and is read
	 * without a call, with its own time (the final copy's, the end, is later), for a
	 * second at a time. */
	fake_now_us += 120 * G_USEC_PER_SEC;
	g_assert_true(session_holds(f->session, &ref));
	g_assert_false(session_holds_latest(f->session, &ref));
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_true(g_bytes_equal(res.bytes, today));
	g_assert_false(res.fixed_time);
	g_assert_cmpint(res.changed_at_us, ==, today_changed_at_us);
	g_assert_cmpfloat(res.fresh_for_s, ==, 1);
	resource_clear(&res);
	g_assert_cmpint(session_get_cached(f->session, &ref, &res), ==, 0);
	resource_clear(&res);
	g_assert_cmpint(session_peek(f->session, &ref, &res), ==, 0);
	g_assert_false(res.fixed_time);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 1);
	/* The fill's call brings the final copy, which is then what is held and read. */
	g_assert_cmpint(session_get_latest(f->session, &ref, &res), ==, 0);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
	g_assert_true(session_holds_latest(f->session, &ref));
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_cmpfloat(res.fresh_for_s, >, 1);
	g_assert_true(res.fixed_time);
	g_assert_cmpint(res.changed_at_us, ==, end_s * G_USEC_PER_SEC);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
}

static void test_without_the_fill_a_period_that_ends_tries_its_final_copy_first(struct road *f,
										gconstpointer data)
{
	gint64 end_s = fake_now_us / G_USEC_PER_SEC + 60;
	struct resource_ref ref = {.path = "/r/day", .immutable_at_s = end_s};
	struct resource res = {0};

	g_assert_false(session_history_filled(f->session));
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	resource_clear(&res);
	fake_now_us += 120 * G_USEC_PER_SEC;
	g_assert_true(session_holds(f->session, &ref));
	/* The cloud refuses the final copy: the earlier one beats none. */
	cloud_set(&f->cloud, NULL, NULL, 422);
	g_assert_cmpint(session_get(f->session, &ref, &res), ==, 0);
	g_assert_nonnull(res.bytes);
	resource_clear(&res);
	g_assert_cmpint(cloud_api_requests(&f->cloud), ==, 2);
	g_assert_false(session_holds_latest(f->session, &ref));
}

static void test_today_is_the_clouds_by_its_date_header(struct road *f, gconstpointer data)
{
	gint64 local_s = fake_now_us / G_USEC_PER_SEC;

	g_assert_cmpint(session_now_s(f->session), ==, local_s);
	g_mutex_lock(&f->cloud.lock);
	f->cloud.date = g_strdup("Sat, 16 Jan 2027 08:00:00 GMT"); /* 1800000000 + 1 day */
	g_mutex_unlock(&f->cloud.lock);
	g_assert_cmpint(road_get(f, "/r/1"), ==, 0);
	g_assert_cmpint(session_now_s(f->session), ==, 1800000000 + 86400);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	/* Lock files then go to each test's state directory. */
	g_unsetenv("XDG_RUNTIME_DIR");
	g_test_add("/session/recent_small_bodies_are_parsed_once", struct fixture, NULL,
		   fixture_set_up, test_recent_small_bodies_are_parsed_once, fixture_tear_down);
	g_test_add("/session/big_bodies_keep_at_most_256_kib_of_text", struct fixture, NULL,
		   fixture_set_up, test_big_bodies_keep_at_most_256_kib_of_text, fixture_tear_down);
	g_test_add("/session/ttl_stretches_over_what_is_left_until_the_refill", struct road, NULL,
		   road_set_up, test_ttl_stretches_over_what_is_left_until_the_refill,
		   road_tear_down);
	g_test_add("/session/a_spent_budget_sends_nothing_until_the_refill", struct road, NULL,
		   road_set_up, test_a_spent_budget_sends_nothing_until_the_refill, road_tear_down);
	g_test_add("/session/a_401_refreshes_once_and_retries", struct road, NULL, road_set_up,
		   test_a_401_refreshes_once_and_retries, road_tear_down);
	g_test_add("/session/a_429_is_sent_once_and_nothing_goes_out_until_retry_after",
		   struct road, NULL, road_set_up,
		   test_a_429_is_sent_once_and_nothing_goes_out_until_retry_after, road_tear_down);
	g_test_add("/session/the_learned_reset_is_kept_for_the_next_mount", struct road, NULL,
		   road_set_up, test_the_learned_reset_is_kept_for_the_next_mount, road_tear_down);
	g_test_add("/session/a_refused_refresh_says_the_login_expired", struct road, NULL,
		   road_set_up, test_a_refused_refresh_says_the_login_expired, road_tear_down);
	g_test_add("/session/a_401_after_a_refresh_is_eacces", struct road, NULL, road_set_up,
		   test_a_401_after_a_refresh_is_eacces, road_tear_down);
	g_test_add("/session/pages_are_followed_and_kept_as_one_array", struct road, NULL,
		   road_set_up, test_pages_are_followed_and_kept_as_one_array, road_tear_down);
	g_test_add("/session/a_next_link_off_the_resource_is_never_followed", struct road, NULL,
		   road_set_up, test_a_next_link_off_the_resource_is_never_followed,
		   road_tear_down);
	g_test_add("/session/a_final_resource_is_fetched_once_for_good_with_its_time_as_mtime",
		   struct road, NULL, road_set_up,
		   test_a_final_resource_is_fetched_once_for_good_with_its_time_as_mtime,
		   road_tear_down);
	g_test_add("/session/a_period_that_ends_keeps_its_copy_until_the_fill_fetches_the_final",
		   struct road, &scarce_provider, road_set_up,
		   test_a_period_that_ends_keeps_its_copy_until_the_fill_fetches_the_final,
		   road_tear_down);
	g_test_add("/session/without_the_fill_a_period_that_ends_tries_its_final_copy_first",
		   struct road, NULL, road_set_up,
		   test_without_the_fill_a_period_that_ends_tries_its_final_copy_first,
		   road_tear_down);
	g_test_add("/session/today_is_the_clouds_by_its_date_header", struct road, NULL,
		   road_set_up, test_today_is_the_clouds_by_its_date_header, road_tear_down);
	return g_test_run();
}
