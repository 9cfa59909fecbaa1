/* cache: API response bodies by resource, with a TTL, single-flight fetching,
 * stale-if-error, and an on-disk copy that survives a remount.
 *
 * Single-flight: however many threads ask for a cold or expired resource at once,
 * one of them calls the fetch function (without holding any lock) and the others
 * wait for its answer, at most the cache's timeout. The same holds for a key's disk copy:
 * its first reader reads it without any lock, the key's other readers wait for that read
 * (at most the timeout; a read running longer is hung and later readers fetch), and the
 * readers of other keys do not wait at all. A copy read after a fetch of the key ended
 * is dropped: it is older.
 *
 * Every entry carries a generation that changes exactly when its bytes change, and the
 * (wall clock) time when they last changed: that is the mtime of the files made from it.
 *
 * All functions are thread-safe; the cache's mutex guards every entry field. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

struct cache;

/* Fetches @path. Returns 0 and a new reference in *body, or a negative errno:
 * -ENOENT (the resource is gone: the entry is dropped), -EACCES (the login is no longer
 * valid: no copy is served, the user must act), anything else (the last good copy, if
 * any, is served as stale). Called without locks held. */
typedef int (*cache_fetch_fn)(void *ctx, const char *path, GBytes **body);

struct cache_hit {
	GBytes *body;	      /* a reference of the caller's (cache_hit_clear) */
	uint64_t gen;	      /* never 0 */
	gint64 changed_at_us; /* unix (wall clock) */
	bool stale;	      /* served after a failed refresh (or offline) */
	int error;	      /* when stale: why (the fetch's negative errno) */
	gint64 fetched_at_us; /* monotonic (g_get_monotonic_time): the body's fetch */
};

struct cache_stats {
	uint64_t hits;	       /* answered from memory or disk, fresh */
	uint64_t fetches;      /* calls of the fetch function */
	uint64_t stale_served; /* answered with a stale copy after an error */
	uint64_t errors;       /* fetches that failed */
	uint64_t entries;      /* keys with a body in memory */
	uint64_t bytes;	       /* their bodies' bytes */
	uint64_t evictions;    /* bodies dropped from memory for its bound */
	uint64_t disk_bytes;   /* bytes of the disk copies */
	uint64_t pinned_bytes; /* bytes of the pinned disk copies (not in disk_bytes) */
};

/* A cache whose on-disk copy lives in @disk_dir (created 0700; NULL: memory only), and
 * whose waiters give up after @timeout_s seconds. */
struct cache *cache_new(const char *disk_dir, int timeout_s);
void cache_free(struct cache *c);
/* Bounds the bodies in memory to @memory_bytes (the least recently used lose theirs and
 * read their disk copy again when asked) and the disk copies to @disk_bytes (the least
 * recently used are deleted); 0 leaves one unbounded. A single body larger than the
 * memory bound is still cached until the next one arrives. */
void cache_set_bounds(struct cache *c, uint64_t memory_bytes, uint64_t disk_bytes);
/* Drops everything of @key, in memory and on disk: for a resource that is gone (its
 * entry left its list). A reader of @key after this fetches it again. */
void cache_forget(struct cache *c, const char *key);

/* The body of resource @key (fetched from @path when needed): fresh if it was fetched
 * less than @ttl_s seconds ago, else fetched again through @fetch. With @offline, never
 * fetches: serves any copy (memory or disk) as stale, -ENETDOWN without one.
 * Returns 0, or the fetch's negative errno when no copy can be served, or -ETIMEDOUT
 * when another thread's fetch did not finish in time. */
int cache_get(struct cache *c, const char *key, const char *path, int ttl_s, bool offline,
	      cache_fetch_fn fetch, void *ctx, struct cache_hit *hit);
/* cache_get for a resource that never changes (a finished period of history): once it has
 * a body it is fresh for good, and its disk copy is pinned: kept apart from the others,
 * never deleted by the disk bound. A pinned copy goes only through cache_forget, or when
 * it is older than cache_set_pinned_max_age at the next start. */
int cache_get_pinned(struct cache *c, const char *key, const char *path, bool offline,
		     cache_fetch_fn fetch, void *ctx, struct cache_hit *hit);
/* Deletes the pinned copies written more than @max_age_s ago; call at start, before any
 * reader. */
void cache_set_pinned_max_age(struct cache *c, gint64 max_age_s);
void cache_hit_clear(struct cache_hit *hit);
/* The generation of @key if it is cached (0 if not), without fetching. */
uint64_t cache_peek_gen(struct cache *c, const char *key);
/* The copy of @key held in memory, fresh or not, without fetching, loading or counting
 * anything. Returns 0, or -ENOENT when there is none. */
int cache_peek(struct cache *c, const char *key, struct cache_hit *hit);
/* Whether a body of @key is held, in memory or on disk (pinned or not): what a read could
 * serve without a fetch, fresh or not. Loads and counts nothing. */
bool cache_holds(struct cache *c, const char *key);
/* The counters, kept running: O(1). */
void cache_get_stats(struct cache *c, struct cache_stats *out);
