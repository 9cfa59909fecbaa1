/* accounts: two Tibber accounts over fake HTTP in one mount of all accounts — the merged
 * homes/, a home both list, one account failing beside the other, logins and logouts. */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "accounts.h"
#include "config.h"
#include "fake_http.h"
#include "fake_login.h"
#include "keyring.h"
#include "session.h"
#include "tmp_tree.h"
#include "token.h"

/* One account's cloud: the homes it lists, or an error status for everything. */
struct cloud {
	GMutex lock;
	const char *homes; /* (lock) the JSON of GET /homes */
	int status;	   /* (lock) 200, or what every answer is */
};

struct fixture {
	char *dir;
	struct cloud clouds[2]; /* "tibber", "tibber:b" */
	struct fake_server *servers[2];
	struct token_store store;
	struct accounts *accounts;
};

static void cloud_answer(const struct fake_request *req, int *status, GString *headers,
			 GString *body, void *data)
{
	struct cloud *c = data;

	g_string_append(headers, "Content-Type: application/json\r\n");
	g_mutex_lock(&c->lock);
	*status = c->status;
	if (c->status == 200 && strcmp(req->target, "/homes") == 0)
		g_string_append(body, c->homes);
	else
		g_string_append(body, "{}");
	if (c->status == 200 && strcmp(req->target, "/homes") != 0)
		*status = 404;
	g_mutex_unlock(&c->lock);
}

static void set_cloud(struct cloud *c, const char *homes, int status)
{
	g_mutex_lock(&c->lock);
	if (homes)
		c->homes = homes;
	c->status = status;
	g_mutex_unlock(&c->lock);
}

static void log_in(struct fixture *f, const char *account)
{
	fake_login_save(&f->store, account, "tibber", "AT", "RT", "client");
}

/* accounts_open_fn: "tibber" talks to the first cloud, any other account to the second. */
static int open_account(void *data, const char *id, struct session **ret, GError **err)
{
	struct fixture *f = data;
	struct account account = {0};
	struct options opts;

	g_assert_cmpint(account_parse(id, &account, NULL), ==, 0);
	options_init(&opts);
	opts.ttl = 0; /* every listing asks the cloud */
	opts.prefetch = 0;
	opts.api_url = fake_server_url(f->servers[strcmp(id, "tibber") == 0 ? 0 : 1], "");
	opts.cache_dir = g_build_filename(f->dir, "cache", id, NULL);
	opts.state_dir = g_strdup(f->store.state_dir);
	opts.token_store = TOKEN_STORE_FILE;
	struct session *s = session_new(&account, &opts);
	int r = session_start(s, err);
	if (r < 0)
		session_free(s);
	else
		*ret = s;
	account_clear(&account);
	return r;
}

static void fixture_set_up(struct fixture *f, gconstpointer data)
{
	f->dir = g_dir_make_tmp("test_accounts-XXXXXX", NULL);
	for (int i = 0; i < 2; i++) {
		g_mutex_init(&f->clouds[i].lock);
		f->clouds[i].status = 200;
		f->servers[i] = fake_server_start(cloud_answer, &f->clouds[i]);
	}
	f->clouds[0].homes = "{\"homes\": [{\"id\": \"a\"}, {\"id\": \"shared\"}]}";
	f->clouds[1].homes = "{\"homes\": [{\"id\": \"b\"}, {\"id\": \"shared\"}]}";
	f->store.kind = TOKEN_STORE_FILE;
	f->store.state_dir = g_build_filename(f->dir, "state", NULL);
	log_in(f, "tibber:b");
	log_in(f, "tibber");
	struct options opts;
	options_init(&opts);
	f->accounts = accounts_new_all(&opts, &f->store, open_account, f);
	g_assert_cmpint(accounts_start(f->accounts, false, NULL), ==, 0);
}

static void fixture_tear_down(struct fixture *f, gconstpointer data)
{
	accounts_free(f->accounts);
	for (int i = 0; i < 2; i++) {
		fake_server_stop(f->servers[i]);
		g_mutex_clear(&f->clouds[i].lock);
	}
	token_store_clear(&f->store);
	tmp_tree_remove(f->dir);
	g_free(f->dir);
}

static const char *const HOMES[] = {"homes"};
static const struct provider_path homes_path = {.comp = HOMES, .n = 1};

/* homes/ as listed now, its names joined by spaces (g_free); NULL with *ret_r on error. */
static char *list_homes(struct fixture *f, bool may_fetch, int *ret_r)
{
	g_autoptr(GPtrArray) entries = provider_entries_new();
	struct resource listing = {0};
	int r = accounts_list(f->accounts, &homes_path, may_fetch, &listing, entries);

	if (ret_r)
		*ret_r = r;
	if (r < 0)
		return NULL;
	GString *names = g_string_new(NULL);
	for (guint i = 0; i < entries->len; i++)
		g_string_append_printf(names, "%s%s", i ? " " : "",
				       ((struct provider_entry *)entries->pdata[i])->name);
	return g_string_free(names, FALSE);
}

/* The account that serves homes/@id, or NULL. */
static const char *served_by(struct fixture *f, const char *id)
{
	const char *comp[] = {"homes", id, "home.json"};
	const struct provider_path p = {.comp = comp, .n = 3};
	struct session *s = accounts_route(f->accounts, &p);

	return s ? session_account_id(s) : NULL;
}

static json_t *status_json(struct fixture *f)
{
	g_autoptr(GString) out = g_string_new(NULL);

	accounts_render_status(f->accounts, out);
	json_t *st = json_loads(out->str, 0, NULL);
	g_assert_nonnull(st);
	return st;
}

static void test_a_home_both_accounts_list_is_shown_once_and_served_by_the_first(
    struct fixture *f, gconstpointer data)
{
	g_autofree char *names = list_homes(f, true, NULL);

	g_assert_cmpstr(names, ==, "a shared b");
	g_assert_cmpstr(served_by(f, "a"), ==, "tibber");
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber");
	g_assert_cmpstr(served_by(f, "b"), ==, "tibber:b");
	g_assert_null(served_by(f, "nobody"));

	json_t *st = status_json(f);
	json_t *shared = json_object_get(json_object_get(st, "homes"), "shared");
	g_assert_cmpstr(json_string_value(json_object_get(shared, "account")), ==, "tibber");
	json_t *by = json_object_get(shared, "listed_by");
	g_assert_cmpuint(json_array_size(by), ==, 2);
	g_assert_cmpstr(json_string_value(json_array_get(by, 1)), ==, "tibber:b");
	g_assert_nonnull(json_object_get(json_object_get(st, "accounts"), "tibber:b"));
	json_decref(st);
}

static void test_an_account_whose_listing_fails_keeps_its_homes_and_the_shared_one_moves(
    struct fixture *f, gconstpointer data)
{
	g_autofree char *before = list_homes(f, true, NULL);

	/* A 404 has no stale copy to fall back on: tibber's listing fails. */
	set_cloud(&f->clouds[0], NULL, 404);
	g_autofree char *after = list_homes(f, true, NULL);
	g_assert_cmpstr(after, ==, "b shared a");
	g_assert_cmpstr(served_by(f, "a"), ==, "tibber");
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber:b");

	/* The other cloud changes its homes meanwhile: only its own entries follow. */
	set_cloud(&f->clouds[1], "{\"homes\": [{\"id\": \"c\"}]}", 200);
	g_autofree char *later = list_homes(f, true, NULL);
	g_assert_cmpstr(later, ==, "c a shared");
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber");

	/* Its cloud is back: its homes come first again once the cache stops remembering the
	 * failure (FAILURE_MEMORY_US). */
	set_cloud(&f->clouds[0], NULL, 200);
	gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
	char *back = NULL;
	while (g_get_monotonic_time() < deadline && g_strcmp0(back, "a shared c") != 0) {
		g_free(back);
		back = list_homes(f, true, NULL);
		g_usleep(50 * 1000);
	}
	g_assert_cmpstr(back, ==, "a shared c");
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber");
	g_free(back);
}

static void test_a_home_no_account_lists_any_more_is_served_by_none(struct fixture *f,
								    gconstpointer data)
{
	g_autofree char *before = list_homes(f, true, NULL);
	g_assert_cmpstr(served_by(f, "b"), ==, "tibber:b");

	/* Its cloud answers, without b: b is gone, not kept as a failed account's is. */
	set_cloud(&f->clouds[1], "{\"homes\": [{\"id\": \"c\"}]}", 200);
	g_autofree char *after = list_homes(f, true, NULL);
	g_assert_cmpstr(after, ==, "a shared c");
	g_assert_null(served_by(f, "b"));
	g_assert_cmpstr(served_by(f, "c"), ==, "tibber:b");
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber");

	/* Ids that come and go leave nothing behind: only today's are served. */
	set_cloud(&f->clouds[1], "{\"homes\": [{\"id\": \"d\"}]}", 200);
	g_autofree char *later = list_homes(f, true, NULL);
	g_assert_cmpstr(later, ==, "a shared d");
	g_assert_null(served_by(f, "b"));
	g_assert_null(served_by(f, "c"));
	g_assert_cmpstr(served_by(f, "d"), ==, "tibber:b");
}

static void test_nothing_to_show_says_why(struct fixture *f, gconstpointer data)
{
	int r = 0;

	set_cloud(&f->clouds[0], NULL, 404);
	set_cloud(&f->clouds[1], NULL, 404);
	g_autofree char *names = list_homes(f, true, &r);
	g_assert_null(names);
	g_assert_cmpint(r, ==, -ENOENT);
}

static void test_a_listing_that_needs_a_fetch_is_in_progress_without_may_fetch(
    struct fixture *f, gconstpointer data)
{
	int r = 0;
	g_autofree char *names = list_homes(f, false, &r);

	g_assert_null(names);
	g_assert_cmpint(r, ==, -EINPROGRESS);
}

static void test_a_logout_drops_the_account_and_a_login_adds_it_again(struct fixture *f,
								       gconstpointer data)
{
	g_autofree char *before = list_homes(f, true, NULL);
	const char *comp[] = {"homes", "a"};
	const struct provider_path a_path = {.comp = comp, .n = 2};
	struct session *old = accounts_route(f->accounts, &a_path);
	struct resource_ref ref = {.path = "/homes"};
	struct resource res = {0};

	g_assert_cmpint(token_store_delete(&f->store, "tibber", NULL), ==, 0);
	accounts_rescan(f->accounts);
	g_autofree char *after = list_homes(f, true, NULL);
	g_assert_cmpstr(after, ==, "b shared");
	g_assert_null(served_by(f, "a"));
	g_assert_cmpstr(served_by(f, "shared"), ==, "tibber:b");
	/* The session logged out of sends nothing: its tokens are gone from memory. */
	int requests = fake_server_requests(f->servers[0]);
	g_assert_cmpint(session_get(old, &ref, &res), ==, -EACCES);
	g_assert_cmpint(fake_server_requests(f->servers[0]), ==, requests);
	json_t *st = status_json(f);
	g_assert_null(json_object_get(json_object_get(st, "accounts"), "tibber"));
	json_decref(st);

	log_in(f, "tibber");
	accounts_rescan(f->accounts);
	g_autofree char *again = list_homes(f, true, NULL);
	g_assert_cmpstr(again, ==, "a shared b");
	g_assert_true(accounts_route(f->accounts, &a_path) != old);
}

static void test_metrics_name_each_metric_once_with_a_sample_an_account(struct fixture *f,
									 gconstpointer data)
{
	g_autoptr(GString) out = g_string_new(NULL);

	accounts_render_metrics(f->accounts, out);
	g_auto(GStrv) lines = g_strsplit(out->str, "\n", -1);
	guint helps = 0, samples = 0;
	for (char **l = lines; *l; l++) {
		helps += g_str_has_prefix(*l, "# HELP smarthomefs_api_calls_total ");
		samples += g_str_has_prefix(*l, "smarthomefs_api_calls_total{account=");
	}
	g_assert_cmpuint(helps, ==, 1);
	g_assert_cmpuint(samples, ==, 2);
	g_assert_nonnull(strstr(out->str, "smarthomefs_login_expired{account=\"tibber:b\"} 0\n"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
#define ADD(name) g_test_add("/accounts/" #name, struct fixture, NULL, fixture_set_up, name, \
			     fixture_tear_down)
	ADD(test_a_home_both_accounts_list_is_shown_once_and_served_by_the_first);
	ADD(test_an_account_whose_listing_fails_keeps_its_homes_and_the_shared_one_moves);
	ADD(test_a_home_no_account_lists_any_more_is_served_by_none);
	ADD(test_nothing_to_show_says_why);
	ADD(test_a_listing_that_needs_a_fetch_is_in_progress_without_may_fetch);
	ADD(test_a_logout_drops_the_account_and_a_login_adds_it_again);
	ADD(test_metrics_name_each_metric_once_with_a_sample_an_account);
	return g_test_run();
}
