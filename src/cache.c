/* cache: response bodies by resource key, single-flight, stale-if-error, disk copy.
 *
 * An entry stays in the table until cache_forget (the tree bounds the keys); an entry
 * with no body is "no copy" (or an evicted one, whose disk copy is loaded again). The
 * mutex guards every field of the cache and its entries; each entry's cond wakes the
 * threads waiting for its disk load or its fetch.
 *
 * Bounds: the bodies in memory weigh at most memory_max bytes: past it, the least
 * recently used (not being fetched or loaded) lose their body and fall back to their
 * disk copy. The disk copies weigh at most disk_max: past it, the least recently used
 * files are deleted.
 *
 * Disk load: the first reader of a key reads its disk copy without the mutex, so a slow
 * disk (a cold page cache, an NFS home) delays the readers of that key only. They wait
 * for the load, not load or fetch themselves, at most the timeout; a load still running
 * after that is taken for hung and no longer waited for. A load that a fetch of the key
 * finished during (its body, or -ENOENT) is thrown away: the fetch knows better.
 *
 * Pinned entries (cache_get_pinned: a finished period of history, which never changes) are
 * fresh for good once they have a body, and their disk copies live apart, in
 * <disk_dir>/pinned/: neither the TTL, nor the disk bound, nor the disk LRU ever touches
 * them (their bodies may still leave memory, to be read back from disk). They are bounded
 * otherwise: cache_forget drops one (its period left the listing), and a copy older than
 * the pinned age (cache_set_pinned_max_age) is deleted when the cache opens.
 *
 * Disk copy: <disk_dir>/<hex SHA-256 of key>, written atomically after every successful
 * fetch (so its fetch time is true after a remount), a short text header then the body:
 *   smarthomefs-cache 1\n key=<key>\n changed_at=<unix s>.<µs>\n fetched_at=<unix s>\n \n <body>
 * (copies written before the microseconds were kept have "changed_at=<unix s>"). */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

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
	bool forgotten;		 /* cache_forget ran while the entry was busy */
	int writing;		 /* fetchers between their answer and their disk write */
	int waiters;		 /* threads waiting on done */
	GList lru_link;		 /* in the cache's lru while the entry has a body */
	GCond done;
	GMutex disk_lock; /* orders this key's disk writes after the lock is dropped; one per
			   * key, so that fetches of other keys write (and fsync) at once */
	bool pinned;	  /* kept for good: never stale, its disk copy in pinned/ */
};

struct cache {
	GMutex lock;
	GHashTable *entries; /* key -> struct cache_entry * */
	char *disk_dir;
	char *pinned_dir; /* disk_dir/pinned: the pinned entries' copies */
	int timeout_s;
	struct cache_stats stats; /* entries and bytes kept running by entry_set_body */
	GQueue lru;		  /* entries with a body, the most recently used first */
	uint64_t memory_max;	  /* bytes of bodies in memory; 0: unbounded */
	uint64_t disk_max;	  /* bytes of disk copies; 0: unbounded */
	GHashTable *disk_files;	  /* file name -> struct disk_file: the disk copies */
	GHashTable *pinned_files; /* file name -> struct disk_file: the pinned copies */
	uint64_t disk_uses;	  /* counts disk writes and reads, for the files' LRU order */
};

static void entry_remove_if_forgotten(struct cache *c, struct cache_entry *e);

/* A disk copy, for the disk bound. */
struct disk_file {
	uint64_t size;
	uint64_t used;	/* disk_uses when last written or read (0: before this mount) */
	gint64 mtime_s; /* for the files found at start: older ones go first; a pinned
			 * copy's, also when written, for its age */
	int writing;	/* writers between booking it and their rename: not deleted */
};

/* Replaces @e's body by @body (a new reference taken; NULL: none), keeping the running
 * counts of entries and bytes. Caller holds the lock. */
static void entry_set_body(struct cache *c, struct cache_entry *e, GBytes *body)
{
	if (e->body) {
		c->stats.entries--;
		c->stats.bytes -= g_bytes_get_size(e->body);
		g_bytes_unref(e->body);
		g_queue_unlink(&c->lru, &e->lru_link);
	}
	e->body = body ? g_bytes_ref(body) : NULL;
	if (body) {
		c->stats.entries++;
		c->stats.bytes += g_bytes_get_size(body);
		g_queue_push_head_link(&c->lru, &e->lru_link);
	}
}

/* @e was used: it goes last in line for eviction. Caller holds the lock. */
static void entry_touch(struct cache *c, struct cache_entry *e)
{
	if (e->body && c->lru.head != &e->lru_link) {
		g_queue_unlink(&c->lru, &e->lru_link);
		g_queue_push_head_link(&c->lru, &e->lru_link);
	}
}

/* Drops the bodies of the least recently used entries until the memory bound holds; an
 * evicted entry keeps its generation and loads its disk copy when read again. @keep
 * (just stored) is never evicted: a body larger than the bound is still answered; nor
 * is an entry with waiters, woken by its fetch but not yet answered from its body.
 * Caller holds the lock. */
static void memory_trim(struct cache *c, struct cache_entry *keep)
{
	GList *link = c->lru.tail;

	while (c->memory_max && c->stats.bytes > c->memory_max && link) {
		struct cache_entry *e = link->data;

		link = link->prev;
		if (e == keep || e->fetching || e->loading || e->waiters)
			continue;
		entry_set_body(c, e, NULL);
		e->disk_checked = false;
		c->stats.evictions++;
	}
}

static void entry_free(void *data)
{
	struct cache_entry *e = data;

	g_free(e->key);
	if (e->body)
		g_bytes_unref(e->body);
	/* Called by the table, never with a body still queued: see entry_remove. */
	g_cond_clear(&e->done);
	g_mutex_clear(&e->disk_lock);
	g_free(e);
}

/* A disk copy's name: the hex SHA-256 of its key. */
static bool is_disk_name(const char *name)
{
	return strlen(name) == 64 && strspn(name, "0123456789abcdef") == 64;
}

/* Takes stock of the disk copies (@pinned: the pinned ones) a previous mount left. */
static void disk_scan(struct cache *c, bool pinned)
{
	g_autoptr(GDir) dir = g_dir_open(pinned ? c->pinned_dir : c->disk_dir, 0, NULL);
	const char *name;

	while (dir && (name = g_dir_read_name(dir))) {
		g_autofree char *path =
		    g_build_filename(pinned ? c->pinned_dir : c->disk_dir, name, NULL);
		GStatBuf st;

		if (!is_disk_name(name) || g_lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		struct disk_file *f = g_new0(struct disk_file, 1);
		f->size = (uint64_t)st.st_size;
		f->mtime_s = st.st_mtime;
		g_hash_table_insert(pinned ? c->pinned_files : c->disk_files, g_strdup(name), f);
		*(pinned ? &c->stats.pinned_bytes : &c->stats.disk_bytes) += f->size;
	}
}

/* Generations are unique across the caches of one process, not only within one: a mount
 * of several accounts may serve a home from another account's cache than before (its
 * first account's login ended), and a generation must then still name one body. */
static uint64_t next_generation(void)
{
	static atomic_uint_fast64_t next = 1;

	return atomic_fetch_add(&next, 1);
}

struct cache *cache_new(const char *disk_dir, int timeout_s)
{
	struct cache *c = g_new0(struct cache, 1);

	g_mutex_init(&c->lock);
	c->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
	c->disk_files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	c->pinned_files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	g_queue_init(&c->lru);
	c->timeout_s = timeout_s > 0 ? timeout_s : 1;
	if (disk_dir && *disk_dir) {
		if (g_mkdir_with_parents(disk_dir, 0700) == 0) {
			c->disk_dir = g_strdup(disk_dir);
			c->pinned_dir = g_build_filename(disk_dir, "pinned", NULL);
			disk_scan(c, false);
			disk_scan(c, true);
		}
	}
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	/* Bodies leave the lru before their entries go. */
	while (c->lru.head)
		entry_set_body(c, c->lru.head->data, NULL);
	g_hash_table_destroy(c->entries);
	g_hash_table_destroy(c->disk_files);
	g_hash_table_destroy(c->pinned_files);
	g_mutex_clear(&c->lock);
	g_free(c->disk_dir);
	g_free(c->pinned_dir);
	g_free(c);
}

void cache_hit_clear(struct cache_hit *hit)
{
	if (hit->body)
		g_bytes_unref(hit->body);
	*hit = (struct cache_hit){0};
}

static char *disk_name(const char *key)
{
	return g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);
}

static char *disk_file(struct cache *c, const char *key, bool pinned)
{
	g_autofree char *name = NULL;

	if (!c->disk_dir)
		return NULL;
	name = disk_name(key);
	return g_build_filename(pinned ? c->pinned_dir : c->disk_dir, name, NULL);
}

/* Orders disk copies for deletion: the least recently used first. */
static gint disk_older(gconstpointer a, gconstpointer b, gpointer table)
{
	const struct disk_file *fa = g_hash_table_lookup(table, *(const char *const *)a);
	const struct disk_file *fb = g_hash_table_lookup(table, *(const char *const *)b);

	if (fa->used != fb->used)
		return fa->used < fb->used ? -1 : 1;
	return fa->mtime_s < fb->mtime_s ? -1 : fa->mtime_s > fb->mtime_s;
}

/* Takes the least recently used disk copies (but @keep) out of the books until the disk
 * bound holds; returns their paths for the caller to delete without the lock (NULL: none).
 * Caller holds the lock. */
static GPtrArray *disk_trim(struct cache *c, const char *keep)
{
	if (!c->disk_max || c->stats.disk_bytes <= c->disk_max)
		return NULL;
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	GPtrArray *victims = g_ptr_array_new_with_free_func(g_free);
	GHashTableIter it;
	void *name_p;

	g_hash_table_iter_init(&it, c->disk_files);
	while (g_hash_table_iter_next(&it, &name_p, NULL))
		g_ptr_array_add(names, g_strdup(name_p));

	g_ptr_array_sort_with_data(names, disk_older, c->disk_files);
	for (guint i = 0; i < names->len && c->stats.disk_bytes > c->disk_max; i++) {
		const char *name = names->pdata[i];
		struct disk_file *f = g_hash_table_lookup(c->disk_files, name);

		if ((keep && strcmp(name, keep) == 0) || f->writing)
			continue;
		c->stats.disk_bytes -= f->size;
		g_ptr_array_add(victims, g_build_filename(c->disk_dir, name, NULL));
		g_hash_table_remove(c->disk_files, name);
	}
	return victims;
}

/* The disk copy of @key was read: it goes last in line for deletion. Caller holds the
 * lock. */
static void disk_touch(struct cache *c, const char *key)
{
	g_autofree char *name = disk_name(key);
	struct disk_file *f = g_hash_table_lookup(c->disk_files, name);

	if (f)
		f->used = ++c->disk_uses;
}

static void disk_unlink_all(GPtrArray *victims)
{
	for (guint i = 0; victims && i < victims->len; i++)
		unlink(victims->pdata[i]);
	if (victims)
		g_ptr_array_unref(victims);
}

/* Books the disk copy of @key as @size bytes (0 and @gone: deleted), used now. Returns
 * what the disk bound now asks to delete. Caller holds the lock. A pinned copy counts
 * apart, in its own table, and is never deleted for the bound. */
static GPtrArray *disk_book(struct cache *c, const char *key, uint64_t size, bool gone, bool pinned)
{
	GHashTable *files = pinned ? c->pinned_files : c->disk_files;
	uint64_t *bytes = pinned ? &c->stats.pinned_bytes : &c->stats.disk_bytes;
	g_autofree char *name = disk_name(key);
	struct disk_file *f = g_hash_table_lookup(files, name);

	if (f)
		*bytes -= f->size;
	if (gone) {
		g_hash_table_remove(files, name);
		return NULL;
	}
	if (!f) {
		f = g_new0(struct disk_file, 1);
		g_hash_table_insert(files, g_strdup(name), f);
	}
	f->size = size;
	f->used = ++c->disk_uses;
	if (pinned) /* its age, for cache_set_pinned_max_age */
		f->mtime_s = g_get_real_time() / USEC;
	*bytes += size;
	return pinned ? NULL : disk_trim(c, name);
}

static void disk_drop(struct cache *c, const char *key);

static bool write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/* Writes @head then @body to @file as g_file_set_contents_full does (CONSISTENT and
 * DURABLE: a temporary file beside it, 0600, fsynced, renamed over it), from the two
 * buffers: a body of up to 16 MiB is not copied once more to be written. */
static bool disk_write(const char *file, const GString *head, GBytes *body)
{
	g_autofree char *tmp = g_strconcat(file, ".XXXXXX", NULL);
	gsize len;
	const char *bytes = g_bytes_get_data(body, &len);
	int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0600);
	bool ok;

	if (fd < 0)
		return false;
	ok = write_all(fd, head->str, head->len) && write_all(fd, bytes, len) && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (ok && rename(tmp, file) == 0)
		return true;
	unlink(tmp);
	return false;
}

/* Writes a pinned copy (kept for good, counted apart from the disk bound). */
static void disk_store_pinned(struct cache *c, const char *key, const char *file,
			      const GString *head, GBytes *body)
{
	if (g_mkdir_with_parents(c->pinned_dir, 0700) != 0 || !disk_write(file, head, body))
		return;
	g_mutex_lock(&c->lock);
	disk_book(c, key, head->len + g_bytes_get_size(body), false, true);
	g_mutex_unlock(&c->lock);
}

/* Writes the disk copy of @key atomically; a failure only costs the copy. Its size is
 * booked, and older copies deleted for it, before it is written, so that concurrent
 * writes of large bodies do not take the directory past the disk bound (a pinned copy
 * is booked apart, after its write). @changed_at_us is unix µs, @fetched_at_s unix
 * seconds. */
static void disk_store(struct cache *c, const char *key, bool pinned, GBytes *body,
		       gint64 changed_at_us, gint64 fetched_at_s)
{
	g_autofree char *file = disk_file(c, key, pinned);
	g_autoptr(GString) head = NULL;

	if (!file || strchr(key, '\n'))
		return;
	head = g_string_new(DISK_MAGIC);
	g_string_append_printf(head,
			       "key=%s\nchanged_at=%" G_GINT64_FORMAT ".%06" G_GINT64_FORMAT
			       "\nfetched_at=%" G_GINT64_FORMAT "\n\n",
			       key, changed_at_us / USEC, changed_at_us % USEC, fetched_at_s);
	if (pinned) {
		disk_store_pinned(c, key, file, head, body);
		return;
	}
	g_autofree char *name = disk_name(key);
	g_mutex_lock(&c->lock);
	GPtrArray *victims = disk_book(c, key, head->len + g_bytes_get_size(body), false, false);
	struct disk_file *f = g_hash_table_lookup(c->disk_files, name);
	f->writing++;
	g_mutex_unlock(&c->lock);
	disk_unlink_all(victims);
	bool written = disk_write(file, head, body);
	g_mutex_lock(&c->lock);
	/* Gone when cache_forget dropped the key meanwhile (cache_get drops the copy
	 * just written again). */
	f = g_hash_table_lookup(c->disk_files, name);
	if (f)
		f->writing--;
	/* Copies skipped while they were being written may be over the bound now. */
	victims = written ? disk_trim(c, name) : NULL;
	if (!written) /* the booking goes, whether or not an older copy is still there */
		disk_book(c, key, 0, true, false);
	g_mutex_unlock(&c->lock);
	disk_unlink_all(victims);
	if (!written)
		disk_drop(c, key);
}

static void disk_drop(struct cache *c, const char *key)
{
	for (int pinned = 0; pinned < 2; pinned++) {
		g_autofree char *file = disk_file(c, key, pinned);

		if (!file || (unlink(file) != 0 && errno != ENOENT))
			continue;
		g_mutex_lock(&c->lock);
		disk_book(c, key, 0, true, pinned);
		g_mutex_unlock(&c->lock);
	}
}

/* Reads the disk copy of @key: its body (a new reference), when it changed (unix µs) and
 * was fetched (unix s). Touches no entry, so it runs without the lock. False when there
 * is none. */
static bool disk_read(struct cache *c, const char *key, bool pinned, GBytes **body,
		      gint64 *changed_at_us, gint64 *fetched_at_s)
{
	g_autofree char *file = disk_file(c, key, pinned);
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
	found = disk_read(c, e->key, e->pinned, &body, &changed_at_us, &fetched_at_s);
	g_mutex_lock(&c->lock);
	e->loading = false;
	if (g_get_monotonic_time() - e->load_started_us >= (gint64)c->timeout_s * USEC)
		log_warn(
		    "reading the disk copy of %s took over %d s: is %s on a slow or hung disk?",
		    e->key, c->timeout_s, c->disk_dir);
	/* A fetch finished meanwhile (a reader stopped waiting for a hung load): its body
	 * is newer, or its -ENOENT dropped the resource; the copy read is older than both. */
	if (found && e->flights == flights && !e->forgotten) {
		entry_set_body(c, e, body);
		/* An evicted body read back is the same version: same generation. */
		if (!e->gen || e->changed_at_us != changed_at_us)
			e->gen = next_generation();
		e->changed_at_us = changed_at_us;
		/* Carry the copy's age over to the monotonic clock: a remount within the TTL
		 * must not spend an API call. A clock that went back counts as age 0. */
		age_s = MAX(0, g_get_real_time() / USEC - fetched_at_s);
		e->fetched_at_us = g_get_monotonic_time() - age_s * USEC;
		disk_touch(c, e->key);
		memory_trim(c, e);
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
		e->waiters++;
		bool woken = g_cond_wait_until(&e->done, &c->lock, deadline);
		e->waiters--;
		if (!woken && e->loading && !e->body)
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
		e->lru_link.data = e;
		g_cond_init(&e->done);
		g_mutex_init(&e->disk_lock);
		g_hash_table_insert(c->entries, e->key, e);
	}
	return e;
}

static bool entry_fresh(struct cache_entry *e, int ttl_s)
{
	if (e->pinned)
		return e->body != NULL;
	return e->body && ttl_s > 0 &&
	       g_get_monotonic_time() - e->fetched_at_us < (gint64)ttl_s * USEC;
}

static void hit_fill(struct cache *c, struct cache_hit *hit, struct cache_entry *e, int error)
{
	entry_touch(c, e);
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
		hit_fill(c, hit, e, 0);
		return 0;
	}
	if (r == -ENOENT || r == -EACCES || !e->body)
		return r < 0 ? r : -EIO;
	c->stats.stale_served++;
	hit_fill(c, hit, e, r);
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
		e->waiters++;
		bool woken = g_cond_wait_until(&e->done, &c->lock, deadline);
		e->waiters--;
		if (!woken) {
			if (e->flights != flight)
				break;
			/* The fetch hangs: an old copy beats no answer. */
			if (e->body) {
				c->stats.stale_served++;
				hit_fill(c, hit, e, -ETIMEDOUT);
				return 0;
			}
			return -ETIMEDOUT;
		}
	}
	return answer(c, e, e->result, hit);
}

static int get_entry(struct cache *c, const char *key, const char *path, int ttl_s, bool pinned,
		     bool offline, cache_fetch_fn fetch, void *ctx, struct cache_hit *hit)
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
	e->forgotten = false; /* read again: live */
	if (pinned && !e->pinned) {
		/* Known unpinned so far (never in this mount): its copy is in pinned/. */
		e->pinned = true;
		if (!e->body)
			e->disk_checked = false;
	}
	r = disk_copy_settle(c, e);
	if (r < 0) {
		g_mutex_unlock(&c->lock);
		return r;
	}
	if (entry_fresh(e, ttl_s)) {
		c->stats.hits++;
		hit_fill(c, hit, e, 0);
		g_mutex_unlock(&c->lock);
		log_debug("cache hit %s", key);
		return 0;
	}
	if (offline) {
		r = -ENETDOWN;
		if (e->body) {
			c->stats.stale_served++;
			hit_fill(c, hit, e, -ENETDOWN);
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
			e->gen = next_generation();
			e->changed_at_us = g_get_real_time();
		}
		e->fetched_at_us = g_get_monotonic_time();
		memory_trim(c, e);
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
	e->writing++; /* keeps @e in the table (cache_forget) until the disk is written */
	g_mutex_unlock(&c->lock);

	/* The disk is written outside the lock, also when the bytes are the same, so that
	 * the copy's fetch time stays true for a remount. Only the newest fetch of the key
	 * writes: one that finished later has written or will write itself; none after the
	 * key was forgotten. */
	g_mutex_lock(&e->disk_lock);
	g_mutex_lock(&c->lock);
	newest = e->flights == flight && !e->forgotten;
	g_mutex_unlock(&c->lock);
	if (newest && body)
		disk_store(c, key, e->pinned, body, changed_at_us, fetched_at_s);
	else if (newest && r == -ENOENT)
		disk_drop(c, key);
	g_mutex_lock(&c->lock);
	/* Forgotten while this was written: the copy goes too. */
	bool drop = e->forgotten && newest;
	g_mutex_unlock(&c->lock);
	if (drop)
		disk_drop(c, key);
	g_mutex_unlock(&e->disk_lock);
	g_mutex_lock(&c->lock);
	e->writing--;
	entry_remove_if_forgotten(c, e);
	g_mutex_unlock(&c->lock);
	if (body)
		g_bytes_unref(body);
	return r;
}

int cache_get(struct cache *c, const char *key, const char *path, int ttl_s, bool offline,
	      cache_fetch_fn fetch, void *ctx, struct cache_hit *hit)
{
	return get_entry(c, key, path, ttl_s, false, offline, fetch, ctx, hit);
}

int cache_get_pinned(struct cache *c, const char *key, const char *path, bool offline,
		     cache_fetch_fn fetch, void *ctx, struct cache_hit *hit)
{
	return get_entry(c, key, path, 0, true, offline, fetch, ctx, hit);
}

void cache_set_pinned_max_age(struct cache *c, gint64 max_age_s)
{
	gint64 now_s = g_get_real_time() / USEC;
	g_autoptr(GPtrArray) old = g_ptr_array_new_with_free_func(g_free);
	GHashTableIter it;
	void *name, *value;

	if (!c->disk_dir || max_age_s <= 0)
		return;
	g_mutex_lock(&c->lock);
	g_hash_table_iter_init(&it, c->pinned_files);
	while (g_hash_table_iter_next(&it, &name, &value)) {
		struct disk_file *f = value;

		if (now_s - f->mtime_s <= max_age_s)
			continue;
		c->stats.pinned_bytes -= f->size;
		g_ptr_array_add(old, g_build_filename(c->pinned_dir, name, NULL));
		g_hash_table_iter_remove(&it);
	}
	g_mutex_unlock(&c->lock);
	for (guint i = 0; i < old->len; i++)
		unlink(old->pdata[i]);
}

/* Removes a forgotten @e from the table once no thread is busy with it. Caller holds the
 * lock; @e may be freed. */
static void entry_remove_if_forgotten(struct cache *c, struct cache_entry *e)
{
	if (!e->forgotten || e->fetching || e->loading || e->writing || e->waiters)
		return;
	entry_set_body(c, e, NULL);
	g_hash_table_remove(c->entries, e->key);
}

void cache_forget(struct cache *c, const char *key)
{
	struct cache_entry *e;

	g_mutex_lock(&c->lock);
	e = g_hash_table_lookup(c->entries, key);
	if (e) {
		entry_set_body(c, e, NULL);
		e->gen = 0;
		e->disk_checked = true; /* its copy is deleted below */
		e->forgotten = true;
		entry_remove_if_forgotten(c, e);
	}
	g_mutex_unlock(&c->lock);
	disk_drop(c, key);
}

void cache_set_bounds(struct cache *c, uint64_t memory_bytes, uint64_t disk_bytes)
{
	GPtrArray *victims;

	g_mutex_lock(&c->lock);
	c->memory_max = memory_bytes;
	c->disk_max = disk_bytes;
	memory_trim(c, NULL);
	victims = c->disk_dir ? disk_trim(c, NULL) : NULL;
	g_mutex_unlock(&c->lock);
	disk_unlink_all(victims);
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
		hit_fill(c, hit, e, 0);
		r = 0;
	}
	g_mutex_unlock(&c->lock);
	return r;
}

bool cache_holds(struct cache *c, const char *key)
{
	g_autofree char *name = disk_name(key);
	struct cache_entry *e;
	bool held;

	g_mutex_lock(&c->lock);
	e = g_hash_table_lookup(c->entries, key);
	held = (e && e->body) || g_hash_table_contains(c->disk_files, name) ||
	       g_hash_table_contains(c->pinned_files, name);
	g_mutex_unlock(&c->lock);
	return held;
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	g_mutex_lock(&c->lock);
	*out = c->stats;
	g_mutex_unlock(&c->lock);
}
