/* session: one mounted account — its provider, options, HTTP client, tokens, cache and
 * counters. session_get() is the single road from the tree to the cloud:
 * cache (fresh? serve) → single-flight → authorized GET with retries → rate-limit
 * accounting → cache. It also renders .smarthomefs/status.json and metrics.
 * Thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <jansson.h>
#include "config.h"
#include "http.h"
#include "provider.h"

struct session;

/* A session for @account, taking over @opts (left cleared). Touches no keyring yet. */
struct session *session_new(const struct account *account, struct options *opts);
void session_free(struct session *s);
/* Loads the tokens (after the fork). Errors carry a sentence for the user. */
int session_start(struct session *s, GError **err);

const struct provider *session_provider(struct session *s);
/* The account's name ("tado", "tado:second"). */
const char *session_account_id(struct session *s);
/* The account was logged out while mounted: its tokens are dropped from memory and no
 * request is sent for it again (every fetch: -EACCES); what is cached stays readable
 * to whoever still holds the session. */
void session_log_out(struct session *s);
const struct options *session_options(struct session *s);
/* The directory of the account's disk cache (g_free); the filesystem keeps its mtimes
 * there too. */
char *session_cache_dir(struct session *s);
/* Tests: the wall clock (unix µs) the budget and its refill are reckoned by; NULL: the
 * real one. Set before any read. */
void session_set_wall_clock(struct session *s, gint64 (*wall_clock_us)(void));

/* Now on the cloud's clock, unix seconds: the wall clock corrected by what the cloud's
 * answers said of theirs (their Date header), so that "today" is the cloud's today even
 * on a machine whose clock is off (and the emulator's clock in tests). */
gint64 session_now_s(struct session *s);
/* The oldest instant history listings reach at @now (history_days=; G_MAXINT64: none). */
gint64 session_history_from_s(struct session *s, gint64 now);

struct resource {
	GBytes *bytes; /* the body as the API sent it; a reference (resource_clear) */
	uint64_t gen;
	gint64 changed_at_us; /* unix (wall clock) */
	bool stale;
	bool fixed_time;	 /* changed_at_us is the resource's own time (a period's
				  * end, once passed), not when its bytes were fetched */
	double fresh_for_s;	 /* how long from now the body stays fresh: how long the kernel
				  * may cache what is made of it (a stale copy: 1 s) */
	struct session *session; /* whose parsed bodies resource_json shares; NULL: none */
};

void resource_clear(struct resource *r);
/* The body parsed (a new reference), or NULL when it is not JSON. The tree may be
 * shared with other threads (the session keeps the recently used ones, by generation):
 * read it, never change it. */
json_t *resource_json(const struct resource *r);

/* A body larger than this is large: its tree weighs up to 12 times the body. The same size
 * as http's, whose slots bound such bodies in flight. */
#define SESSION_LARGE_BODY HTTP_LARGE_BODY
/* The work on a large body (its parse, and what is made of the tree until it is freed)
 * runs one at a time in the process (a mount, whatever its accounts), so that the trees
 * of large bodies in memory add up to one: call session_large_begin with the body's
 * length before parsing and session_large_end with its result after freeing the tree.
 * Returns whether it locked (only for a large body). The lock is taken before any
 * other but http's slot for a large body (the fetch that received it parses it with the
 * slot held: http.h); leaf locks (the tree's, the JSON memo's, the renderings') may be
 * taken under it, never a network call. */
bool session_large_begin(size_t len);
void session_large_end(bool locked);

/* Sets @ref to the resource @path is made from: the provider's source(), then, for a
 * path that depends on another resource, source_in() with that resource's body, got
 * through the cache (@peek: only a copy held in memory, never a fetch). A sentence the
 * provider has about what it cannot show is logged once and listed in status.json's
 * "notes". Returns 0 or a negative errno (-EPROTONOSUPPORT for what it cannot show). */
int session_source(struct session *s, const struct provider_path *path, struct resource_ref *ref,
		   bool peek);
/* The body of @ref, through the cache. Returns 0 or a negative errno (-ENOENT, -EACCES,
 * -EAGAIN, -EIO, -EREMOTEIO (a 5xx), -ETIMEDOUT, -ENETDOWN: what each means to a reader
 * is the table "When the cloud fails" in docs/reliability.md). */
int session_get(struct session *s, const struct resource_ref *ref, struct resource *out);
/* As session_get, for the history fill: a finished period whose final copy is not held is
 * fetched, where session_get answers with the copy from before (session_holds). */
int session_get_latest(struct session *s, const struct resource_ref *ref, struct resource *out);
/* As session_get when a fresh copy is in memory (or offline): never fetches, never
 * waits for a fetch. -EINPROGRESS when answering needs a fetch. */
int session_get_cached(struct session *s, const struct resource_ref *ref, struct resource *out);
/* Whether the cache holds a copy of @ref, in memory or on disk: its final one once it is
 * final, or until that is fetched the one from before (a day's file while it was today's).
 * Where the history fill runs (session_history_filled), a read serves it without a call;
 * without the fill, a read of a final period still tries its final copy first. */
bool session_holds(struct session *s, const struct resource_ref *ref);
/* Whether the cache holds the copy a fetch of @ref would bring now: its final one once it
 * is final. What the history fill has left to fetch is what this says it lacks. */
bool session_holds_latest(struct session *s, const struct resource_ref *ref);
/* Whether the history fill brings this account's history in (history_fill.h): its quota
 * is scarce, history_days= and history_budget= are above 0, and it is not offline. */
bool session_history_filled(struct session *s);
/* Whether a background call (the history fill) may go out now: within history_budget=
 * percent of a quota, never out of the user's reads' share (budget_background_allows). */
bool session_background_allows(struct session *s);
/* The calls the cloud's rate limit still allows in its window, as last told; -1 when
 * unknown (no RateLimit header seen). */
long session_budget_remaining(struct session *s);
/* @ref is gone (it left its list): its copies in memory and on disk are dropped. */
void session_forget(struct session *s, const struct resource_ref *ref);
/* The body of @ref held in memory, as it is, without fetching (-ENOENT: none). */
int session_peek(struct session *s, const struct resource_ref *ref, struct resource *out);
/* The effective TTL for @ref now (stretched when the quota runs low). */
int session_ttl(struct session *s, const struct resource_ref *ref);

/* .smarthomefs/status.json of a mount of this one account, and its object (a new
 * reference): one account's entry in a mount of several. */
void session_render_status(struct session *s, GString *out);
json_t *session_status_json(struct session *s);
/* .smarthomefs/metrics of @n sessions: each metric's HELP and TYPE once, one sample per
 * account (label account="ID"). */
void session_render_metrics(struct session *const *s, size_t n, GString *out);
