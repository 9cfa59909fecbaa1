/* fs_core: sync, stat and read of a Tibber account over fake HTTP, without FUSE. The
 * "request" is a call of the core with a node, as fs.c's operations make them. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "auth.h"
#include "config.h"
#include "fake_http.h"
#include "fake_login.h"
#include "fs_core.h"
#include "internal_files.h"
#include "prefetch.h"
#include "session.h"

/* What a test sets: the ttl in seconds (0: every stat or read fetches anew), and when not
 * 0, options.prefetch_max, options.max_entries, options.render_memory_mib and the bytes of
 * padding each device's detail carries. */
struct params {
	int ttl;
	int prefetch_max;
	int max_entries;
	int render_memory_mib;
	int detail_padding;
};

struct cloud {
	GMutex lock;
	int soc;       /* (lock) the devices' state of charge, as the API tells it */
	int remaining; /* (lock) the calls its RateLimit header says are left; -1: no header */
	int dropped;   /* (lock) a device its listing leaves out now; 0: none */
	int padding;   /* bytes of a "note" in each device's detail */
};

/* The devices of home h1: d1 .. d10. */
#define DEVICES 10

struct fixture {
	char *dir;
	struct cloud cloud;
	struct fake_server *server;
	struct session *session; /* the accounts' */
	struct accounts *accounts;
	struct fs_core *core;
	GArray *changed; /* uint64_t inodes the core said changed */
};

static void cloud_answer(const struct fake_request *req, int *status, GString *headers,
			 GString *body, void *data)
{
	struct cloud *c = data;

	*status = 200;
	g_string_append(headers, "Content-Type: application/json\r\n");
	g_mutex_lock(&c->lock);
	if (c->remaining >= 0)
		g_string_append_printf(headers, "RateLimit: \"perday\";r=%d;t=3600\r\n",
				       c->remaining);
	g_mutex_unlock(&c->lock);
	if (strcmp(req->target, "/homes") == 0) {
		g_string_append(body, "{\"homes\": [{\"id\": \"h1\", \"name\": \"Home\"}]}");
	} else if (strcmp(req->target, "/homes/h1/devices") == 0) {
		g_string_append(body, "{\"devices\": [");
		g_mutex_lock(&c->lock);
		for (int i = 1; i <= DEVICES; i++)
			if (i != c->dropped)
				g_string_append_printf(body, "%s{\"id\": \"d%d\"}",
						       i > 1 ? ", " : "", i);
		g_mutex_unlock(&c->lock);
		g_string_append(body, "]}");
	} else if (g_str_has_prefix(req->target, "/homes/h1/devices/d")) {
		g_mutex_lock(&c->lock);
		g_string_append_printf(body,
				       "{\"id\": \"%s\", \"capabilities\": [{\"id\": \"soc\", "
				       "\"value\": %d}], \"note\": \"",
				       req->target + strlen("/homes/h1/devices/"), c->soc);
		for (int i = 0; i < c->padding; i++)
			g_string_append_c(body, 'x');
		g_string_append(body, "\"}");
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

/* @data: the struct params of the test. */
static void fixture_set_up(struct fixture *f, gconstpointer data)
{
	const struct params *params = data;
	struct account account = {0};
	struct options opts;

	f->dir = g_dir_make_tmp("smarthomefs-fs-core-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	g_mutex_init(&f->cloud.lock);
	f->cloud.soc = 74;
	f->cloud.remaining = -1;
	f->cloud.padding = params->detail_padding;
	f->server = fake_server_start(cloud_answer, &f->cloud);
	g_assert_cmpint(account_parse("tibber", &account, NULL), ==, 0);
	options_init(&opts);
	opts.ttl = params->ttl;
	opts.prefetch = 1;
	if (params->prefetch_max)
		opts.prefetch_max = params->prefetch_max;
	if (params->max_entries)
		opts.max_entries = params->max_entries;
	if (params->render_memory_mib)
		opts.render_memory_mib = params->render_memory_mib;
	opts.api_url = fake_server_url(f->server, "");
	opts.cache_dir = g_build_filename(f->dir, "cache", NULL);
	opts.state_dir = g_build_filename(f->dir, "state", NULL);
	opts.token_store = TOKEN_STORE_FILE;
	struct token_store store = {.kind = TOKEN_STORE_FILE, .state_dir = opts.state_dir};
	fake_login_save(&store, "tibber", "tibber", "AT", "RT", "client");
	f->session = session_new(&account, &opts);
	g_assert_cmpint(session_start(f->session, NULL), ==, 0);
	f->changed = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	f->accounts = accounts_new_one(f->session);
	f->core = fs_core_new(f->accounts, note_changed, f);
	account_clear(&account);
}

static void fixture_tear_down(struct fixture *f, gconstpointer data)
{
	fs_core_free(f->core);
	accounts_free(f->accounts);
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
		g_assert_cmpint(fs_core_dir(f->core, node->ino, NULL, true, &dir), ==, 0);
		node = tree_child(t, dir, *p);
		g_assert_nonnull(node);
	}
	return node;
}

static char *read_all(struct fixture *f, struct node *node)
{
	GBytes *bytes = NULL;
	gsize len = 0;

	g_assert_cmpint(fs_core_read(f->core, node, true, &bytes), ==, 0);
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

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &st, &timeout_s), ==, 0);
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

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &before, &timeout_s), ==, 0);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &same, &timeout_s), ==, 0);
	g_assert_cmpint(same.st_mtim.tv_sec, ==, before.st_mtim.tv_sec);
	g_assert_cmpint(same.st_mtim.tv_nsec, ==, before.st_mtim.tv_nsec);
	g_assert_cmpuint(f->changed->len, ==, 0);

	set_soc(f, 100);
	/* Read through the other file of the same resource: soc's memo is now old. */
	g_autofree char *text = read_all(f, json);
	g_assert_nonnull(strstr(text, "100"));
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &after, &timeout_s), ==, 0);
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

	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &told, &timeout_s), ==, 0);
	int requests = fake_server_requests(f->server);
	set_soc(f, 5);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_AS_TOLD, true, &as_told, &timeout_s), ==,
			0);
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
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, true, &st, &timeout_s), ==, 0);
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

	g_assert_cmpint(fs_core_stat(f->core, json, STAT_NOW, true, &st, &timeout_s), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, json, true, &first), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, json, true, &chunk), ==, 0);
	g_assert_true(g_bytes_get_data(chunk, NULL) == g_bytes_get_data(first, NULL));
	g_assert_cmpuint(g_bytes_get_size(first), ==, (gsize)st.st_size);

	set_soc(f, 12); /* ttl 60: still the cached version */
	g_assert_cmpint(fs_core_read(f->core, json, true, &later), ==, 0);
	g_assert_true(g_bytes_get_data(later, NULL) == g_bytes_get_data(first, NULL));
	g_bytes_unref(first);
	g_bytes_unref(chunk);
	g_bytes_unref(later);
}

/* The renderings kept weigh at most render_memory_mib: reading a second large file lets
 * the first one's rendering go, and the first is rendered again when read again. */
static void test_renderings_past_render_memory_mib_are_dropped(struct fixture *f,
							       gconstpointer data)
{
	struct node *d1 = walk(f, "homes/h1/devices/d1/device.json");
	struct node *d2 = walk(f, "homes/h1/devices/d2/device.json");
	GBytes *first = NULL, *again = NULL, *other = NULL;

	g_assert_cmpint(fs_core_read(f->core, d1, true, &first), ==, 0);
	g_assert_cmpuint(g_bytes_get_size(first), >, 600 * 1024);
	g_assert_cmpint(fs_core_read(f->core, d1, true, &again), ==, 0);
	g_assert_true(g_bytes_get_data(again, NULL) == g_bytes_get_data(first, NULL));
	g_bytes_unref(again);
	/* Both renderings weigh more than the 1 MiB bound: the older goes. */
	g_assert_cmpint(fs_core_read(f->core, d2, true, &other), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, d1, true, &again), ==, 0);
	g_assert_true(g_bytes_get_data(again, NULL) != g_bytes_get_data(first, NULL));
	g_assert_true(g_bytes_equal(again, first));
	g_bytes_unref(first);
	g_bytes_unref(again);
	g_bytes_unref(other);
}

static void test_a_new_version_is_rendered_anew(struct fixture *f, gconstpointer data)
{
	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc");
	GBytes *first = NULL, *later = NULL;

	g_assert_cmpint(fs_core_read(f->core, soc, true, &first), ==, 0);
	set_soc(f, 9); /* ttl 0: the next read fetches the new version */
	g_assert_cmpint(fs_core_read(f->core, soc, true, &later), ==, 0);
	g_assert_cmpmem(g_bytes_get_data(later, NULL), g_bytes_get_size(later), "9\n", 2);
	g_assert_cmpmem(g_bytes_get_data(first, NULL), g_bytes_get_size(first), "74\n", 3);
	g_bytes_unref(first);
	g_bytes_unref(later);
}

/* A FUSE worker asks without fetching: what the cache holds is answered, the rest is
 * -EINPROGRESS at once (for the fetch pool), with no request made. */
static void test_without_fetching_only_the_cache_answers(struct fixture *f, gconstpointer data)
{
	struct tree *t = fs_core_tree(f->core);
	struct node *homes = walk(f, "homes");
	struct node *devices = NULL, *dir = NULL;
	int requests = fake_server_requests(f->server);

	g_assert_cmpint(fs_core_dir(f->core, homes->ino, NULL, false, &dir), ==, -EINPROGRESS);
	g_assert_cmpint(fake_server_requests(f->server), ==, requests);
	walk(f, "homes/h1"); /* fetches the homes */
	struct stat st;
	double timeout_s;
	GBytes *bytes = NULL;

	g_assert_cmpint(fs_core_dir(f->core, homes->ino, NULL, false, &dir), ==, 0);
	struct node *h1 = tree_child(t, dir, "h1");
	g_assert_cmpint(fs_core_dir(f->core, h1->ino, NULL, false, &dir), ==, 0);
	devices = tree_child(t, dir, "devices");
	requests = fake_server_requests(f->server);
	g_assert_cmpint(fs_core_dir(f->core, devices->ino, NULL, false, &dir), ==, -EINPROGRESS);
	g_assert_null(dir);
	g_assert_cmpint(fake_server_requests(f->server), ==, requests);

	struct node *soc = walk(f, "homes/h1/devices/d1/values/soc"); /* fetches */
	struct node *json = walk(f, "homes/h1/devices/d1/device.json");
	requests = fake_server_requests(f->server);
	g_assert_cmpint(fs_core_stat(f->core, soc, STAT_NOW, false, &st, &timeout_s), ==, 0);
	g_assert_cmpint(fs_core_read(f->core, json, false, &bytes), ==, 0);
	g_assert_cmpint(fake_server_requests(f->server), ==, requests);
	g_bytes_unref(bytes);
}

/* The names of directory @path, synced, as "a b c"; its listing resource in @listing. */
static char *names_of(struct fixture *f, const char *path, struct resource *listing,
		      struct node **ret_dir)
{
	struct node *dir = NULL;
	GString *out = g_string_new(NULL);

	g_assert_cmpint(fs_core_dir(f->core, walk(f, path)->ino, listing, true, &dir), ==, 0);
	GArray *names = tree_list(fs_core_tree(f->core), dir);
	for (guint i = 0; i < names->len; i++)
		g_string_append_printf(out, "%s%s", i ? " " : "",
				       g_array_index(names, struct tree_dirent, i).name);
	tree_dirents_free(names);
	*ret_dir = dir;
	return g_string_free(out, FALSE);
}

static void test_a_listing_shows_at_most_max_entries(struct fixture *f, gconstpointer data)
{
	struct resource listing = {0};
	struct node *dir = NULL;
	g_autofree char *names = names_of(f, "homes/h1/devices", &listing, &dir);

	g_assert_cmpstr(names, ==, "d1 d2 d3");
	resource_clear(&listing);
}

/* How many resources prefetch queues when h1's devices are listed. */
static uint64_t prefetched_for_devices(struct fixture *f)
{
	struct resource listing = {0};
	struct node *dir = NULL;
	struct prefetch *pf = prefetch_new(f->core);
	g_autofree char *names = names_of(f, "homes/h1/devices", &listing, &dir);

	prefetch_start(pf);
	prefetch_listing(pf, dir, &listing);
	uint64_t queued = prefetch_queued(pf);
	prefetch_free(pf);
	resource_clear(&listing);
	return queued;
}

/* Prefetch queues at most prefetch_max resources for one listing. */
static void test_a_listing_prefetches_at_most_prefetch_max(struct fixture *f, gconstpointer data)
{
	g_assert_cmpuint(prefetched_for_devices(f), ==, 4);
}

/* And never past what the quota affords: half of the calls it has left. */
static void test_a_listing_prefetches_no_more_than_the_quota_affords(struct fixture *f,
								     gconstpointer data)
{
	g_mutex_lock(&f->cloud.lock);
	f->cloud.remaining = 6;
	g_mutex_unlock(&f->cloud.lock);
	g_assert_cmpuint(prefetched_for_devices(f), ==, 3);
}

/* A device that leaves its list takes its cached copy with it (issue 17 #9: session_forget
 * drops the disk copy as well);
 * the list itself, and the other devices, stay. */
static void test_a_gone_entry_takes_its_cached_copy(struct fixture *f, gconstpointer data)
{
	struct resource_ref d2 = {.path = "/homes/h1/devices/d2", .key = "device:d2"};
	struct resource_ref d3 = {.path = "/homes/h1/devices/d3", .key = "device:d3"};
	struct resource res = {0};
	struct node *dir = NULL;

	g_free(read_all(f, walk(f, "homes/h1/devices/d2/device.json")));
	g_free(read_all(f, walk(f, "homes/h1/devices/d3/device.json")));
	g_assert_cmpint(session_peek(f->session, &d2, &res), ==, 0);
	resource_clear(&res);

	g_mutex_lock(&f->cloud.lock);
	f->cloud.dropped = 2;
	g_mutex_unlock(&f->cloud.lock);
	g_free(names_of(f, "homes/h1/devices", NULL, &dir)); /* ttl 0: listed anew */
	g_assert_cmpint(session_peek(f->session, &d2, &res), ==, -ENOENT);
	g_assert_cmpint(session_peek(f->session, &d3, &res), ==, 0);
	resource_clear(&res);
}

static void test_directories_and_errors(struct fixture *f, gconstpointer data)
{
	struct tree *t = fs_core_tree(f->core);
	struct node *file = walk(f, "homes/h1/home.json");
	struct node *dir = NULL;
	struct stat st;
	double timeout_s;

	g_assert_cmpint(fs_core_dir(f->core, file->ino, NULL, true, &dir), ==, -ENOTDIR);
	g_assert_null(dir);
	g_assert_cmpint(fs_core_dir(f->core, 12345, NULL, true, &dir), ==, -ENOENT);
	g_assert_cmpint(fs_core_dir(f->core, tree_root(t)->ino, NULL, true, &dir), ==, 0);
	/* The internal directory is listed after the provider's entries. */
	GArray *names = tree_list(t, dir);
	g_assert_cmpuint(names->len, ==, 2);
	g_assert_cmpstr(g_array_index(names, struct tree_dirent, 0).name, ==, "homes");
	g_assert_cmpstr(g_array_index(names, struct tree_dirent, 1).name, ==, INTERNAL_DIR);
	tree_dirents_free(names);
	struct node *internal = tree_child(t, dir, INTERNAL_DIR);
	g_assert_cmpint(fs_core_dir(f->core, internal->ino, NULL, true, &dir), ==, 0);
	g_assert_nonnull(tree_child(t, dir, INTERNAL_STATUS));
	g_assert_nonnull(tree_child(t, dir, INTERNAL_METRICS));
	GBytes *bytes = NULL;
	g_assert_cmpint(fs_core_read(f->core, tree_child(t, dir, INTERNAL_STATUS), true, &bytes),
			==, -EIO);
	g_assert_cmpint(fs_core_stat(f->core, internal, STAT_NOW, true, &st, &timeout_s), ==, 0);
	g_assert_true(S_ISDIR(st.st_mode));
	g_assert_cmpfloat(timeout_s, ==, 0);
	/* A path no provider knows. */
	struct node *homes = walk(f, "homes");
	g_assert_null(tree_child(t, homes, "h2"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
#define ADD(name, fn, ttl_s, ...)                                                                  \
	do {                                                                                       \
		static const struct params params = {.ttl = ttl_s, __VA_ARGS__};                   \
		g_test_add("/fs_core/" name, struct fixture, &params, fixture_set_up, fn,          \
			   fixture_tear_down);                                                     \
	} while (0)
	ADD("stat_size_is_what_a_read_returns", test_stat_size_is_what_a_read_returns, 60);
	ADD("changed_bytes_are_a_new_mtime_and_a_notice",
	    test_changed_bytes_are_a_new_mtime_and_a_notice, 0);
	ADD("stat_as_told_asks_no_cloud", test_stat_as_told_asks_no_cloud, 0);
	ADD("told_bytes_are_the_generation_the_kernel_knows",
	    test_told_bytes_are_the_generation_the_kernel_knows, 60);
	ADD("a_version_is_rendered_once", test_a_version_is_rendered_once, 60);
	ADD("a_new_version_is_rendered_anew", test_a_new_version_is_rendered_anew, 0);
	ADD("renderings_past_render_memory_mib_are_dropped",
	    test_renderings_past_render_memory_mib_are_dropped, 60, .render_memory_mib = 1,
	    .detail_padding = 600 * 1024);
	ADD("without_fetching_only_the_cache_answers", test_without_fetching_only_the_cache_answers,
	    60);
	ADD("directories_and_errors", test_directories_and_errors, 60);
	ADD("a_gone_entry_takes_its_cached_copy", test_a_gone_entry_takes_its_cached_copy, 0);
	ADD("a_listing_shows_at_most_max_entries", test_a_listing_shows_at_most_max_entries, 60,
	    .max_entries = 3);
	ADD("a_listing_prefetches_at_most_prefetch_max",
	    test_a_listing_prefetches_at_most_prefetch_max, 60, .prefetch_max = 4);
	ADD("a_listing_prefetches_no_more_than_the_quota_affords",
	    test_a_listing_prefetches_no_more_than_the_quota_affords, 60);
	return g_test_run();
}
