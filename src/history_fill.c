/* history_fill: the background fill of a scarce quota's history. See the header. */
#include "history_fill.h"

#include <errno.h>
#include <string.h>

#include "log.h"

/* How often the budget is looked at again when it allows no call: a look costs none. */
#define IDLE_WAIT_US (1 * G_USEC_PER_SEC)
/* A period the cloud refused (a day before the zone existed; a 5xx after its retries) is
 * not asked again for this long. */
#define REFUSED_FOR_US ((gint64)86400 * G_USEC_PER_SEC)
/* After a call for the tree (a zone list, a home) failed, none for this long: the fill
 * looks again every IDLE_WAIT_US and must not ask again each time. */
#define TREE_RETRY_US ((gint64)60 * G_USEC_PER_SEC)
/* How deep the tree is walked for history directories (homes/H/zones/Z/history is 5). */
#define MAX_DEPTH 6

struct history_fill {
	struct session *s;
	GThread *thread;
	GMutex lock; /* guards stopping; waited on with wake */
	GCond wake;
	bool stopping;
	GHashTable *refused; /* cache key -> gint64 * (monotonic µs until); the thread's own */
	gint64 tree_calls_from_us; /* monotonic: no call for the tree before; the thread's own */
};

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
static int fill_get(struct history_fill *f, const struct resource_ref *ref, struct resource *res)
{
	if (session_get_cached(f->s, ref, res) == 0)
		return 0;
	return session_peek(f->s, ref, res);
}

/* The path @comp of @n components, with the clock history listings depend on. */
static struct provider_path fill_path(struct history_fill *f, char **comp, size_t n)
{
	struct provider_path pp = {.comp = (const char *const *)comp, .n = n};

	pp.now_s = session_now_s(f->s);
	pp.history_from_s = session_history_from_s(f->s, pp.now_s);
	return pp;
}

/* Whether a call for the tree may go now. */
static bool tree_call_allowed(struct history_fill *f)
{
	return g_get_monotonic_time() >= f->tree_calls_from_us && session_background_allows(f->s);
}

/* Returns @r, the result of a call for the tree, after taking note of a failure. */
static int tree_call_done(struct history_fill *f, int r)
{
	if (r < 0)
		f->tree_calls_from_us = g_get_monotonic_time() + TREE_RETRY_US;
	return r;
}

static bool refused(struct history_fill *f, const struct resource_ref *ref)
{
	const gint64 *until = g_hash_table_lookup(f->refused, ref->key ? ref->key : ref->path);

	return until && g_get_monotonic_time() < *until;
}

/* Walks directory @comp (@n components) and below, as far as the cache holds their
 * listings (a history directory's, and what decides which resource a path is, are
 * fetched), for the periods of history the cache does not hold, into @wanted. */
static int fill_walk(struct history_fill *f, char **comp, size_t n, GPtrArray *wanted)
{
	const struct provider *p = session_provider(f->s);
	struct provider_path pp = fill_path(f, comp, n);
	g_autoptr(GPtrArray) entries = provider_entries_new();
	struct resource_ref ref = {0};
	struct resource res = {0};
	int r;

	if (stopping(f) || n >= MAX_DEPTH)
		return 0;
	r = session_source(f->s, &pp, &ref, true);
	/* What says which resource a path is (tado: the zone list, the home) is worth a call. */
	if (r < 0 && tree_call_allowed(f))
		r = tree_call_done(f, session_source(f->s, &pp, &ref, false));
	if (r == 0 && ref.path)
		r = fill_get(f, &ref, &res);
	/* What a history directory is listed from (tado: the home) is worth a call. */
	if (r < 0 && ref.path && ref.list_epoch && tree_call_allowed(f))
		r = tree_call_done(f, session_get(f->s, &ref, &res));
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
		struct provider_path cp = fill_path(f, child, n + 1);
		struct wanted *w;

		child[n] = e->name;
		if (e->type == ENTRY_DIR) {
			fill_walk(f, child, n + 1, wanted);
			continue;
		}
		w = g_new0(struct wanted, 1);
		/* Only history: a period (paged or immutable) the cache does not hold. */
		if (session_source(f->s, &cp, &w->ref, true) < 0 || !w->ref.path ||
		    !(w->ref.paged || w->ref.immutable_at_s) || session_holds(f->s, &w->ref) ||
		    refused(f, &w->ref)) {
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
 * first. Returns whether it fetched anything (then another round may go at once). */
static bool fill_round(struct history_fill *f)
{
	g_autoptr(GPtrArray) wanted = g_ptr_array_new_with_free_func(wanted_free);
	g_autoptr(GHashTable) asked = g_hash_table_new(g_str_hash, g_str_equal);
	char *root[1] = {NULL};
	bool fetched = false;

	if (!session_background_allows(f->s))
		return false;
	fill_walk(f, root, 0, wanted);
	g_ptr_array_sort(wanted, wanted_newest_first);
	for (guint i = 0; i < wanted->len && !stopping(f); i++) {
		struct wanted *w = wanted->pdata[i];
		const char *key = w->ref.key ? w->ref.key : w->ref.path;
		struct resource res = {0};
		int r;

		/* A period's files (.json, .csv) are one resource: one call. */
		if (!g_hash_table_add(asked, (gpointer)key) || session_holds(f->s, &w->ref))
			continue;
		if (!session_background_allows(f->s))
			break;
		r = session_get(f->s, &w->ref, &res);
		resource_clear(&res);
		if (r == 0) {
			fetched = true;
			log_debug("history: %s fetched in the background", w->path);
			continue;
		}
		if (r != -ENOENT && r != -EIO && r != -EACCES)
			break; /* the quota, the network: later */
		gint64 *until = g_new(gint64, 1);
		*until = g_get_monotonic_time() + REFUSED_FOR_US;
		g_hash_table_replace(f->refused, g_strdup(key), until);
		log_info("history: %s is not available (%s); not asked again for a day", w->path,
			 g_strerror(-r));
	}
	return fetched;
}

static gpointer fill_thread(gpointer data)
{
	struct history_fill *f = data;

	while (!stopping(f)) {
		bool more = fill_round(f);
		g_mutex_lock(&f->lock);
		if (!f->stopping && !more)
			g_cond_wait_until(&f->wake, &f->lock,
					  g_get_monotonic_time() + IDLE_WAIT_US);
		g_mutex_unlock(&f->lock);
	}
	return NULL;
}

struct history_fill *history_fill_start(struct session *session)
{
	const struct options *o = session ? session_options(session) : NULL;
	struct history_fill *f;

	if (!session || !session_provider(session)->quota_is_scarce || o->history_days <= 0 ||
	    o->history_budget <= 0 || o->offline)
		return NULL;
	f = g_new0(struct history_fill, 1);
	f->s = session;
	g_mutex_init(&f->lock);
	g_cond_init(&f->wake);
	f->refused = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
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
	g_hash_table_destroy(f->refused);
	g_cond_clear(&f->wake);
	g_mutex_clear(&f->lock);
	g_free(f);
}
