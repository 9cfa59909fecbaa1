/* fs_core: sync, stat and read of a Tibber account over fake HTTP, without FUSE. The
 * "request" is a call of the core with a node, as fs.c's operations make them. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "auth.h"
#include "config.h"
#include "fake_http.h"
#include "fs_core.h"
#include "internal_files.h"
#include "session.h"

struct cloud {
	GMutex lock;
	int soc; /* (lock) the device's state of charge, as the API tells it */
};

struct fixture {
	char *dir;
	struct cloud cloud;
	struct fake_server *server;
	struct session *session;
	struct fs_core *core;
	GArray *changed; /* uint64_t inodes the core said changed */
};

static void cloud_answer(const struct fake_request *req, int *status, GString *headers,
			 GString *body, void *data)
{
	struct cloud *c = data;

	*status = 200;
	g_string_append(headers, "Content-Type: application/json\r\n");
	if (strcmp(req->target, "/homes") == 0) {
		g_string_append(body, "{\"homes\": [{\"id\": \"h1\", \"name\": \"Home\"}]}");
	} else if (strcmp(req->target, "/homes/h1/devices") == 0) {
		g_string_append(body, "{\"devices\": [{\"id\": \"d1\"}]}");
	} else if (strcmp(req->target, "/homes/h1/devices/d1") == 0) {
		g_mutex_lock(&c->lock);
		g_string_append_printf(body,
				       "{\"id\": \"d1\", \"capabilities\": [{\"id\": \"soc\", "
				       "\"value\": %d}]}",
				       c->soc);
		g_mutex_unlock(&c->lock);
	} else {
		*status = 404;
		g_string_append(body, "{}");
	}
}

static void note_changed(void *data, uint64_t ino)
{
	struct fixture *f = data;

	g_array_append_val(f->changed, ino);
}

/* @data: the ttl in seconds (0: every stat or read fetches anew). */
static void fixture_set_up(struct fixture *f, gconstpointer data)
{
	struct account account = {0};
	struct options opts;
	struct token_set ts = {.provider = g_strdup("tibber"),
			       .access_token = g_strdup("AT"),
			       .refresh_token = g_strdup("RT"),
			       .client_id = g_strdup("client"),
			       .expires_at_s = g_get_real_time() / G_USEC_PER_SEC + 3600};
	g_autofree char *json = token_set_to_json(&ts);

	f->dir = g_dir_make_tmp("smarthomefs-fs-core-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	g_mutex_init(&f->cloud.lock);
	f->cloud.soc = 74;
	f->server = fake_server_start(cloud_answer, &f->cloud);
	g_assert_cmpint(account_parse("tibber", &account, NULL), ==, 0);
	options_init(&opts);
	opts.ttl = GPOINTER_TO_INT(data);
	opts.api_url = fake_server_url(f->server, "");
	opts.cache_dir = g_build_filename(f->dir, "cache", NULL);
	opts.state_dir = g_build_filename(f->dir, "state", NULL);
	opts.token_store = TOKEN_STORE_FILE;
	struct token_store store = {.kind = TOKEN_STORE_FILE, .state_dir = opts.state_dir};
	g_assert_cmpint(token_store_save(&store, "tibber", "tibber", json, NULL), ==, 0);
	f->session = session_new(&account, &opts);
	g_assert_cmpint(session_start(f->session, NULL), ==, 0);
	f->changed = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	f->core = fs_core_new(f->session, note_changed, f);
	account_clear(&account);
	token_set_clear(&ts);
}

static void fixture_tear_down(struct fixture *f, gconstpointer data)
{
	fs_core_free(f->core);
	session_free(f->session);
	fake_server_stop(f->server);
	g_array_free(f->changed, TRUE);
	g_mutex_clear(&f->cloud.lock);
	/* The cache and the token file are the other modules' to lay out: remove all. */
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
	g_assert_cmpint(system(cmd), ==, 0);
	g_free(f->dir);
}

/* The node at @path below the root, each directory on the way synced as a lookup does. */
static struct node *walk(struct fixture *f, const char *path)
{
	struct tree *t = fs_core_tree(f->core);
	struct node *node = tree_root(t);
	g_auto(GStrv) parts = g_strsplit(path, "/", -1);

	for (char **p = parts; *p; p++) {
		struct node *dir = NULL;
		g_assert_cmpint(fs_core_dir(f->core, node->ino, NULL, &dir), ==, 0);
		node = tree_child(t, dir, *p);
		g_assert_nonnull(node);
	}
	return node;
}

static char *read_all(struct fixture *f, struct node *node)
{
	GBytes *bytes = NULL;
	gsize len = 0;

	g_assert_cmpint(fs_core_read(f->core, node, &bytes), ==, 0);
	const char *data = g_bytes_get_data(bytes, &len);
	char *s = g_strndup(data, len);
	g_bytes_unref(bytes);
	return s;
}

static void set_soc(struct fixture *f, int soc)
{
	g_mutex_lock(&f->cloud.lock);
	f->cloud.soc = soc;
	g_mutex_unlock(&f->cloud.lock);
}

static void test_stat_size_is_what_a_read_returns(struct fixture *f, gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	struct stat st;
	double timeout_s;

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &st, &timeout_s), ==, 0);
	g_autofree char *text = read_all(f, soc);
	g_assert_cmpstr(text, ==, "74\n");
	g_assert_true(S_ISREG(st.st_mode));
	g_assert_cmpint(st.st_size, ==, 3);
	g_assert_cmpuint(st.st_ino, ==, soc->ino);
	g_assert_cmpuint(st.st_ino, ==, tree_path_ino("/homes/h1/devices/d1/values/soc"));
}

static void test_changed_bytes_are_a_new_mtime_and_a_notice(struct fixture *f, gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	struct node *json = walk(f, "homes/h1/devices/d1/device.json");
	struct stat before, same, after;
	double timeout_s;

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &before, &timeout_s), ==, 0);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &same, &timeout_s), ==, 0);
	g_assert_cmpint(same.st_mtim.tv_sec, ==, before.st_mtim.tv_sec);
	g_assert_cmpint(same.st_mtim.tv_nsec, ==, before.st_mtim.tv_nsec);
	g_assert_cmpuint(f->changed->len, ==, 0);

	set_soc(f, 100);
	/* Read through the other file of the same resource: soc's memo is now old. */
	g_autofree char *text = read_all(f, json);
	g_assert_nonnull(strstr(text, "100"));
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &after, &timeout_s), ==, 0);
	g_assert_cmpint(after.st_size, ==, 4);
	g_assert_true(after.st_mtim.tv_sec > before.st_mtim.tv_sec ||
		      (after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
		       after.st_mtim.tv_nsec > before.st_mtim.tv_nsec));
	g_assert_cmpuint(f->changed->len, >=, 1);
	g_assert_cmpuint(g_array_index(f->changed, uint64_t, f->changed->len - 1), ==, soc->ino);
}

static void test_stat_as_told_asks_no_cloud(struct fixture *f, gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	struct stat told, as_told;
	double timeout_s;

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &told, &timeout_s), ==, 0);
	int requests = fake_server_requests(f->server);
	set_soc(f, 5);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_AS_TOLD, &as_told, &timeout_s), ==, 0);
	g_assert_cmpint(fake_server_requests(f->server), ==, requests);
	g_assert_cmpint(as_told.st_size, ==, told.st_size);
	g_assert_cmpfloat(timeout_s, ==, 0);
}

static void test_told_bytes_are_the_generation_the_kernel_knows(struct fixture *f,
								gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	struct stat st;
	double timeout_s;
	GBytes *bytes = NULL;
	uint64_t gen = 0;

	/* Nothing told yet: nothing to fill. */
	g_assert_cmpint(fs_core_told_bytes(f->core, soc, &bytes, &gen), ==, -ESTALE);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, &st, &timeout_s), ==, 0);
	int requests = fake_server_requests(f->server);
	g_assert_cmpint(fs_core_told_bytes(f->core, soc, &bytes, &gen), ==, 0);
	g_assert_cmpuint(g_bytes_get_size(bytes), ==, (gsize)st.st_size);
	g_assert_true(fs_core_is_told(f->core, soc, gen));
	g_assert_cmpint(fake_server_requests(f->server), ==, requests);
	g_bytes_unref(bytes);
}

/* A read comes in chunks (128 KiB each): every chunk of one version must be a slice of
 * one rendering, not a parse and a rendering each, or a read is quadratic in the size. */
static void test_a_version_is_rendered_once(struct fixture *f, gconstpointer data)
{
	struct node *json = walk(f, "homes/h1/devices/d1/device.json");
	struct stat st;
	double timeout_s;
	GBytes *first = NULL, *chunk = NULL, *later = NULL;

	g_assert_cmpint(fs_core_stat(f->core, json, STAT_NOW, &st, &timeout_s), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, json, &first), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, json, &chunk), ==, 0);
	g_assert_true(g_bytes_get_data(chunk, NULL) == g_bytes_get_data(first, NULL));
	g_assert_cmpuint(g_bytes_get_size(first), ==, (gsize)st.st_size);

	set_soc(f, 12); /* ttl 60: still the cached version */
	g_assert_cmpint(fs_core_read(f->core, json, &later), ==, 0);
	g_assert_true(g_bytes_get_data(later, NULL) == g_bytes_get_data(first, NULL));
	g_bytes_unref(first);
	g_bytes_unref(chunk);
	g_bytes_unref(later);
}

static void test_a_new_version_is_rendered_anew(struct fixture *f, gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	GBytes *first = NULL, *later = NULL;

	g_assert_cmpint(fs_core_read(f->core, soc, &first), ==, 0);
	set_soc(f, 9); /* ttl 0: the next read fetches the new version */
	g_assert_cmpint(fs_core_read(f->core, soc, &later), ==, 0);
	g_assert_cmpmem(g_bytes_get_data(later, NULL), g_bytes_get_size(later), "9\n", 2);
	g_assert_cmpmem(g_bytes_get_data(first, NULL), g_bytes_get_size(first), "74\n", 3);
	g_bytes_unref(first);
	g_bytes_unref(later);
}

static void test_directories_and_errors(struct fixture *f, gconstpointer data)
{
	struct tree *t = fs_core_tree(f->core);
	struct node *file = walk(f, "homes/h1/home.json");
	struct node *dir = NULL;
	struct stat st;
	double timeout_s;

	g_assert_cmpint(fs_core_dir(f->core, file->ino, NULL, &dir), ==, -ENOTDIR);
	g_assert_null(dir);
	g_assert_cmpint(fs_core_dir(f->core, 12345, NULL, &dir), ==, -ENOENT);
	g_assert_cmpint(fs_core_dir(f->core, tree_root(t)->ino, NULL, &dir), ==, 0);
	/* The internal directory is listed after the provider's entries. */
	GArray *names = tree_list(t, dir);
	g_assert_cmpuint(names->len, ==, 2);
	g_assert_cmpstr(g_array_index(names, struct tree_dirent, 0).name, ==, "homes");
	g_assert_cmpstr(g_array_index(names, struct tree_dirent, 1).name, ==, INTERNAL_DIR);
	tree_dirents_free(names);
	struct node *internal = tree_child(t, dir, INTERNAL_DIR);
	g_assert_cmpint(fs_core_dir(f->core, internal->ino, NULL, &dir), ==, 0);
	g_assert_nonnull(tree_child(t, dir, INTERNAL_STATUS));
	g_assert_nonnull(tree_child(t, dir, INTERNAL_METRICS));
	GBytes *bytes = NULL;
	g_assert_cmpint(fs_core_read(f->core, tree_child(t, dir, INTERNAL_STATUS), &bytes), ==,
			-EIO);
	g_assert_cmpint(fs_core_stat(f->core, internal, STAT_NOW, &st, &timeout_s), ==, 0);
	g_assert_true(S_ISDIR(st.st_mode));
	g_assert_cmpfloat(timeout_s, ==, 0);
	/* A path no provider knows. */
	struct node *homes = walk(f, "homes");
	g_assert_null(tree_child(t, homes, "h2"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
#define ADD(name, fn, ttl)                                                                         \
	g_test_add("/fs_core/" name, struct fixture, GINT_TO_POINTER(ttl), fixture_set_up, fn,     \
		   fixture_tear_down)
	ADD("stat_size_is_what_a_read_returns", test_stat_size_is_what_a_read_returns, 60);
	ADD("changed_bytes_are_a_new_mtime_and_a_notice",
	    test_changed_bytes_are_a_new_mtime_and_a_notice, 0);
	ADD("stat_as_told_asks_no_cloud", test_stat_as_told_asks_no_cloud, 0);
	ADD("told_bytes_are_the_generation_the_kernel_knows",
	    test_told_bytes_are_the_generation_the_kernel_knows, 60);
	ADD("a_version_is_rendered_once", test_a_version_is_rendered_once, 60);
	ADD("a_new_version_is_rendered_anew", test_a_new_version_is_rendered_anew, 0);
	ADD("directories_and_errors", test_directories_and_errors, 60);
	return g_test_run();
}
