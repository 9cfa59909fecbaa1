/* The cache: single flight, stale-if-error, generations, the disk copy. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <utime.h>

#include "cache.h"

/* A scripted fetch: answers @body, or @result when it is an error. */
struct fake {
	GMutex lock;
	GCond cond;
	const char *body;
	int result;
	int calls;
	/* single flight: the fetch holds until @expected callers have arrived */
	int arrived;
	int expected;
	/* hang: the fetch holds until @release */
	bool hang;
	bool started;
	bool release;
};

static void fake_init(struct fake *f, const char *body)
{
	memset(f, 0, sizeof(*f));
	g_mutex_init(&f->lock);
	g_cond_init(&f->cond);
	f->body = body;
}

static void fake_clear(struct fake *f)
{
	g_mutex_clear(&f->lock);
	g_cond_clear(&f->cond);
}

static int fake_fetch(void *ctx, const char *path, GBytes **body)
{
	struct fake *f = ctx;
	int r;

	g_mutex_lock(&f->lock);
	f->calls++;
	f->started = true;
	g_cond_broadcast(&f->cond);
	while (f->arrived < f->expected || (f->hang && !f->release))
		g_cond_wait(&f->cond, &f->lock);
	r = f->result;
	if (r == 0)
		*body = g_bytes_new(f->body, strlen(f->body));
	g_mutex_unlock(&f->lock);
	return r;
}

static int get(struct cache *c, const char *key, int ttl, bool offline, struct fake *f,
	       struct cache_hit *hit)
{
	return cache_get(c, key, key, ttl, offline, fake_fetch, f, hit);
}

static void assert_body(const struct cache_hit *hit, const char *expected)
{
	gsize len;
	const char *data = g_bytes_get_data(hit->body, &len);

	g_assert_cmpmem(data, len, expected, strlen(expected));
}

static char *temp_dir(void)
{
	GError *err = NULL;
	char *dir = g_dir_make_tmp("smarthomefs-cache-XXXXXX", &err);

	g_assert_no_error(err);
	return dir;
}

static void remove_dir(const char *dir)
{
	GDir *d = g_dir_open(dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *file = g_build_filename(dir, name, NULL);

		g_unlink(file);
	}
	if (d)
		g_dir_close(d);
	g_rmdir(dir);
}

static void test_fresh_entry_is_served_without_a_fetch(void)
{
	struct cache *c = cache_new(NULL, 5);
	struct fake f;
	struct cache_hit hit;
	struct cache_stats stats;

	fake_init(&f, "{\"a\":1}");
	g_assert_cmpint(get(c, "/me", 60, false, &f, &hit), ==, 0);
	assert_body(&hit, "{\"a\":1}");
	g_assert_cmpuint(hit.gen, !=, 0);
	g_assert_false(hit.stale);
	cache_hit_clear(&hit);
	g_assert_cmpint(get(c, "/me", 60, false, &f, &hit), ==, 0);
	assert_body(&hit, "{\"a\":1}");
	cache_hit_clear(&hit);
	g_assert_cmpint(f.calls, ==, 1);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.fetches, ==, 1);
	g_assert_cmpuint(stats.hits, ==, 1);
	g_assert_cmpuint(stats.entries, ==, 1);
	g_assert_cmpuint(stats.bytes, ==, 7);
	g_assert_cmpuint(cache_peek_gen(c, "/me"), !=, 0);
	g_assert_cmpuint(cache_peek_gen(c, "/other"), ==, 0);
	cache_free(c);
	fake_clear(&f);
}

struct reader {
	struct cache *c;
	struct fake *f;
	int r;
	struct cache_hit hit;
};

static void *reader_run(void *data)
{
	struct reader *rd = data;

	g_mutex_lock(&rd->f->lock);
	rd->f->arrived++;
	g_cond_broadcast(&rd->f->cond);
	g_mutex_unlock(&rd->f->lock);
	rd->r = get(rd->c, "/homes/1/zoneStates", 3600, false, rd->f, &rd->hit);
	return NULL;
}

static void test_64_readers_of_a_cold_resource_cause_one_fetch(void)
{
	enum { N = 64 };
	struct cache *c = cache_new(NULL, 30);
	struct fake f;
	struct reader readers[N];
	GThread *threads[N];
	uint64_t gen = 0;

	fake_init(&f, "{\"zoneStates\":{}}");
	f.expected = N;
	for (int i = 0; i < N; i++) {
		readers[i] = (struct reader){.c = c, .f = &f};
		threads[i] = g_thread_new("reader", reader_run, &readers[i]);
	}
	for (int i = 0; i < N; i++) {
		g_thread_join(threads[i]);
		g_assert_cmpint(readers[i].r, ==, 0);
		assert_body(&readers[i].hit, "{\"zoneStates\":{}}");
		if (i == 0)
			gen = readers[0].hit.gen;
		g_assert_cmpuint(readers[i].hit.gen, ==, gen);
		cache_hit_clear(&readers[i].hit);
	}
	g_assert_cmpint(f.calls, ==, 1);
	cache_free(c);
	fake_clear(&f);
}

static void test_a_failed_refresh_serves_the_old_copy_stale(void)
{
	struct cache *c = cache_new(NULL, 5);
	struct fake f;
	struct cache_hit hit;
	struct cache_stats stats;
	uint64_t gen;

	fake_init(&f, "old");
	g_assert_cmpint(get(c, "/k", 0, false, &f, &hit), ==, 0);
	gen = hit.gen;
	cache_hit_clear(&hit);
	f.result = -EIO;
	g_assert_cmpint(get(c, "/k", 0, false, &f, &hit), ==, 0);
	assert_body(&hit, "old");
	g_assert_true(hit.stale);
	g_assert_cmpuint(hit.gen, ==, gen);
	cache_hit_clear(&hit);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.stale_served, ==, 1);
	g_assert_cmpuint(stats.errors, ==, 1);

	f.result = -EAGAIN;
	g_assert_cmpint(get(c, "/cold", 0, false, &f, &hit), ==, -EAGAIN);
	g_assert_null(hit.body);
	cache_free(c);
	fake_clear(&f);
}

static void test_a_gone_resource_drops_its_entry_and_disk_copy(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;

	fake_init(&f, "here");
	g_assert_cmpint(get(c, "/homes/1/devices/x", 0, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	f.result = -ENOENT;
	g_assert_cmpint(get(c, "/homes/1/devices/x", 0, false, &f, &hit), ==, -ENOENT);
	g_assert_null(hit.body);
	g_assert_cmpuint(cache_peek_gen(c, "/homes/1/devices/x"), ==, 0);
	g_assert_cmpint(get(c, "/homes/1/devices/x", 0, true, &f, &hit), ==, -ENETDOWN);
	cache_free(c);

	c = cache_new(dir, 5);
	g_assert_cmpint(get(c, "/homes/1/devices/x", 0, true, &f, &hit), ==, -ENETDOWN);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void assert_counts(struct cache *c, uint64_t entries, uint64_t bytes)
{
	struct cache_stats stats;

	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.entries, ==, entries);
	g_assert_cmpuint(stats.bytes, ==, bytes);
}

static void test_entry_and_byte_counts_follow_every_body_change(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;

	fake_init(&f, "four");
	g_assert_cmpint(get(c, "/a", 0, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	g_assert_cmpint(get(c, "/b", 0, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	assert_counts(c, 2, 8);
	f.body = "longer";
	g_assert_cmpint(get(c, "/a", 0, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	assert_counts(c, 2, 10);
	f.result = -ENOENT;
	g_assert_cmpint(get(c, "/b", 0, false, &f, &hit), ==, -ENOENT);
	assert_counts(c, 1, 6);
	/* A failure that serves the old copy keeps it counted. */
	f.result = -EIO;
	g_assert_cmpint(get(c, "/a", 0, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	assert_counts(c, 1, 6);
	cache_free(c);

	/* Loaded from disk after a remount: counted too. */
	c = cache_new(dir, 5);
	assert_counts(c, 0, 0);
	g_assert_cmpint(get(c, "/a", 3600, true, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	assert_counts(c, 1, 6);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static int files_in(const char *dir)
{
	GDir *d = g_dir_open(dir, 0, NULL);
	int n = 0;

	while (d && g_dir_read_name(d))
		n++;
	if (d)
		g_dir_close(d);
	return n;
}

static void test_memory_bound_evicts_the_least_recently_used_to_its_disk_copy(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit a, hit;
	struct cache_stats stats;

	cache_set_bounds(c, 10, 0);
	fake_init(&f, "sixsix");
	g_assert_cmpint(get(c, "/a", 3600, false, &f, &a), ==, 0);
	g_assert_cmpint(get(c, "/b", 3600, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	/* Two bodies of 6 bytes do not fit in 10: /a, used least recently, went. */
	assert_counts(c, 1, 6);
	g_assert_cmpint(cache_peek(c, "/a", &hit), ==, -ENOENT);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.evictions, ==, 1);
	/* Read again from its disk copy, not the cloud, as the same version. */
	g_assert_cmpint(get(c, "/a", 3600, false, &f, &hit), ==, 0);
	g_assert_cmpint(f.calls, ==, 2);
	g_assert_cmpuint(hit.gen, ==, a.gen);
	g_assert_cmpint(hit.changed_at_us, ==, a.changed_at_us);
	assert_body(&hit, "sixsix");
	cache_hit_clear(&hit);
	assert_counts(c, 1, 6);
	/* A body over the bound alone is still kept. */
	f.body = "a body of more than ten bytes";
	g_assert_cmpint(get(c, "/big", 3600, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	g_assert_cmpint(cache_peek(c, "/big", &hit), ==, 0);
	cache_hit_clear(&hit);
	assert_counts(c, 1, strlen(f.body));
	cache_hit_clear(&a);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

/* A body of 100 bytes. */
#define HUNDRED_BYTES                                                                              \
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"  \
	"xxxxxxxxxxxx"

static void test_disk_bound_deletes_the_least_recently_used_copies(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;
	struct cache_stats stats;
	const char *body = HUNDRED_BYTES;

	fake_init(&f, body);
	/* Each copy is the body and a header of some 80 bytes: two fit in 450 bytes. */
	cache_set_bounds(c, 0, 450);
	for (int i = 0; i < 5; i++) {
		g_autofree char *key = g_strdup_printf("/k%d", i);
		g_assert_cmpint(get(c, key, 3600, false, &f, &hit), ==, 0);
		cache_hit_clear(&hit);
		cache_get_stats(c, &stats);
		g_assert_cmpuint(stats.disk_bytes, <=, 450);
	}
	g_assert_cmpint(files_in(dir), ==, 2);
	cache_free(c);

	/* After a remount, the newest two are there, the oldest are gone. */
	c = cache_new(dir, 5);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.disk_bytes, >, 200);
	g_assert_cmpint(get(c, "/k4", 3600, true, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	g_assert_cmpint(get(c, "/k0", 3600, true, &f, &hit), ==, -ENETDOWN);
	/* A smaller bound set later applies at once. */
	cache_set_bounds(c, 0, 300);
	g_assert_cmpint(files_in(dir), ==, 1);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

/* Removes cache directory @dir, its pinned copies too. */
static void remove_cache_dir(const char *dir)
{
	g_autofree char *pinned = g_build_filename(dir, "pinned", NULL);

	remove_dir(pinned);
	remove_dir(dir);
}

/* Reads key "/k@i" (a fetch through @f when not cached). */
static void get_key(struct cache *c, int i, struct fake *f)
{
	g_autofree char *key = g_strdup_printf("/k%d", i);
	struct cache_hit hit;

	g_assert_cmpint(get(c, key, 3600, false, f, &hit), ==, 0);
	cache_hit_clear(&hit);
}

/* Reads pinned key @key (a fetch through @f when not cached): @body when not NULL. */
static void get_pinned(struct cache *c, const char *key, struct fake *f, const char *body)
{
	struct cache_hit hit;

	g_assert_cmpint(cache_get_pinned(c, key, key, false, fake_fetch, f, &hit), ==, 0);
	if (body)
		assert_body(&hit, body);
	cache_hit_clear(&hit);
}

static void test_a_pinned_copy_is_fetched_once_and_outlives_the_disk_bound(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *pinned = g_build_filename(dir, "pinned", NULL);
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_stats stats;
	const char *body = HUNDRED_BYTES;

	fake_init(&f, body);
	cache_set_bounds(c, 150, 300);
	get_pinned(c, "/day", &f, NULL);
	/* Other copies push the disk bound and the memory bound: the pinned one stays. */
	for (int i = 0; i < 5; i++)
		get_key(c, i, &f);
	g_assert_cmpint(files_in(pinned), ==, 1);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.disk_bytes, <=, 300);
	g_assert_cmpuint(stats.pinned_bytes, >, 100);
	get_pinned(c, "/day", &f, body);
	g_assert_cmpint(f.calls, ==, 6);
	cache_free(c);

	/* A remount reads it from disk, without a fetch, however old the copy. */
	c = cache_new(dir, 5);
	get_pinned(c, "/day", &f, body);
	g_assert_cmpint(f.calls, ==, 6);
	/* Forgotten (its period left the listing), it goes. */
	cache_forget(c, "/day");
	g_assert_cmpint(files_in(pinned), ==, 0);
	cache_get_stats(c, &stats);
	g_assert_cmpuint(stats.pinned_bytes, ==, 0);
	cache_free(c);
	remove_cache_dir(dir);
	fake_clear(&f);
}

static void test_a_pinned_copy_past_its_age_is_deleted_at_start(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *pinned = g_build_filename(dir, "pinned", NULL);
	struct cache *c = cache_new(dir, 5);
	struct fake f;

	fake_init(&f, "a day of 2021");
	get_pinned(c, "/old", &f, NULL);
	cache_free(c);
	GDir *d = g_dir_open(pinned, 0, NULL);
	g_autofree char *file = g_build_filename(pinned, g_dir_read_name(d), NULL);
	g_dir_close(d);
	struct utimbuf old = {.actime = 1000, .modtime = 1000};
	g_assert_cmpint(g_utime(file, &old), ==, 0);

	c = cache_new(dir, 5);
	cache_set_pinned_max_age(c, 86400);
	g_assert_cmpint(files_in(pinned), ==, 0);
	get_pinned(c, "/old", &f, NULL);
	g_assert_cmpint(f.calls, ==, 2);
	cache_free(c);
	remove_cache_dir(dir);
	fake_clear(&f);
}

static void test_a_forgotten_key_leaves_memory_and_disk(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;

	fake_init(&f, "gone soon");
	g_assert_cmpint(get(c, "/homes/1/devices/x", 3600, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	g_assert_cmpint(files_in(dir), ==, 1);
	cache_forget(c, "/homes/1/devices/x");
	g_assert_cmpint(cache_peek(c, "/homes/1/devices/x", &hit), ==, -ENOENT);
	assert_counts(c, 0, 0);
	g_assert_cmpint(files_in(dir), ==, 0);
	g_assert_cmpint(get(c, "/homes/1/devices/x", 3600, true, &f, &hit), ==, -ENETDOWN);
	cache_free(c);
	/* Also after an offline remount. */
	c = cache_new(dir, 5);
	g_assert_cmpint(get(c, "/homes/1/devices/x", 3600, true, &f, &hit), ==, -ENETDOWN);
	/* A key forgotten and read again is fetched and kept again. */
	g_assert_cmpint(get(c, "/homes/1/devices/x", 3600, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	g_assert_cmpint(files_in(dir), ==, 1);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void test_generation_changes_exactly_when_bytes_change(void)
{
	struct cache *c = cache_new(NULL, 5);
	struct fake f;
	struct cache_hit a, b, d;

	fake_init(&f, "same");
	g_assert_cmpint(get(c, "/k", 0, false, &f, &a), ==, 0);
	g_assert_cmpint(get(c, "/k", 0, false, &f, &b), ==, 0);
	g_assert_cmpint(f.calls, ==, 2);
	g_assert_cmpuint(a.gen, ==, b.gen);
	g_assert_cmpint(a.changed_at_us, ==, b.changed_at_us);
	f.body = "different";
	g_assert_cmpint(get(c, "/k", 0, false, &f, &d), ==, 0);
	g_assert_cmpuint(d.gen, !=, a.gen);
	g_assert_cmpuint(d.gen, !=, 0);
	g_assert_cmpuint(cache_peek_gen(c, "/k"), ==, d.gen);
	assert_body(&d, "different");
	cache_hit_clear(&a);
	cache_hit_clear(&b);
	cache_hit_clear(&d);
	cache_free(c);
	fake_clear(&f);
}

static void test_disk_copy_survives_a_remount_without_a_fetch(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;
	gint64 changed_at;
	GStatBuf st;

	fake_init(&f, "{\"homes\":[]}");
	g_assert_cmpint(get(c, "/me", 3600, false, &f, &hit), ==, 0);
	changed_at = hit.changed_at_us;
	cache_hit_clear(&hit);
	cache_free(c);
	g_assert_cmpint(g_stat(dir, &st), ==, 0);
	g_assert_cmpint(st.st_mode & 0777, ==, 0700);

	c = cache_new(dir, 5);
	f.result = -EIO;
	g_assert_cmpint(get(c, "/me", 3600, false, &f, &hit), ==, 0);
	assert_body(&hit, "{\"homes\":[]}");
	g_assert_false(hit.stale);
	g_assert_cmpint(hit.changed_at_us, ==, changed_at);
	g_assert_cmpint(f.calls, ==, 1);
	cache_hit_clear(&hit);

	/* Past its TTL it is fetched again, and served stale when that fails. */
	g_assert_cmpint(get(c, "/me", 0, false, &f, &hit), ==, 0);
	g_assert_true(hit.stale);
	assert_body(&hit, "{\"homes\":[]}");
	g_assert_cmpint(f.calls, ==, 2);
	cache_hit_clear(&hit);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void test_disk_files_are_private(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;
	GDir *d;
	const char *name;
	int files = 0;

	fake_init(&f, "secret-ish");
	g_assert_cmpint(get(c, "/me", 60, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	d = g_dir_open(dir, 0, NULL);
	while ((name = g_dir_read_name(d))) {
		g_autofree char *file = g_build_filename(dir, name, NULL);
		GStatBuf st;

		g_assert_cmpint(g_stat(file, &st), ==, 0);
		g_assert_cmpint(st.st_mode & 0777, ==, 0600);
		g_assert_cmpuint(strlen(name), ==, 64); /* no temporary left behind */
		files++;
	}
	g_dir_close(d);
	g_assert_cmpint(files, ==, 1);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void test_offline_serves_the_disk_copy_and_never_fetches(void)
{
	g_autofree char *dir = temp_dir();
	struct cache *c = cache_new(dir, 5);
	struct fake f;
	struct cache_hit hit;

	fake_init(&f, "cached");
	g_assert_cmpint(get(c, "/homes/1/zoneStates", 60, false, &f, &hit), ==, 0);
	cache_hit_clear(&hit);
	cache_free(c);

	c = cache_new(dir, 5);
	g_assert_cmpint(get(c, "/homes/1/zoneStates", 0, true, &f, &hit), ==, 0);
	assert_body(&hit, "cached");
	g_assert_true(hit.stale);
	cache_hit_clear(&hit);
	g_assert_cmpint(get(c, "/never/seen", 60, true, &f, &hit), ==, -ENETDOWN);
	g_assert_cmpint(f.calls, ==, 1);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void *hanging_fetch_run(void *data)
{
	struct reader *rd = data;

	rd->r = get(rd->c, "/slow", 60, false, rd->f, &rd->hit);
	return NULL;
}

static void test_a_waiter_gives_up_when_the_fetch_hangs(void)
{
	struct cache *c = cache_new(NULL, 1);
	struct fake f;
	struct reader fetcher;
	struct cache_hit hit;
	GThread *thread;
	gint64 start;

	fake_init(&f, "late");
	f.hang = true;
	fetcher = (struct reader){.c = c, .f = &f};
	thread = g_thread_new("fetcher", hanging_fetch_run, &fetcher);
	g_mutex_lock(&f.lock);
	while (!f.started)
		g_cond_wait(&f.cond, &f.lock);
	g_mutex_unlock(&f.lock);

	start = g_get_monotonic_time();
	g_assert_cmpint(get(c, "/slow", 60, false, &f, &hit), ==, -ETIMEDOUT);
	g_assert_cmpint(g_get_monotonic_time() - start, >=, G_USEC_PER_SEC * 9 / 10);
	g_assert_null(hit.body);

	g_mutex_lock(&f.lock);
	f.release = true;
	g_cond_broadcast(&f.cond);
	g_mutex_unlock(&f.lock);
	g_thread_join(thread);
	g_assert_cmpint(fetcher.r, ==, 0);
	assert_body(&fetcher.hit, "late");
	cache_hit_clear(&fetcher.hit);
	g_assert_cmpint(f.calls, ==, 1);
	cache_free(c);
	fake_clear(&f);
}

/* The file that holds @key's disk copy in @dir (cache.c's layout). */
static char *disk_path(const char *dir, const char *key)
{
	g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);

	return g_build_filename(dir, hash, NULL);
}

/* A disk copy of @key holding @body, fetched just now. */
static char *disk_copy(const char *key, const char *body)
{
	gint64 now = g_get_real_time() / G_USEC_PER_SEC;

	return g_strdup_printf("smarthomefs-cache 1\nkey=%s\nchanged_at=%" G_GINT64_FORMAT
			       "\nfetched_at=%" G_GINT64_FORMAT "\n\n%s",
			       key, now - 100, now, body);
}

/* Makes @key's disk copy a FIFO: whoever loads it blocks until a writer comes. */
static char *block_disk_copy(const char *dir, const char *key)
{
	char *fifo = disk_path(dir, key);

	g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
	return fifo;
}

/* Opens the FIFO for writing: returns once the loader has opened it, so it is inside
 * its disk load (and blocked there until the returned fd is written and closed). */
static int wait_for_loader(const char *fifo)
{
	int fd = open(fifo, O_WRONLY | O_CLOEXEC);

	g_assert_cmpint(fd, >=, 0);
	return fd;
}

static void finish_load(int fd, const char *key, const char *body)
{
	g_autofree char *text = disk_copy(key, body);

	g_assert_cmpint(write(fd, text, strlen(text)), ==, (gssize)strlen(text));
	g_assert_cmpint(close(fd), ==, 0);
}

struct keyed_reader {
	struct cache *c;
	struct fake *f;
	const char *key;
	GAsyncQueue *done; /* gets the reader when its get returned; may be NULL */
	int r;
	struct cache_hit hit;
};

static void *keyed_reader_run(void *data)
{
	struct keyed_reader *rd = data;

	rd->r = get(rd->c, rd->key, 3600, false, rd->f, &rd->hit);
	if (rd->done)
		g_async_queue_push(rd->done, rd);
	return NULL;
}

static void test_a_disk_copy_of_whole_seconds_still_loads(void)
{
	/* Written before changed_at kept microseconds. */
	g_autofree char *dir = temp_dir();
	g_autofree char *file = disk_path(dir, "/old");
	g_autofree char *text =
	    g_strdup_printf("smarthomefs-cache 1\nkey=/old\nchanged_at=1700000000"
			    "\nfetched_at=1700000001\n\nold body");
	struct cache *c;
	struct fake f;
	struct cache_hit hit;

	g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
	g_assert_true(g_file_set_contents(file, text, -1, NULL));
	fake_init(&f, "unused");
	c = cache_new(dir, 5);
	g_assert_cmpint(get(c, "/old", 3600, true, &f, &hit), ==, 0);
	assert_body(&hit, "old body");
	g_assert_cmpint(hit.changed_at_us, ==, G_GINT64_CONSTANT(1700000000) * G_USEC_PER_SEC);
	g_assert_cmpint(f.calls, ==, 0);
	cache_hit_clear(&hit);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

static void test_a_slow_disk_load_of_one_key_does_not_delay_another_key(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *fifo = block_disk_copy(dir, "/a");
	g_autofree char *b_file = disk_path(dir, "/b");
	g_autofree char *b_copy = disk_copy("/b", "b from disk");
	struct cache *c = cache_new(dir, 5);
	struct fake fa, fb;
	struct keyed_reader a, b;
	GAsyncQueue *done = g_async_queue_new();
	GThread *ta, *tb;
	void *b_done;
	int fd;

	fake_init(&fa, "a fetched");
	fake_init(&fb, "b fetched");
	g_assert_true(g_file_set_contents(b_file, b_copy, -1, NULL));
	a = (struct keyed_reader){.c = c, .f = &fa, .key = "/a"};
	b = (struct keyed_reader){.c = c, .f = &fb, .key = "/b", .done = done};
	ta = g_thread_new("reader-a", keyed_reader_run, &a);
	fd = wait_for_loader(fifo);

	/* A's load is stuck in read(); B's reader, also loading from disk, answers anyway.
	 * The bound only turns a regression into a failure instead of a hang. */
	tb = g_thread_new("reader-b", keyed_reader_run, &b);
	b_done = g_async_queue_timeout_pop(done, 10 * G_USEC_PER_SEC);

	finish_load(fd, "/a", "a from disk");
	g_thread_join(ta);
	g_thread_join(tb);
	g_assert_true(b_done == &b);
	g_assert_cmpint(b.r, ==, 0);
	assert_body(&b.hit, "b from disk");
	g_assert_cmpint(a.r, ==, 0);
	assert_body(&a.hit, "a from disk");
	g_assert_false(a.hit.stale);
	g_assert_cmpint(fa.calls + fb.calls, ==, 0);
	cache_hit_clear(&a.hit);
	cache_hit_clear(&b.hit);
	g_async_queue_unref(done);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&fa);
	fake_clear(&fb);
}

static void test_a_body_fetched_while_the_disk_load_hangs_wins_over_the_loaded_copy(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *fifo = block_disk_copy(dir, "/a");
	struct cache *c = cache_new(dir, 1);
	struct fake f;
	struct keyed_reader loader;
	struct cache_hit hit;
	GThread *thread;
	gint64 start;
	uint64_t gen;
	int fd;

	fake_init(&f, "fetched");
	loader = (struct keyed_reader){.c = c, .f = &f, .key = "/a"};
	thread = g_thread_new("loader", keyed_reader_run, &loader);
	fd = wait_for_loader(fifo);

	/* A reader of the key waits for the load, neither loading nor fetching itself, and
	 * gives up at the timeout. */
	start = g_get_monotonic_time();
	g_assert_cmpint(get(c, "/a", 3600, false, &f, &hit), ==, -ETIMEDOUT);
	g_assert_cmpint(g_get_monotonic_time() - start, >=, G_USEC_PER_SEC * 9 / 10);
	g_assert_null(hit.body);
	g_assert_cmpint(f.calls, ==, 0);

	/* The load is hung now: the next reader fetches instead of waiting again. */
	g_assert_cmpint(get(c, "/a", 3600, false, &f, &hit), ==, 0);
	assert_body(&hit, "fetched");
	g_assert_cmpint(f.calls, ==, 1);
	gen = hit.gen;
	cache_hit_clear(&hit);

	/* The load ends with the older copy: the fetched body stays, and so does its gen. */
	finish_load(fd, "/a", "from disk");
	g_thread_join(thread);
	g_assert_cmpint(loader.r, ==, 0);
	assert_body(&loader.hit, "fetched");
	g_assert_cmpuint(loader.hit.gen, ==, gen);
	cache_hit_clear(&loader.hit);
	g_assert_cmpint(get(c, "/a", 3600, false, &f, &hit), ==, 0);
	assert_body(&hit, "fetched");
	g_assert_cmpuint(hit.gen, ==, gen);
	g_assert_cmpuint(cache_peek_gen(c, "/a"), ==, gen);
	cache_hit_clear(&hit);
	g_assert_cmpint(f.calls, ==, 1);
	cache_free(c);

	/* The disk holds the fetched body too, for the next mount. */
	c = cache_new(dir, 1);
	g_assert_cmpint(get(c, "/a", 3600, true, &f, &hit), ==, 0);
	assert_body(&hit, "fetched");
	cache_hit_clear(&hit);
	cache_free(c);
	remove_dir(dir);
	fake_clear(&f);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/cache/fresh_entry_is_served_without_a_fetch",
			test_fresh_entry_is_served_without_a_fetch);
	g_test_add_func("/cache/64_readers_of_a_cold_resource_cause_one_fetch",
			test_64_readers_of_a_cold_resource_cause_one_fetch);
	g_test_add_func("/cache/a_failed_refresh_serves_the_old_copy_stale",
			test_a_failed_refresh_serves_the_old_copy_stale);
	g_test_add_func("/cache/a_gone_resource_drops_its_entry_and_disk_copy",
			test_a_gone_resource_drops_its_entry_and_disk_copy);
	g_test_add_func("/cache/entry_and_byte_counts_follow_every_body_change",
			test_entry_and_byte_counts_follow_every_body_change);
	g_test_add_func("/cache/memory_bound_evicts_the_least_recently_used_to_its_disk_copy",
			test_memory_bound_evicts_the_least_recently_used_to_its_disk_copy);
	g_test_add_func("/cache/disk_bound_deletes_the_least_recently_used_copies",
			test_disk_bound_deletes_the_least_recently_used_copies);
	g_test_add_func("/cache/a_pinned_copy_is_fetched_once_and_outlives_the_disk_bound",
			test_a_pinned_copy_is_fetched_once_and_outlives_the_disk_bound);
	g_test_add_func("/cache/a_pinned_copy_past_its_age_is_deleted_at_start",
			test_a_pinned_copy_past_its_age_is_deleted_at_start);
	g_test_add_func("/cache/a_forgotten_key_leaves_memory_and_disk",
			test_a_forgotten_key_leaves_memory_and_disk);
	g_test_add_func("/cache/generation_changes_exactly_when_bytes_change",
			test_generation_changes_exactly_when_bytes_change);
	g_test_add_func("/cache/disk_copy_survives_a_remount_without_a_fetch",
			test_disk_copy_survives_a_remount_without_a_fetch);
	g_test_add_func("/cache/disk_files_are_private", test_disk_files_are_private);
	g_test_add_func("/cache/offline_serves_the_disk_copy_and_never_fetches",
			test_offline_serves_the_disk_copy_and_never_fetches);
	g_test_add_func("/cache/a_waiter_gives_up_when_the_fetch_hangs",
			test_a_waiter_gives_up_when_the_fetch_hangs);
	g_test_add_func("/cache/a_disk_copy_of_whole_seconds_still_loads",
			test_a_disk_copy_of_whole_seconds_still_loads);
	g_test_add_func("/cache/a_slow_disk_load_of_one_key_does_not_delay_another_key",
			test_a_slow_disk_load_of_one_key_does_not_delay_another_key);
	g_test_add_func("/cache/a_body_fetched_while_the_disk_load_hangs_wins_over_the_loaded_copy",
			test_a_body_fetched_while_the_disk_load_hangs_wins_over_the_loaded_copy);
	return g_test_run();
}
