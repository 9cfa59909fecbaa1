/* cache: response bodies by resource key, single-flight, stale-if-error, disk copy.
 *
 * An entry stays in the table once created (the tree bounds the keys); an entry with no
 * body is "no copy". The mutex guards every field of the cache and its entries; each
 * entry's cond wakes the threads waiting for its disk load or its fetch.
 *
 * Disk load: the first reader of a key reads its disk copy without the mutex, so a slow
 * disk (a cold page cache, an NFS home) delays the readers of that key only. They wait
 * for the load, not load or fetch themselves, at most the timeout; a load still running
 * after that is taken for hung and no longer waited for. A load that a fetch of the key
 * finished during (its body, or -ENOENT) is thrown away: the fetch knows better.
 *
 * Disk copy: <disk_dir>/<hex SHA-256 of key>, written atomically after every successful
 * fetch (so its fetch time is true after a remount), a short text header then the body:
 *   smarthomefs-cache 1\n key=<key>\n changed_at=<unix s>.<µs>\n fetched_at=<unix s>\n \n <body>
 * (copies written before the microseconds were kept have "changed_at=<unix s>"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"

#define DISK_MAGIC "smarthomefs-cache 1\n"
#define USEC	   G_USEC_PER_SEC
/* A failed fetch is the answer for this long: readers the kernel queued behind it (one
 * lookup of a name at a time) get its error at once instead of each waiting a timeout. */
#define FAILURE_MEMORY_US (2 * USEC)

struct cache_entry {
	char *key;
	GBytes *body; /* NULL: no copy; changed only through entry_set_body */
	uint64_t gen;
	gint64 fetched_at_us;	/* monotonic */
	gint64 changed_at_us;	/* unix (wall clock) */
	bool disk_checked;	/* the disk copy was looked for, or is being looked for */
	bool loading;		/* a reader reads the disk copy, without the lock */
	gint64 load_started_us; /* monotonic */
	bool fetching;
	gint64 fetch_started_us; /* monotonic */
	uint64_t flights;	 /* fetches finished, so a waiter knows its fetch ended */
	int result;		 /* of the last finished fetch */
	gint64 failed_at_us;	 /* monotonic, when that fetch failed; 0 if it did not */
	GCond done;
	GMutex disk_lock; /* orders this key's disk writes after the lock is dropped; one per
			   * key, so that fetches of other keys write (and fsync) at once */
};

struct cache {
	GMutex lock;
	GHashTable *entries; /* key -> struct cache_entry * */
	char *disk_dir;
	int timeout_s;
	uint64_t next_gen;
	struct cache_stats stats; /* entries and bytes kept running by entry_set_body */
};

/* Replaces @e's body by @body (a new reference taken; NULL: none), keeping the running
 * counts of entries and bytes. Caller holds the lock. */
static void entry_set_body(struct cache *c, struct cache_entry *e, GBytes *body)
{
	if (e->body) {
		c->stats.entries--;
		c->stats.bytes -= g_bytes_get_size(e->body);
		g_bytes_unref(e->body);
	}
	e->body = body ? g_bytes_ref(body) : NULL;
	if (body) {
		c->stats.entries++;
		c->stats.bytes += g_bytes_get_size(body);
	}
}

static void entry_free(void *data)
{
	struct cache_entry *e = data;

	g_free(e->key);
	if (e->body)
		g_bytes_unref(e->body);
	g_cond_clear(&e->done);
	g_mutex_clear(&e->disk_lock);
	g_free(e);
}

struct cache *cache_new(const char *disk_dir, int timeout_s)
{
	struct cache *c = g_new0(struct cache, 1);

	g_mutex_init(&c->lock);
	c->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
	c->timeout_s = timeout_s > 0 ? timeout_s : 1;
	c->next_gen = 1;
	if (disk_dir && *disk_dir) {
		if (g_mkdir_with_parents(disk_dir, 0700) == 0)
			c->disk_dir = g_strdup(disk_dir);
	}
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	g_hash_table_destroy(c->entries);
	g_mutex_clear(&c->lock);
	g_free(c->disk_dir);
	g_free(c);
}

void cache_hit_clear(struct cache_hit *hit)
{
	if (hit->body)
		g_bytes_unref(hit->body);
	*hit = (struct cache_hit){0};
}

static char *disk_file(struct cache *c, const char *key)
{
	g_autofree char *hash = NULL;

	if (!c->disk_dir)
		return NULL;
	hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);
	return g_build_filename(c->disk_dir, hash, NULL);
}

/* Writes the disk copy of @key atomically (GLib writes a temporary file, fsyncs and
 * renames it); a failure only costs the copy. @changed_at_us is unix µs, @fetched_at_s
 * unix seconds. */
static void disk_store(struct cache *c, const char *key, GBytes *body, gint64 changed_at_us,
		       gint64 fetched_at_s)
{
	g_autofree char *file = disk_file(c, key);
	g_autoptr(GString) data = NULL;
	gsize len;
	const char *bytes = g_bytes_get_data(body, &len);

	if (!file || strchr(key, '\n'))
		return;
	data = g_string_new(DISK_MAGIC);
	g_string_append_printf(data,
			       "key=%s\nchanged_at=%" G_GINT64_FORMAT ".%06" G_GINT64_FORMAT
			       "\nfetched_at=%" G_GINT64_FORMAT "\n\n",
			       key, changed_at_us / USEC, changed_at_us % USEC, fetched_at_s);
	g_string_append_len(data, bytes, (gssize)len);
	g_file_set_contents_full(file, data->str, (gssize)data->len,
				 G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0600,
				 NULL);
}

static void disk_drop(struct cache *c, const char *key)
{
	g_autofree char *file = disk_file(c, key);

	if (file)
		unlink(file);
}

/* Reads the disk copy of @key: its body (a new reference), when it changed (unix µs) and
 * was fetched (unix s). Touches no entry, so it runs without the lock. False when there
 * is none. */
static bool disk_read(struct cache *c, const char *key, GBytes **body, gint64 *changed_at_us,
		      gint64 *fetched_at_s)
{
	g_autofree char *file = disk_file(c, key);
	g_autofree char *data = NULL;
	g_autofree char *want = NULL;
	gsize len;
	const char *p, *end;

	if (!file || !g_file_get_contents(file, &data, &len, NULL))
		return false;
	end = data + len;
	want = g_strdup_printf(DISK_MAGIC "key=%s\n", key);
	if (len < strlen(want) || memcmp(data, want, strlen(want)) != 0)
		return false; /* another version's file, or another key of the same hash */
	p = data + strlen(want);
	gint64 s, us = 0;
	int n = 0;
	if (sscanf(p, "changed_at=%" G_GINT64_FORMAT "%n", &s, &n) != 1 || s < 0)
		return false;
	p += n;
	if (*p == '.') {
		char *after;
		us = g_ascii_strtoll(p + 1, &after, 10);
		if (after != p + 7 || us < 0)
			return false;
		p = after;
	}
	*changed_at_us = s * USEC + us;
	if (sscanf(p, "\nfetched_at=%" G_GINT64_FORMAT "\n", fetched_at_s) != 1)
		return false;
	p = g_strstr_len(p, end - p, "\n\n");
	if (!p)
		return false;
	p += 2;
	*body = g_bytes_new(p, (gsize)(end - p));
	return true;
}

/* Loads @e's disk copy, dropping the lock around the read; caller holds the lock. */
static void disk_load(struct cache *c, struct cache_entry *e)
{
	uint64_t flights = e->flights;
	GBytes *body = NULL;
	gint64 changed_at_us = 0, fetched_at_s = 0, age_s;
	bool found;

	e->disk_checked = true;
	if (!c->disk_dir)
		return;
	e->loading = true;
	e->load_started_us = g_get_monotonic_time();
	g_mutex_unlock(&c->lock);
	found = disk_read(c, e->key, &body, &changed_at_us, &fetched_at_s);
	g_mutex_lock(&c->lock);
	e->loading = false;
	if (g_get_monotonic_time() - e->load_started_us >= (gint64)c->timeout_s * USEC)
		log_warn(
		    "reading the disk copy of %s took over %d s: is %s on a slow or hung disk?",
		    e->key, c->timeout_s, c->disk_dir);
	/* A fetch finished meanwhile (a reader stopped waiting for a hung load): its body
	 * is newer, or its -ENOENT dropped the resource; the copy read is older than both. */
	if (found && e->flights == flights) {
		entry_set_body(c, e, body);
		e->changed_at_us = changed_at_us;
		/* Carry the copy's age over to the monotonic clock: a remount within the TTL
		 * must not spend an API call. A clock that went back counts as age 0. */
		age_s = MAX(0, g_get_real_time() / USEC - fetched_at_s);
		e->fetched_at_us = g_get_monotonic_time() - age_s * USEC;
		e->gen = c->next_gen++;
	}
	g_cond_broadcast(&e->done);
	if (body)
		g_bytes_unref(body);
}

/* Makes sure @e's disk copy was looked for before @e is used: the first reader of a key
 * without a body loads it, the others wait for that load until the timeout. A load
 * running longer than that is hung: readers arriving later go on without it.
 * Caller holds the lock. Returns 0, or -ETIMEDOUT for a reader that waited in vain. */
static int disk_copy_settle(struct cache *c, struct cache_entry *e)
{
	while (!e->body) {
		gint64 deadline;

		if (!e->disk_checked) {
			disk_load(c, e);
			continue;
		}
		if (!e->loading)
			return 0;
		deadline = e->load_started_us + (gint64)c->timeout_s * USEC;
		if (g_get_monotonic_time() >= deadline)
			return 0;
		if (!g_cond_wait_until(&e->done, &c->lock, deadline) && e->loading && !e->body)
			return -ETIMEDOUT;
	}
	return 0;
}

static struct cache_entry *entry_get(struct cache *c, const char *key)
{
	struct cache_entry *e = g_hash_table_lookup(c->entries, key);

	if (!e) {
		e = g_new0(struct cache_entry, 1);
		e->key = g_strdup(key);
		g_cond_init(&e->done);
		g_mutex_init(&e->disk_lock);
		g_hash_table_insert(c->entries, e->key, e);
	}
	return e;
}

static bool entry_fresh(struct cache_entry *e, int ttl_s)
{
	return e->body && ttl_s > 0 &&
	       g_get_monotonic_time() - e->fetched_at_us < (gint64)ttl_s * USEC;
}

static void hit_fill(struct cache_hit *hit, struct cache_entry *e, int error)
{
	hit->body = g_bytes_ref(e->body);
	hit->gen = e->gen;
	hit->changed_at_us = e->changed_at_us;
	hit->stale = error < 0;
	hit->error = error;
	hit->fetched_at_us = e->fetched_at_us;
}

/* The answer of a finished fetch with result @r, for the fetcher and its waiters. */
static int answer(struct cache *c, struct cache_entry *e, int r, struct cache_hit *hit)
{
	if (r == 0 && e->body) {
		hit_fill(hit, e, 0);
		return 0;
	}
	if (r == -ENOENT || r == -EACCES || !e->body)
		return r < 0 ? r : -EIO;
	c->stats.stale_served++;
	hit_fill(hit, e, r);
	return 0;
}

/* Waits for the fetch in flight on @e; caller holds the lock. */
static int wait_for_fetch(struct cache *c, struct cache_entry *e, struct cache_hit *hit)
{
	uint64_t flight = e->flights;
	/* The fetch itself ends within the timeout (the HTTP client's deadline); the second
	 * more lets it answer its waiters itself when it ends right at that deadline. */
	gint64 deadline = e->fetch_started_us + (gint64)c->timeout_s * USEC + USEC;

	while (e->fetching && e->flights == flight) {
		if (!g_cond_wait_until(&e->done, &c->lock, deadline)) {
			if (e->flights != flight)
				break;
			/* The fetch hangs: an old copy beats no answer. */
			if (e->body) {
				c->stats.stale_served++;
				hit_fill(hit, e, -ETIMEDOUT);
				return 0;
			}
			return -ETIMEDOUT;
		}
	}
	return answer(c, e, e->result, hit);
}

int cache_get(struct cache *c, const char *key, const char *path, int ttl_s, bool offline,
	      cache_fetch_fn fetch, void *ctx, struct cache_hit *hit)
{
	struct cache_entry *e;
	GBytes *body = NULL;
	gint64 changed_at_us, fetched_at_s;
	uint64_t flight;
	bool newest;
	int r;

	*hit = (struct cache_hit){0};
	if (!key)
		key = path;
	g_mutex_lock(&c->lock);
	e = entry_get(c, key);
	r = disk_copy_settle(c, e);
	if (r < 0) {
		g_mutex_unlock(&c->lock);
		return r;
	}
	if (entry_fresh(e, ttl_s)) {
		c->stats.hits++;
		hit_fill(hit, e, 0);
		g_mutex_unlock(&c->lock);
		log_debug("cache hit %s", key);
		return 0;
	}
	if (offline) {
		r = -ENETDOWN;
		if (e->body) {
			c->stats.stale_served++;
			hit_fill(hit, e, -ENETDOWN);
			r = 0;
		}
		g_mutex_unlock(&c->lock);
		log_debug("cache %s %s (offline)", r == 0 ? "stale" : "miss", key);
		return r;
	}
	if (!e->fetching && e->failed_at_us &&
	    g_get_monotonic_time() - e->failed_at_us < FAILURE_MEMORY_US) {
		int failed = e->result;

		r = answer(c, e, failed, hit);
		g_mutex_unlock(&c->lock);
		log_debug("cache %s: its fetch failed a moment ago (%s)", key, g_strerror(-failed));
		return r;
	}
	if (e->fetching) {
		r = wait_for_fetch(c, e, hit);
		g_mutex_unlock(&c->lock);
		log_debug("cache miss %s: joined the fetch in flight", key);
		return r;
	}

	e->fetching = true;
	e->fetch_started_us = g_get_monotonic_time();
	c->stats.fetches++;
	g_mutex_unlock(&c->lock);
	log_debug("cache miss %s: fetching", key);
	r = fetch(ctx, path, &body);
	if (r == 0 && !body)
		r = -EIO;
	if (r < 0 && body)
		g_clear_pointer(&body, g_bytes_unref);
	g_mutex_lock(&c->lock);

	if (r == 0) {
		if (!e->body || !g_bytes_equal(e->body, body)) {
			entry_set_body(c, e, body);
			e->gen = c->next_gen++;
			e->changed_at_us = g_get_real_time();
		}
		e->fetched_at_us = g_get_monotonic_time();
	} else {
		c->stats.errors++;
		if (r == -ENOENT && e->body) {
			entry_set_body(c, e, NULL);
			e->gen = 0;
		}
	}
	changed_at_us = e->changed_at_us;
	fetched_at_s = g_get_real_time() / USEC;
	e->fetching = false;
	flight = ++e->flights;
	e->result = r;
	e->failed_at_us = r < 0 ? g_get_monotonic_time() : 0;
	g_cond_broadcast(&e->done);
	r = answer(c, e, r, hit);
	g_mutex_unlock(&c->lock);

	/* The disk is written outside the lock, also when the bytes are the same, so that
	 * the copy's fetch time stays true for a remount. Only the newest fetch of the key
	 * writes: one that finished later has written or will write itself. */
	g_mutex_lock(&e->disk_lock);
	g_mutex_lock(&c->lock);
	newest = e->flights == flight;
	g_mutex_unlock(&c->lock);
	if (newest && body)
		disk_store(c, key, body, changed_at_us, fetched_at_s);
	else if (newest && r == -ENOENT)
		disk_drop(c, key);
	g_mutex_unlock(&e->disk_lock);
	if (body)
		g_bytes_unref(body);
	return r;
}

uint64_t cache_peek_gen(struct cache *c, const char *key)
{
	struct cache_entry *e;
	uint64_t gen = 0;

	g_mutex_lock(&c->lock);
	e = g_hash_table_lookup(c->entries, key);
	if (e && e->body)
		gen = e->gen;
	g_mutex_unlock(&c->lock);
	return gen;
}

int cache_peek(struct cache *c, const char *key, struct cache_hit *hit)
{
	struct cache_entry *e;
	int r = -ENOENT;

	memset(hit, 0, sizeof(*hit));
	g_mutex_lock(&c->lock);
	e = g_hash_table_lookup(c->entries, key);
	if (e && e->body) {
		hit_fill(hit, e, 0);
		r = 0;
	}
	g_mutex_unlock(&c->lock);
	return r;
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	g_mutex_lock(&c->lock);
	*out = c->stats;
	g_mutex_unlock(&c->lock);
}
