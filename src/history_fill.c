/* history_fill: the background fill of a scarce quota's history. See the header. */
#include "history_fill.h"

#include <errno.h>
#include <string.h>

#include "log.h"

/* How often the budget is looked at again when it allows no call: a look costs none. */
#define IDLE_WAIT_US (1 * G_USEC_PER_SEC)
/* How often the tree is walked again when nothing was missing (or the cloud failed): a
 * walk costs no call, but looks at every period listed. */
#define DONE_WAIT_US (10 * G_USEC_PER_SEC)
/* A period the cloud refused (a 4xx: a day before the zone existed), or failed to answer
 * RETRIES times in a row, is not asked again for this long. */
#define REFUSED_FOR_US ((gint64)86400 * G_USEC_PER_SEC)
/* After a call failed other than by a refusal (a 5xx or a timeout after the HTTP client's
 * own tries, the network, the login), the account's fill makes no call for RETRY_FIRST_US,
 * four times as long after each such failure in a row, at most RETRY_MAX_US; a fetch
 * starts over. A day a 5xx made fail is asked again soon, not a day later, and a cloud
 * that is down costs a few calls, all of them within history_budget=. */
#define RETRY_FIRST_US ((gint64)10 * G_USEC_PER_SEC)
#define RETRY_MAX_US   ((gint64)3600 * G_USEC_PER_SEC)
/* A period whose calls the cloud failed (5xx, timeout) this many times in a row is left for
 * a day, as a refused one: one broken day must not hold back the others. */
#define RETRIES 4
/* After a call for the tree (a zone list, a home) failed, none for this long: the fill
 * looks again every IDLE_WAIT_US and must not ask again each time. */
#define TREE_RETRY_US ((gint64)60 * G_USEC_PER_SEC)
/* How deep the tree is walked for history directories (homes/H/zones/Z/history is 5). */
#define MAX_DEPTH 6

struct history_fill {
	struct accounts *accounts;
	GThread *thread;
	GMutex lock; /* guards stopping; waited on with wake */
	GCond wake;
	bool stopping;
	GHashTable *by_session; /* struct session * -> struct account_fill *; the thread's own */
};

/* What the fill knows of one account (the thread's own). */
struct account_fill {
	struct history_fill *fill;
	struct session *s;
	GHashTable *failed;	   /* cache key -> struct failure: periods not answered */
	gint64 tree_calls_from_us; /* monotonic: no call for the tree before */
	gint64 calls_from_us;	   /* monotonic: no call for a period before (a failure) */
	int failures;		   /* calls failed in a row, but for refusals */
};

/* What the fill knows of a period whose call did not bring it. */
struct failure {
	gint64 until_us; /* monotonic: not asked again before */
	int failures;	 /* the cloud failed its calls this many times in a row */
};

static void account_fill_free(gpointer data)
{
	struct account_fill *af = data;

	g_hash_table_destroy(af->failed);
	g_free(af);
}

/* A period to fetch: its path in the tree (for the log) and its resource. */
struct wanted {
	char *name; /* the file's name: a period, which sorts by time */
	char *path;
	struct resource_ref ref;
};

static void wanted_free(gpointer data)
{
	struct wanted *w = data;

	g_free(w->name);
	g_free(w->path);
	resource_ref_clear(&w->ref);
	g_free(w);
}

/* The newest period first; the tree's order among equals. */
static gint wanted_newest_first(gconstpointer a, gconstpointer b)
{
	const struct wanted *x = *(struct wanted *const *)a, *y = *(struct wanted *const *)b;

	return strcmp(y->name, x->name);
}

static bool stopping(struct history_fill *f)
{
	g_mutex_lock(&f->lock);
	bool stop = f->stopping;
	g_mutex_unlock(&f->lock);
	return stop;
}

/* @ref's body as the cache holds it in memory, fresh or not: the fill spends no call on
 * a listing (a device list, the zones' states), only on history and what it is listed
 * from. -ENOENT when it holds none. */
static int fill_get(struct account_fill *af, const struct resource_ref *ref, struct resource *res)
{
	if (session_get_cached(af->s, ref, res) == 0)
		return 0;
	return session_peek(af->s, ref, res);
}

/* The path @comp of @n components, with the clock history listings depend on. */
static struct provider_path fill_path(struct account_fill *af, char **comp, size_t n)
{
	struct provider_path pp = {.comp = (const char *const *)comp, .n = n};

	pp.now_s = session_now_s(af->s);
	pp.history_from_s = session_history_from_s(af->s, pp.now_s);
	return pp;
}

/* Whether a call for the tree may go now. */
static bool tree_call_allowed(struct account_fill *af)
{
	return g_get_monotonic_time() >= af->tree_calls_from_us && session_background_allows(af->s);
}

/* Returns @r, the result of a call for the tree, after taking note of a failure. */
static int tree_call_done(struct account_fill *af, int r)
{
	if (r < 0)
		af->tree_calls_from_us = g_get_monotonic_time() + TREE_RETRY_US;
	return r;
}

/* Whether @ref is not to be asked now: refused, or failed a moment ago. */
static bool refused(struct account_fill *af, const struct resource_ref *ref)
{
	const struct failure *f = g_hash_table_lookup(af->failed, ref->key ? ref->key : ref->path);

	return f && g_get_monotonic_time() < f->until_us;
}

/* Takes note that the call for @w failed with @r (not -EAGAIN: the budget's own rule). */
static void note_failure(struct account_fill *af, const struct wanted *w, int r)
{
	const char *key = w->ref.key ? w->ref.key : w->ref.path;
	struct failure *f = g_hash_table_lookup(af->failed, key);
	gint64 now = g_get_monotonic_time();
	/* The cloud said no to this period; anything else is the cloud's or the road's. */
	bool refusal = r == -ENOENT || r == -EIO;
	bool cloud_failed = r == -EREMOTEIO || r == -ETIMEDOUT;

	if (!f) {
		f = g_new0(struct failure, 1);
		g_hash_table_insert(af->failed, g_strdup(key), f);
	}
	if (!refusal) {
		gint64 pause = RETRY_FIRST_US;
		for (int i = 0; i < af->failures && pause < RETRY_MAX_US; i++)
			pause *= 4;
		pause = MIN(pause, RETRY_MAX_US);
		af->failures++;
		af->calls_from_us = now + pause;
		f->failures += cloud_failed;
		f->until_us = af->calls_from_us;
		if (f->failures < RETRIES) {
			log_info("history: %s could not be fetched (%s); trying again in "
				 "%" G_GINT64_FORMAT " s",
				 w->path, g_strerror(-r), pause / G_USEC_PER_SEC);
			return;
		}
	}
	f->until_us = now + REFUSED_FOR_US;
	log_info("history: %s is not available (%s); not asked again for a day", w->path,
		 g_strerror(-r));
}

/* Walks directory @comp (@n components) and below, as far as the cache holds their
 * listings (a history directory's, and what decides which resource a path is, are
 * fetched), for the periods of history the cache does not hold, into @wanted. */
static int fill_walk(struct account_fill *af, char **comp, size_t n, GPtrArray *wanted)
{
	const struct provider *p = session_provider(af->s);
	struct provider_path pp = fill_path(af, comp, n);
	g_autoptr(GPtrArray) entries = provider_entries_new();
	struct resource_ref ref = {0};
	struct resource res = {0};
	int r;

	if (stopping(af->fill) || n >= MAX_DEPTH)
		return 0;
	/* In a mount of all accounts, a home two logins share is one account's to fill. */
	struct session *owner = accounts_route(af->fill->accounts, &pp);
	if (owner && owner != af->s)
		return 0;
	r = session_source(af->s, &pp, &ref, true);
	/* What says which resource a path is (tado: the zone list, the home) is worth a call. */
	if (r < 0 && tree_call_allowed(af))
		r = tree_call_done(af, session_source(af->s, &pp, &ref, false));
	if (r == 0 && ref.path)
		r = fill_get(af, &ref, &res);
	/* What a history directory is listed from (tado: the home) is worth a call. */
	if (r < 0 && ref.path && ref.list_epoch && tree_call_allowed(af))
		r = tree_call_done(af, session_get(af->s, &ref, &res));
	if (r == 0) {
		json_t *body = ref.path ? resource_json(&res) : NULL;
		r = ref.path && !body ? -EIO : p->list(&pp, body, entries);
		json_decref(body);
	}
	resource_clear(&res);
	resource_ref_clear(&ref);
	if (r < 0)
		return 0; /* a part of the tree not read yet: the rest */

	char **child = g_new0(char *, n + 2);
	memcpy(child, comp, n * sizeof(*child));
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = entries->pdata[i];
		struct provider_path cp = fill_path(af, child, n + 1);
		struct wanted *w;

		child[n] = e->name;
		if (e->type == ENTRY_DIR) {
			fill_walk(af, child, n + 1, wanted);
			continue;
		}
		w = g_new0(struct wanted, 1);
		/* Only history: a period (paged or immutable) the cache does not hold. */
		if (session_source(af->s, &cp, &w->ref, true) < 0 || !w->ref.path ||
		    !(w->ref.paged || w->ref.immutable_at_s) ||
		    session_holds_latest(af->s, &w->ref) || refused(af, &w->ref)) {
			wanted_free(w);
			continue;
		}
		w->name = g_strdup(e->name);
		w->path = g_strjoinv("/", child);
		g_ptr_array_add(wanted, w);
	}
	g_free(child);
	return 0;
}

/* One round: what is missing, then as much of it as the budget allows, the newest
 * first. Returns how long to wait before the next (µs): 0 after a fetch, IDLE_WAIT_US
 * while the budget allows no call, DONE_WAIT_US when nothing was missing or a call
 * failed, less when a failure's pause ends sooner. */
static gint64 fill_round(struct account_fill *af)
{
	g_autoptr(GPtrArray) wanted = g_ptr_array_new_with_free_func(wanted_free);
	g_autoptr(GHashTable) asked = g_hash_table_new(g_str_hash, g_str_equal);
	char *root[1] = {NULL};
	gint64 wait = DONE_WAIT_US;

	if (!session_background_allows(af->s))
		return IDLE_WAIT_US;
	if (g_get_monotonic_time() < af->calls_from_us)
		return MIN(af->calls_from_us - g_get_monotonic_time(), DONE_WAIT_US);
	fill_walk(af, root, 0, wanted);
	g_ptr_array_sort(wanted, wanted_newest_first);
	for (guint i = 0; i < wanted->len && !stopping(af->fill); i++) {
		struct wanted *w = wanted->pdata[i];
		const char *key = w->ref.key ? w->ref.key : w->ref.path;
		struct resource res = {0};
		int r;

		/* A period's files (.json, .csv) are one resource: one call. */
		if (!g_hash_table_add(asked, (gpointer)key) || session_holds_latest(af->s, &w->ref))
			continue;
		if (!session_background_allows(af->s)) {
			wait = MIN(wait, IDLE_WAIT_US);
			break;
		}
		r = session_get_latest(af->s, &w->ref, &res);
		resource_clear(&res);
		if (r == 0) {
			wait = 0;
			af->failures = 0;
			g_hash_table_remove(af->failed, key);
			log_debug("history: %s fetched in the background", w->path);
			continue;
		}
		if (r == -EAGAIN)
			break; /* the quota: budget_background_allows says when */
		note_failure(af, w, r);
		if (r != -ENOENT && r != -EIO)
			break; /* not this period's own: the pause is the account's */
	}
	return wait;
}

/* One round over every account serving now. Returns how long to wait (fill_round's,
 * the shortest). */
static gint64 fill_accounts(struct history_fill *f)
{
	g_autoptr(GPtrArray) sessions = accounts_sessions(f->accounts);
	gint64 wait = -1;

	for (guint i = 0; i < sessions->len && !stopping(f); i++) {
		struct session *s = sessions->pdata[i];
		struct account_fill *af = g_hash_table_lookup(f->by_session, s);

		if (!session_history_filled(s))
			continue;
		if (!af) {
			af = g_new0(struct account_fill, 1);
			af->fill = f;
			af->s = s;
			af->failed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
			g_hash_table_insert(f->by_session, s, af);
		}
		gint64 w = fill_round(af);
		wait = wait < 0 ? w : MIN(wait, w);
	}
	return wait < 0 ? IDLE_WAIT_US : wait; /* none yet: a mount of all may gain one */
}

static gpointer fill_thread(gpointer data)
{
	struct history_fill *f = data;

	while (!stopping(f)) {
		gint64 wait = fill_accounts(f);
		g_mutex_lock(&f->lock);
		if (!f->stopping && wait > 0)
			g_cond_wait_until(&f->wake, &f->lock, g_get_monotonic_time() + wait);
		g_mutex_unlock(&f->lock);
	}
	return NULL;
}

struct history_fill *history_fill_start(struct accounts *accounts)
{
	const struct options *o = accounts_options(accounts);
	struct session *one = accounts_one(accounts);
	struct history_fill *f;

	/* A mount of all accounts may gain a tado login later: its thread looks. */
	if (o->history_days <= 0 || o->history_budget <= 0 || o->offline ||
	    (one && !session_history_filled(one)))
		return NULL;
	f = g_new0(struct history_fill, 1);
	f->accounts = accounts;
	g_mutex_init(&f->lock);
	g_cond_init(&f->wake);
	f->by_session =
	    g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, account_fill_free);
	f->thread = g_thread_new("history", fill_thread, f);
	return f;
}

void history_fill_stop(struct history_fill *f)
{
	if (!f)
		return;
	g_mutex_lock(&f->lock);
	f->stopping = true;
	g_cond_signal(&f->wake);
	g_mutex_unlock(&f->lock);
	g_thread_join(f->thread);
	g_hash_table_destroy(f->by_session);
	g_cond_clear(&f->wake);
	g_mutex_clear(&f->lock);
	g_free(f);
}
