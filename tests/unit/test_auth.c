/* auth: the token set's JSON, and the refresh rules against a loopback token endpoint
 * that rotates refresh tokens the way tado does (single use), with the file store in a
 * temporary directory (no keyring). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "auth.h"
#include "http.h"
#include "keyring.h"
#include "provider.h"
#include "fake_http.h"

#define ACCOUNT "testcloud:home"

/* ---- token_set JSON ---- */

static void test_token_set_round_trips_through_json(void)
{
	struct token_set ts = {
	    .provider = g_strdup("tibber"),
	    .access_token = g_strdup("AT \"quoted\" ü"),
	    .expires_at_s = 1790000000,
	    .issued_at_s = 1789996400,
	    .refresh_token = g_strdup("RT"),
	    .client_id = g_strdup("cid"),
	    .client_secret = g_strdup("sec"),
	    .scope = g_strdup("openid offline_access"),
	};
	g_autofree char *json = token_set_to_json(&ts);
	g_assert_nonnull(strstr(json, "\"expires_at\":1790000000"));
	struct token_set back = {0};
	g_assert_cmpint(token_set_from_json(json, &back), ==, 0);
	g_assert_cmpstr(back.provider, ==, ts.provider);
	g_assert_cmpstr(back.access_token, ==, ts.access_token);
	g_assert_cmpint(back.expires_at_s, ==, ts.expires_at_s);
	g_assert_cmpint(back.issued_at_s, ==, ts.issued_at_s);
	g_assert_cmpstr(back.refresh_token, ==, ts.refresh_token);
	g_assert_cmpstr(back.client_id, ==, ts.client_id);
	g_assert_cmpstr(back.client_secret, ==, ts.client_secret);
	g_assert_cmpstr(back.scope, ==, ts.scope);
	token_set_clear(&ts);
	token_set_clear(&back);
	g_assert_null(back.access_token);
}

static void test_absent_fields_stay_absent(void)
{
	struct token_set ts = {.provider = g_strdup("tado"), .refresh_token = g_strdup("RT")};
	g_autofree char *json = token_set_to_json(&ts);
	g_assert_null(strstr(json, "client_secret"));
	struct token_set back = {0};
	g_assert_cmpint(token_set_from_json(json, &back), ==, 0);
	g_assert_null(back.access_token);
	g_assert_null(back.client_id);
	g_assert_cmpint(back.expires_at_s, ==, 0);
	g_assert_cmpint(back.issued_at_s, ==, 0);
	g_assert_null(strstr(json, "issued_at"));
	token_set_clear(&ts);
	token_set_clear(&back);
}

static void test_garbage_token_json_is_rejected(void)
{
	static const char *const junk[] = {
	    "",
	    "null",
	    "[]",
	    "\"x\"",
	    "{",
	    "{}",
	    "{\"provider\":\"tado\"}",
	    "{\"provider\":1,\"refresh_token\":\"r\"}",
	    "{\"provider\":\"tado\",\"refresh_token\":5}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\",\"expires_at\":\"soon\"}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\",\"expires_at\":-1}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\",\"expires_at\":1.5}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\",\"issued_at\":-1}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\",\"issued_at\":\"now\"}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\\u0000x\"}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"a\",\"refresh_token\":\"b\"}",
	    "{\"provider\":\"\",\"refresh_token\":\"r\"}",
	    "{\"provider\":\"tado\",\"refresh_token\":\"r\"} trailing",
	};
	for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
		struct token_set ts = {0};
		g_assert_cmpint(token_set_from_json(junk[i], &ts), ==, -EINVAL);
		g_assert_null(ts.provider);
		g_assert_null(ts.refresh_token);
	}
	struct token_set ts = {0};
	g_assert_cmpint(token_set_from_json(NULL, &ts), ==, -EINVAL);
}

/* ---- a rotating token endpoint ---- */

struct endpoint {
	GMutex lock;
	int generation;	 /* the valid refresh token is RT-<generation> */
	int status;	 /* when set, every answer is this status with an empty body */
	gulong delay_us; /* how long each answer takes */
	int expires_in;
	/* Called with each request, before it is answered: what happens meanwhile. */
	void (*on_request)(void *data);
	void *on_request_data;
};

static void endpoint_handler(const struct fake_request *req, int *status, GString *headers,
			     GString *body, void *data)
{
	struct endpoint *e = data;
	if (e->on_request)
		e->on_request(e->on_request_data);
	if (e->delay_us)
		g_usleep(e->delay_us);
	if (e->status) {
		*status = e->status;
		return;
	}
	g_autofree char *grant = http_form_get(req->body, "grant_type");
	g_autofree char *rt = http_form_get(req->body, "refresh_token");
	g_mutex_lock(&e->lock);
	g_autofree char *valid = g_strdup_printf("RT-%d", e->generation);
	if (g_strcmp0(grant, "refresh_token") != 0 || g_strcmp0(rt, valid) != 0) {
		*status = 400;
		g_string_append(body, "{\"error\":\"invalid_grant\",\"error_description\":"
				      "\"The refresh_token is invalid.\"}");
	} else {
		/* Rotation: the old one is revoked now. */
		e->generation++;
		g_string_append_printf(body,
				       "{\"access_token\":\"AT-%d\",\"refresh_token\":\"RT-%d\","
				       "\"expires_in\":%d,\"token_type\":\"Bearer\"}",
				       e->generation, e->generation,
				       e->expires_in ? e->expires_in : 600);
	}
	g_mutex_unlock(&e->lock);
}

static const struct provider test_provider = {
    .name = "testcloud",
    .title = "Testcloud",
    .login = LOGIN_DEVICE_CODE,
    .client_id = "public-client",
    .scope = "offline_access",
    .token_path = "/token",
};

struct fixture {
	char *dir;
	struct token_store store;
	char *lock_dir;
	struct endpoint ep;
	struct fake_server *srv;
	char *base;
	struct http_client *http;
	struct auth *auth;
};

static gint64 now_s(void)
{
	return g_get_real_time() / G_USEC_PER_SEC;
}

/* Puts generation @n of the token set (AT-n / RT-n, issued at @issued_at, 0 for
 * unknown, and expiring at @expires_at) in the store, as a login or another process's
 * refresh would. */
static void store_issued_token_set(struct fixture *f, int n, gint64 issued_at, gint64 expires_at)
{
	struct token_set ts = {.provider = g_strdup("testcloud"),
			       .access_token = g_strdup_printf("AT-%d", n),
			       .refresh_token = g_strdup_printf("RT-%d", n),
			       .issued_at_s = issued_at,
			       .expires_at_s = expires_at};
	g_autofree char *json = token_set_to_json(&ts);
	token_set_clear(&ts);
	g_assert_cmpint(token_store_save(&f->store, ACCOUNT, "testcloud", json, NULL), ==, 0);
}

static void store_token_set(struct fixture *f, int n, gint64 expires_at)
{
	store_issued_token_set(f, n, 0, expires_at);
}

/* Stores RT-0 / AT-0, issued at @issued_at (0: unknown) and expiring at @expires_at,
 * and loads them. */
static void fixture_setup_issued(struct fixture *f, gint64 issued_at, gint64 expires_at)
{
	f->dir = g_dir_make_tmp("auth-test-XXXXXX", NULL);
	f->store = (struct token_store){.kind = TOKEN_STORE_FILE,
					.state_dir = g_build_filename(f->dir, "state", NULL)};
	f->lock_dir = g_build_filename(f->dir, "run", "smarthomefs", NULL);
	g_mutex_init(&f->ep.lock);
	f->srv = fake_server_start(endpoint_handler, &f->ep);
	f->base = fake_server_url(f->srv, "");
	f->http = http_client_new(NULL, 5, 65536, "t/1");
	store_issued_token_set(f, 0, issued_at, expires_at);
	f->auth = auth_new(ACCOUNT, &test_provider, f->http, f->base, &f->store, f->lock_dir);
	GError *err = NULL;
	g_assert_cmpint(auth_load(f->auth, &err), ==, 0);
	g_assert_no_error(err);
}

static void fixture_setup(struct fixture *f, gint64 expires_at)
{
	fixture_setup_issued(f, 0, expires_at);
}

static void fixture_teardown(struct fixture *f)
{
	auth_free(f->auth);
	http_client_free(f->http);
	fake_server_stop(f->srv);
	g_mutex_clear(&f->ep.lock);
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
	g_assert_cmpint(system(cmd), ==, 0);
	g_free(f->dir);
	g_free(f->store.state_dir);
	g_free(f->lock_dir);
	g_free(f->base);
}

static struct token_set stored_tokens(struct fixture *f)
{
	char *json = NULL;
	g_assert_cmpint(token_store_load(&f->store, ACCOUNT, &json, NULL), ==, 0);
	struct token_set ts = {0};
	g_assert_cmpint(token_set_from_json(json, &ts), ==, 0);
	g_free(json);
	return ts;
}

static void test_load_without_login_names_the_login_command(void)
{
	g_autofree char *dir = g_dir_make_tmp("auth-test-XXXXXX", NULL);
	struct token_store store = {.kind = TOKEN_STORE_FILE, .state_dir = dir};
	struct auth *a = auth_new("testcloud", &test_provider, NULL, NULL, &store, dir);
	GError *err = NULL;
	g_assert_cmpint(auth_load(a, &err), ==, -ENOENT);
	g_assert_nonnull(strstr(err->message, "smarthomefs login testcloud"));
	g_clear_error(&err);
	char *token = NULL;
	g_assert_cmpint(auth_bearer(a, &token), ==, -EACCES);
	g_assert_null(token);
	auth_free(a);
	g_rmdir(dir);
}

static void test_valid_token_is_used_without_refresh(void)
{
	struct fixture f = {0};
	/* The stored expiry, not the clock read again later: a second may pass between. */
	gint64 expires_at_s = now_s() + 600;
	fixture_setup(&f, expires_at_s);
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-0");
	g_assert_cmpint(fake_server_requests(f.srv), ==, 0);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 0);
	g_assert_cmpint(auth_expires_at_s(f.auth), ==, expires_at_s);
	fixture_teardown(&f);
}

static void test_token_near_expiry_is_refreshed_and_saved_first(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() + 30); /* inside the 60 s margin */
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-1");
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 1);
	struct token_set saved = stored_tokens(&f);
	g_assert_cmpstr(saved.refresh_token, ==, "RT-1");
	g_assert_cmpstr(saved.access_token, ==, "AT-1");
	g_assert_cmpint(saved.expires_at_s, >=, now_s() + 590);
	token_set_clear(&saved);
	g_autofree char *body = fake_server_body(f.srv, 0);
	g_assert_cmpstr(body, ==,
			"grant_type=refresh_token&refresh_token=RT-0&client_id="
			"public-client");
	fixture_teardown(&f);
}

static void test_short_lived_token_is_not_refreshed_at_once(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	f.ep.expires_in = 20; /* shorter than the 60 s margin long-lived tokens get */
	g_autofree char *first = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &first), ==, 0);
	g_assert_cmpstr(first, ==, "AT-1");

	g_autofree char *second = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &second), ==, 0);
	g_assert_cmpstr(second, ==, "AT-1");
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 1);
	struct token_set saved = stored_tokens(&f);
	g_assert_cmpint(saved.expires_at_s - saved.issued_at_s, ==, 20);
	token_set_clear(&saved);
	fixture_teardown(&f);
}

/* A token issued @issued_ago seconds ago that expires in @left seconds: the token the
 * next request gets (AT-0 kept, AT-1 refreshed). */
static void assert_margin(gint64 issued_ago, gint64 left, const char *expect)
{
	struct fixture f = {0};
	fixture_setup_issued(&f, now_s() - issued_ago, now_s() + left);
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, expect);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, strcmp(expect, "AT-0") != 0);
	fixture_teardown(&f);
}

static void test_short_lived_token_is_used_until_its_last_tenth(void)
{
	assert_margin(10, 10, "AT-0"); /* issued for 20 s, half of it gone: still used */
}

static void test_short_lived_token_is_refreshed_before_it_expires(void)
{
	assert_margin(18, 2, "AT-1"); /* 2 s left: inside its last tenth, refreshed */
}

static void test_long_lived_token_keeps_the_60_s_margin(void)
{
	/* Issued for an hour (Tibber): a tenth would be 6 min, 60 s is the most. */
	assert_margin(3541, 59, "AT-1");
	assert_margin(3480, 120, "AT-0");
}

struct crowd {
	struct auth *auth;
	volatile gint ok;
	char *tokens[16];
};

static gpointer crowd_member(gpointer p)
{
	struct crowd *c = p;
	static volatile gint next;
	int i = g_atomic_int_add(&next, 1) % 16;
	if (auth_bearer(c->auth, &c->tokens[i]) == 0)
		g_atomic_int_inc(&c->ok);
	return NULL;
}

static void test_expired_token_is_refreshed_once_for_many_threads(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	f.ep.delay_us = 200 * 1000; /* long enough for every thread to arrive meanwhile */
	struct crowd c = {.auth = f.auth};
	GThread *t[16];
	for (size_t i = 0; i < G_N_ELEMENTS(t); i++)
		t[i] = g_thread_new("reader", crowd_member, &c);
	for (size_t i = 0; i < G_N_ELEMENTS(t); i++)
		g_thread_join(t[i]);
	g_assert_cmpint(c.ok, ==, 16);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 1);
	for (size_t i = 0; i < G_N_ELEMENTS(c.tokens); i++) {
		g_assert_cmpstr(c.tokens[i], ==, "AT-1");
		g_free(c.tokens[i]);
	}
	fixture_teardown(&f);
}

static void test_rejected_token_is_refreshed_but_an_older_one_is_ignored(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() + 600);
	auth_rejected(f.auth, "AT-something-else");
	g_autofree char *t0 = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &t0), ==, 0);
	g_assert_cmpstr(t0, ==, "AT-0");

	auth_rejected(f.auth, "AT-0");
	g_autofree char *t1 = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &t1), ==, 0);
	g_assert_cmpstr(t1, ==, "AT-1");
	/* A late 401 for the token already replaced changes nothing. */
	auth_rejected(f.auth, "AT-0");
	g_autofree char *t2 = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &t2), ==, 0);
	g_assert_cmpstr(t2, ==, "AT-1");
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 1);
	fixture_teardown(&f);
}

static void test_invalid_grant_is_eacces_and_never_deletes_tokens(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	f.ep.generation = 7; /* RT-0 was spent long ago */
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, -EACCES);
	g_assert_null(token);
	struct token_set saved = stored_tokens(&f);
	g_assert_cmpstr(saved.refresh_token, ==, "RT-0");
	token_set_clear(&saved);
	/* The next reader gets the answer without another request. */
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, -EACCES);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	GError *err = NULL;
	g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, -EACCES);
	g_assert_nonnull(strstr(err->message, "smarthomefs login " ACCOUNT));
	g_clear_error(&err);
	fixture_teardown(&f);
}

static void test_server_trouble_keeps_the_tokens(void)
{
	static const int statuses[] = {429, 500, 503};
	for (size_t i = 0; i < G_N_ELEMENTS(statuses); i++) {
		struct fixture f = {0};
		fixture_setup(&f, now_s() - 10);
		f.ep.status = statuses[i];
		g_autofree char *token = NULL;
		g_assert_cmpint(auth_bearer(f.auth, &token), ==, -EAGAIN);
		struct token_set saved = stored_tokens(&f);
		g_assert_cmpstr(saved.refresh_token, ==, "RT-0");
		g_assert_cmpstr(saved.access_token, ==, "AT-0");
		token_set_clear(&saved);
		/* Once the cloud is back, the kept refresh token still works. */
		f.ep.status = 0;
		GError *err = NULL;
		g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, 0);
		g_assert_no_error(err);
		g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
		g_assert_cmpstr(token, ==, "AT-1");
		fixture_teardown(&f);
	}
}

static void test_failed_early_refresh_still_hands_out_the_valid_token(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() + 30); /* due for refresh, not yet expired */
	f.ep.status = 503;
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-0");
	fixture_teardown(&f);
}

static void test_tokens_refreshed_by_another_process_are_adopted(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	/* Another process refreshed: RT-0 is spent, the store holds the new set. */
	f.ep.generation = 1;
	store_token_set(&f, 1, now_s() + 600);

	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-1");
	g_assert_cmpint(fake_server_requests(f.srv), ==, 0);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 0);
	fixture_teardown(&f);
}

static void test_adopted_but_expired_tokens_are_refreshed_with_their_refresh_token(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	f.ep.generation = 1;
	store_token_set(&f, 1, now_s() - 5);

	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-2");
	g_autofree char *body = fake_server_body(f.srv, 0);
	g_assert_nonnull(strstr(body, "refresh_token=RT-1"));
	fixture_teardown(&f);
}

/* Makes @f's store unwritable for everyone, root included: its directory becomes a file.
 * Returns that file's path (g_free): unlinking it mends the store, empty. */
static char *break_store(struct fixture *f)
{
	char *tokens = g_build_filename(f->store.state_dir, "tokens", NULL);
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s' && touch '%s'", tokens, tokens);

	g_assert_cmpint(system(cmd), ==, 0);
	return tokens;
}

static void test_failed_save_keeps_new_tokens_and_saves_them_later(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	g_autofree char *tokens = break_store(&f);

	g_autofree char *t1 = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &t1), ==, 0);
	g_assert_cmpstr(t1, ==, "AT-1");

	/* The store works again, still holding the spent RT-0: the next refresh saves
	 * first what memory holds, then refreshes with it (RT-1). */
	g_assert_cmpint(g_unlink(tokens), ==, 0);
	store_token_set(&f, 0, now_s() - 10);
	GError *err = NULL;
	g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, 0);
	g_assert_no_error(err);
	struct token_set saved = stored_tokens(&f);
	g_assert_cmpstr(saved.refresh_token, ==, "RT-2");
	token_set_clear(&saved);
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 2);
	fixture_teardown(&f);
}

/* `smarthomefs logout` as it reaches the store: the login is deleted. */
static void log_out(void *data)
{
	struct fixture *f = data;
	g_assert_cmpint(token_store_delete(&f->store, ACCOUNT, NULL), ==, 0);
}

static void test_logout_during_refresh_is_not_undone(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	/* The logout lands between the refresh request and its answer. */
	f.ep.on_request = log_out;
	f.ep.on_request_data = &f;

	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, -EACCES);
	g_assert_null(token);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	/* Still logged out: the refreshed set was not stored... */
	char *json = NULL;
	g_assert_cmpint(token_store_load(&f.store, ACCOUNT, &json, NULL), ==, -ENOENT);
	g_assert_null(json);
	/* ...nor used, and nothing more is sent, even when forced. */
	f.ep.on_request = NULL;
	GError *err = NULL;
	g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, -EACCES);
	g_clear_error(&err);
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, -EACCES);
	g_assert_null(token);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	g_assert_cmpint(token_store_load(&f.store, ACCOUNT, &json, NULL), ==, -ENOENT);
	fixture_teardown(&f);
}

/* The user logs in again (generation 5 in the store) while a refresh is in flight. */
static void log_in_again(void *data)
{
	store_token_set(data, 5, now_s() + 600);
}

static void test_login_made_during_refresh_is_kept_and_used(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	f.ep.on_request = log_in_again;
	f.ep.on_request_data = &f;

	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-5");
	struct token_set saved = stored_tokens(&f);
	g_assert_cmpstr(saved.refresh_token, ==, "RT-5");
	token_set_clear(&saved);
	fixture_teardown(&f);
}

static void test_logout_while_a_save_is_pending_is_not_undone(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	/* The store cannot be written: the refreshed set waits in memory... */
	g_autofree char *tokens = break_store(&f);
	g_autofree char *t1 = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &t1), ==, 0);
	g_assert_cmpstr(t1, ==, "AT-1");
	/* ...then the store works again, empty: the user logged out. */
	g_assert_cmpint(g_unlink(tokens), ==, 0);
	GError *err = NULL;
	g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, -EACCES);
	g_clear_error(&err);
	char *json = NULL;
	g_assert_cmpint(token_store_load(&f.store, ACCOUNT, &json, NULL), ==, -ENOENT);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 1);
	fixture_teardown(&f);
}

struct bearer_run {
	struct auth *auth;
	char *token;
	int result;
};

static gpointer bearer_thread(gpointer p)
{
	struct bearer_run *b = p;
	b->result = auth_bearer(b->auth, &b->token);
	return NULL;
}

static void test_refresh_waits_for_another_process_and_adopts_its_tokens(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() - 10);
	/* "Another process" holds the account's lock: an flock on its own open file. */
	g_assert_cmpint(g_mkdir_with_parents(f.lock_dir, 0700), ==, 0);
	g_autofree char *lock = g_build_filename(f.lock_dir, ACCOUNT ".lock", NULL);
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(flock(fd, LOCK_EX), ==, 0);

	/* The bearer opens the lock file once it has found the token expired: from then
	 * on it waits for the lock, which is what this test is about. */
	int watch = inotify_init1(IN_CLOEXEC);
	g_assert_cmpint(watch, >=, 0);
	g_assert_cmpint(inotify_add_watch(watch, lock, IN_OPEN), >=, 0);

	struct bearer_run b = {.auth = f.auth};
	GThread *t = g_thread_new("bearer", bearer_thread, &b);
	struct pollfd pfd = {.fd = watch, .events = POLLIN};
	g_assert_cmpint(poll(&pfd, 1, 10 * 1000), ==, 1);
	close(watch);
	g_assert_cmpint(fake_server_requests(f.srv), ==, 0); /* waiting for the lock */

	/* The other process refreshes (spending RT-0), saves, and lets go. */
	f.ep.generation = 1;
	store_token_set(&f, 1, now_s() + 600);
	close(fd);

	g_thread_join(t);
	g_assert_cmpint(b.result, ==, 0);
	g_assert_cmpstr(b.token, ==, "AT-1");
	g_assert_cmpint(fake_server_requests(f.srv), ==, 0);
	g_free(b.token);
	fixture_teardown(&f);
}

static void test_refresh_now_refreshes_a_valid_token(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() + 3000);
	GError *err = NULL;
	g_assert_cmpint(auth_refresh_now(f.auth, &err), ==, 0);
	g_assert_no_error(err);
	g_autofree char *token = NULL;
	g_assert_cmpint(auth_bearer(f.auth, &token), ==, 0);
	g_assert_cmpstr(token, ==, "AT-1");
	g_assert_cmpuint(auth_refresh_count(f.auth), ==, 1);
	fixture_teardown(&f);
}

static void test_store_file_is_private(void)
{
	struct fixture f = {0};
	fixture_setup(&f, now_s() + 600);
	g_autofree char *tokens = g_build_filename(f.store.state_dir, "tokens", NULL);
	g_autofree char *file = g_build_filename(tokens, ACCOUNT ".json", NULL);
	GStatBuf st;
	g_assert_cmpint(g_stat(tokens, &st), ==, 0);
	g_assert_cmpint(st.st_mode & 0777, ==, 0700);
	g_assert_cmpint(g_stat(file, &st), ==, 0);
	g_assert_cmpint(st.st_mode & 0777, ==, 0600);
	g_autoptr(GPtrArray) accounts = g_ptr_array_new_with_free_func(g_free);
	g_assert_cmpint(token_store_list(&f.store, accounts, NULL), ==, 0);
	g_assert_cmpuint(accounts->len, ==, 1);
	g_assert_cmpstr(accounts->pdata[0], ==, ACCOUNT);
	g_assert_cmpint(token_store_delete(&f.store, ACCOUNT, NULL), ==, 0);
	g_assert_cmpint(token_store_delete(&f.store, ACCOUNT, NULL), ==, -ENOENT);
	fixture_teardown(&f);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/auth/token_set_round_trips_through_json",
			test_token_set_round_trips_through_json);
	g_test_add_func("/auth/absent_fields_stay_absent", test_absent_fields_stay_absent);
	g_test_add_func("/auth/garbage_token_json_is_rejected",
			test_garbage_token_json_is_rejected);
	g_test_add_func("/auth/load_without_login_names_the_login_command",
			test_load_without_login_names_the_login_command);
	g_test_add_func("/auth/valid_token_is_used_without_refresh",
			test_valid_token_is_used_without_refresh);
	g_test_add_func("/auth/token_near_expiry_is_refreshed_and_saved_first",
			test_token_near_expiry_is_refreshed_and_saved_first);
	g_test_add_func("/auth/short_lived_token_is_not_refreshed_at_once",
			test_short_lived_token_is_not_refreshed_at_once);
	g_test_add_func("/auth/short_lived_token_is_used_until_its_last_tenth",
			test_short_lived_token_is_used_until_its_last_tenth);
	g_test_add_func("/auth/short_lived_token_is_refreshed_before_it_expires",
			test_short_lived_token_is_refreshed_before_it_expires);
	g_test_add_func("/auth/long_lived_token_keeps_the_60_s_margin",
			test_long_lived_token_keeps_the_60_s_margin);
	g_test_add_func("/auth/expired_token_is_refreshed_once_for_many_threads",
			test_expired_token_is_refreshed_once_for_many_threads);
	g_test_add_func("/auth/rejected_token_is_refreshed_but_an_older_one_is_ignored",
			test_rejected_token_is_refreshed_but_an_older_one_is_ignored);
	g_test_add_func("/auth/invalid_grant_is_eacces_and_never_deletes_tokens",
			test_invalid_grant_is_eacces_and_never_deletes_tokens);
	g_test_add_func("/auth/server_trouble_keeps_the_tokens",
			test_server_trouble_keeps_the_tokens);
	g_test_add_func("/auth/failed_early_refresh_still_hands_out_the_valid_token",
			test_failed_early_refresh_still_hands_out_the_valid_token);
	g_test_add_func("/auth/tokens_refreshed_by_another_process_are_adopted",
			test_tokens_refreshed_by_another_process_are_adopted);
	g_test_add_func("/auth/adopted_but_expired_tokens_are_refreshed_with_their_refresh_token",
			test_adopted_but_expired_tokens_are_refreshed_with_their_refresh_token);
	g_test_add_func("/auth/failed_save_keeps_new_tokens_and_saves_them_later",
			test_failed_save_keeps_new_tokens_and_saves_them_later);
	g_test_add_func("/auth/refresh_waits_for_another_process_and_adopts_its_tokens",
			test_refresh_waits_for_another_process_and_adopts_its_tokens);
	g_test_add_func("/auth/logout_during_refresh_is_not_undone",
			test_logout_during_refresh_is_not_undone);
	g_test_add_func("/auth/login_made_during_refresh_is_kept_and_used",
			test_login_made_during_refresh_is_kept_and_used);
	g_test_add_func("/auth/logout_while_a_save_is_pending_is_not_undone",
			test_logout_while_a_save_is_pending_is_not_undone);
	g_test_add_func("/auth/refresh_now_refreshes_a_valid_token",
			test_refresh_now_refreshes_a_valid_token);
	g_test_add_func("/auth/store_file_is_private", test_store_file_is_private);
	return g_test_run();
}
