/* session: the parsed bodies resource_json keeps, and how much they may weigh. */
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "config.h"
#include "session.h"

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
	return (struct resource){.bytes = g_string_free_to_bytes(body), .gen = gen,
				 .session = f->session};
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

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add("/session/recent_small_bodies_are_parsed_once", struct fixture, NULL,
		   fixture_set_up, test_recent_small_bodies_are_parsed_once, fixture_tear_down);
	g_test_add("/session/big_bodies_keep_at_most_256_kib_of_text", struct fixture, NULL,
		   fixture_set_up, test_big_bodies_keep_at_most_256_kib_of_text,
		   fixture_tear_down);
	return g_test_run();
}
