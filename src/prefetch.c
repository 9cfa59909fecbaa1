/* prefetch: the pool and the walk heuristics. See the header. */
#include "prefetch.h"

#include <malloc.h>
#include <stdatomic.h>
#include <string.h>

struct prefetch {
	struct fs_core *core;
	struct accounts *accounts;
	struct tree *tree;
	GMutex lock;	   /* guards pool */
	GThreadPool *pool; /* struct prefetch_job *; NULL before the start or after the end */
	atomic_uint_fast64_t seq; /* the order of queueing, for prefetch_job_cmp */
	atomic_int running;	  /* jobs in prefetch_one now */
};

/* A directory listed this long after the one before it in its parent (a Tibber home's
 * devices/ after the previous home's) is taken for the next step of one walk. When a
 * directory was listed is kept in its node as a byte of WALK_TICK_US ticks (tree_tick_set):
 * one that wrapped around (listed a multiple of 17 minutes before) may be taken for a
 * step, which costs a prefetch of what is cached or within the quota, never a wrong
 * answer. */
#define WALK_STEP_US  (60 * G_USEC_PER_SEC)
#define WALK_TICK_US  (4 * G_USEC_PER_SEC)

static uint8_t walk_tick(void)
{
	return (uint8_t)(g_get_monotonic_time() / WALK_TICK_US);
}

/* A prefetch job: warms the cache with one resource; with @comp, the resource is the
 * listing of directory @comp, and its entries' resources are queued next, at the same
 * priority. The pool runs lower @prio first, and among equals the older @seq. */
struct prefetch_job {
	struct session *session; /* whose resource */
	struct resource_ref ref;
	int prio;
	uint64_t seq;
	char **comp; /* the raw path of the listed directory, or NULL */
	size_t n;
};

/* What a walk needs now (a directory it has listed) runs before what it will need
 * next (the directory after it). */
enum { PREFETCH_NOW, PREFETCH_NEXT };

static void prefetch_job_free(gpointer data)
{
	struct prefetch_job *job = data;

	resource_ref_clear(&job->ref);
	g_strfreev(job->comp);
	g_free(job);
}

static gint prefetch_job_cmp(gconstpointer a, gconstpointer b, gpointer unused)
{
	const struct prefetch_job *x = a, *y = b;

	if (x->prio != y->prio)
		return x->prio < y->prio ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* How many resources one listing of @session's may have prefetched: prefetch_max, and
 * never past what the cloud's quota affords (half of what is left, the rest for the
 * reads). */
static size_t prefetch_limit(struct prefetch *pf, struct session *session)
{
	size_t max = (size_t)MAX(session_options(session)->prefetch_max, 0);
	long left = session_budget_remaining(session);

	return left >= 0 ? MIN(max, (size_t)(left / 2)) : max;
}

/* Queues @session's @ref (taking over its strings, and @comp's) unless a resource of the
 * same key is queued already (@seen, what was queued for this listing) or is the
 * listing's own (@own), or its cloud's quota is too scarce to prefetch from. Returns
 * false when the listing has had its share (prefetch_limit): nothing more is queued for
 * it. */
static bool prefetch_push(struct prefetch *pf, struct session *session, struct resource_ref *ref,
			  int prio, char **comp, size_t n, const char *own, GHashTable *seen)
{
	const char *key = ref->key ? ref->key : ref->path;
	bool room = g_hash_table_size(seen) < prefetch_limit(pf, session);

	if (session_provider(session)->quota_is_scarce) {
		resource_ref_clear(ref);
		g_strfreev(comp);
		return false;
	}
	/* History (a paged or immutable resource) is read when it is read, never ahead: a
	 * listing of history costs no call. */
	if (!room || !ref->path || ref->paged || ref->immutable_at_s || g_strcmp0(key, own) == 0 ||
	    g_hash_table_contains(seen, key)) {
		resource_ref_clear(ref);
		g_strfreev(comp);
		return room;
	}
	g_hash_table_add(seen, g_strdup(key));
	struct prefetch_job *job = g_new0(struct prefetch_job, 1);
	job->session = session;
	job->ref = *ref;
	job->prio = prio;
	job->seq = atomic_fetch_add(&pf->seq, 1);
	job->comp = comp;
	job->n = n;
	*ref = (struct resource_ref){0};
	g_mutex_lock(&pf->lock);
	/* No pool: the mount is ending, and a running job queues nothing more. */
	bool queued = pf->pool && g_thread_pool_push(pf->pool, job, NULL);
	g_mutex_unlock(&pf->lock);
	if (!queued)
		prefetch_job_free(job);
	return true;
}

/* Queues the resources that the files among @entries (of directory @comp, @n deep,
 * listed from resource @own), and the files of its static subdirectories, are made
 * of: what a stat of every entry (ls -l) or a walk (find, tar) reads next. Directory
 * listings are not queued, so listing homes/ does not fetch every home's devices. The
 * provider says which resources through source() and list(); nothing here knows a
 * cloud. */
static void prefetch_entries(struct prefetch *pf, struct session *session,
			     const char *const *comp, size_t n, GPtrArray *entries, const char *own,
			     int prio)
{
	const struct provider *p = session_provider(session);
	g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	const char **cc = g_new0(const char *, n + 2);

	for (size_t k = 0; k < n; k++)
		cc[k] = comp[k];
	bool room = true;
	for (guint i = 0; i < entries->len && room; i++) {
		struct provider_entry *e = entries->pdata[i];
		struct provider_path cp = {.comp = cc, .n = n + 1};
		struct resource_ref ref = {0};

		cc[n] = e->name;
		if (p->source(&cp, &ref) < 0) {
			resource_ref_clear(&ref);
			continue;
		}
		if (e->type == ENTRY_FILE) {
			room = prefetch_push(pf, session, &ref, prio, NULL, 0, own, seen);
			continue;
		}
		if (!ref.path) {
			/* A static directory costs no call to list: look one level further. */
			g_autoptr(GPtrArray) files = provider_entries_new();
			if (p->list(&cp, NULL, files) == 0) {
				for (guint k = 0; k < files->len; k++) {
					struct provider_entry *f = files->pdata[k];
					struct provider_path gp = {.comp = cc, .n = n + 2};
					struct resource_ref gref = {0};
					cc[n + 1] = f->name;
					if (f->type == ENTRY_FILE && p->source(&gp, &gref) == 0)
						room = room && prefetch_push(pf, session, &gref,
									     prio, NULL, 0, own,
									     seen);
					resource_ref_clear(&gref);
				}
			}
		}
		resource_ref_clear(&ref);
	}
	g_free(cc);
}

/* Queues the resources of the entries of directory @comp (@n deep) listed from @res,
 * @session's. */
static void prefetch_listed(struct prefetch *pf, struct session *session,
			    const char *const *comp, size_t n, const struct resource_ref *ref,
			    const struct resource *res, int prio)
{
	g_autoptr(GPtrArray) entries = provider_entries_new();
	struct provider_path pp = {.comp = comp, .n = n};
	json_t *body = resource_json(res);

	if (body && session_provider(session)->list(&pp, body, entries) == 0)
		prefetch_entries(pf, session, comp, n, entries, ref->key ? ref->key : ref->path,
				 prio);
	json_decref(body);
}

/* Runs in the pool. A fresh copy is a cache hit; a cold one is fetched once, however
 * many readers join (single-flight). Errors are the reader's to see, later. */
static void prefetch_one(gpointer data, gpointer user_data)
{
	struct prefetch_job *job = data;
	struct prefetch *pf = user_data;
	struct resource res = {0};

	atomic_fetch_add(&pf->running, 1);
	if (session_get(job->session, &job->ref, &res) == 0 && job->comp)
		prefetch_listed(pf, job->session, (const char *const *)job->comp, job->n,
				&job->ref, &res, job->prio);
	resource_clear(&res);
	prefetch_job_free(job);

	/* What a burst of prefetching leaves freed (the parses of listings too big for the
	 * JSON memo, the jobs, curl's buffers) lies between live blocks, where free() never
	 * gives pages back. When the last running job ends with nothing queued, the burst is
	 * over: malloc_trim hands those pages to the kernel (about 1.4 MiB of anonymous RSS
	 * after a 10 000-device walk; bench/run), once a burst, not once a job. */
	g_mutex_lock(&pf->lock);
	bool drained = atomic_fetch_sub(&pf->running, 1) == 1 && pf->pool &&
		       g_thread_pool_unprocessed(pf->pool) == 0;
	g_mutex_unlock(&pf->lock);
	if (drained)
		malloc_trim(0);
}

/* Whether directory @dir was listed (for prefetch) less than WALK_STEP_US ago. */
static bool listed_lately(struct prefetch *pf, struct node *dir)
{
	uint8_t tick;

	return dir && tree_tick_get(pf->tree, dir, &tick) &&
	       (uint8_t)(walk_tick() - tick) < WALK_STEP_US / WALK_TICK_US;
}

/* After @dir (at @np, made from resource @own) was listed for the first time in its
 * generation, and its entries are directories: a walk may be under way (find, tar,
 * ls -R), and it will list the directories of the same name beside @dir's parent next
 * (a Tibber home's devices/ beside the other homes'). Their listings are prefetched,
 * one resource each, so the walk finds each ready when it gets there. When the one
 * before @dir (in its grandparent's order) was listed lately, a walk is certain: the
 * entries of the one after are prefetched as well, after everything of @dir's own, so
 * that the prefetch threads never wait for the walk to get there. */
static void prefetch_cousins(struct prefetch *pf, struct node *dir, const struct node_path *np,
			     const char *own)
{
	struct node *parent = tree_parent(pf->tree, dir);
	struct node *grandparent = parent ? tree_parent(pf->tree, parent) : NULL;
	size_t n = np->pp.n;
	bool branches = false, walking = false;
	struct node *before = NULL, *next = NULL;
	char **next_comp = NULL;

	if (!grandparent || n < 2)
		return;
	GArray *children = tree_list(pf->tree, dir);
	for (guint i = 0; i < children->len && !branches; i++)
		branches = g_array_index(children, struct tree_dirent, i).is_dir;
	tree_dirents_free(children);
	if (!branches)
		return;

	g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	GArray *uncles = tree_list(pf->tree, grandparent);
	bool after_parent = false;
	for (guint i = 0; i < uncles->len; i++) {
		struct tree_dirent *d = &g_array_index(uncles, struct tree_dirent, i);
		struct node *uncle = tree_get(pf->tree, d->ino);
		struct resource_ref ref = {0};

		if (!d->is_dir || !uncle)
			continue;
		if (uncle == parent) {
			after_parent = true;
			walking =
			    before && listed_lately(pf, tree_child(pf->tree, before, dir->name));
			continue;
		}
		if (after_parent && !next)
			next = uncle;
		if (!after_parent)
			before = uncle;
		char **comp = g_strdupv(np->comp);
		g_free(comp[n - 2]);
		comp[n - 2] = g_strdup(tree_node_raw(uncle));
		struct provider_path cp = {.comp = (const char *const *)comp, .n = n};
		/* In a mount of several accounts a cousin may be another account's. */
		struct session *s = accounts_route(pf->accounts, &cp);
		if (s && session_provider(s)->source(&cp, &ref) == 0)
			prefetch_push(pf, s, &ref, PREFETCH_NOW, NULL, 0, own, seen);
		else
			resource_ref_clear(&ref);
		if (uncle == next)
			next_comp = g_steal_pointer(&comp);
		g_strfreev(comp);
	}
	tree_dirents_free(uncles);

	if (walking && next_comp) {
		struct provider_path cp = {.comp = (const char *const *)next_comp, .n = n};
		struct resource_ref ref = {0};
		g_autoptr(GHashTable) once =
		    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
		struct session *s = accounts_route(pf->accounts, &cp);
		if (s && session_provider(s)->source(&cp, &ref) == 0) {
			prefetch_push(pf, s, &ref, PREFETCH_NEXT, g_steal_pointer(&next_comp), n,
				      own, once);
		} else {
			resource_ref_clear(&ref);
		}
	}
	g_strfreev(next_comp);
}

void prefetch_listing(struct prefetch *pf, struct node *dir, const struct resource *res)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	bool todo;

	g_mutex_lock(&pf->lock);
	bool running = pf->pool != NULL;
	g_mutex_unlock(&pf->lock);
	if (!running || !res->gen || dir->internal ||
	    fs_core_source(pf->core, dir, &ref, &np) < 0 || !ref.path || !np.session)
		goto out;
	tree_tick_set(pf->tree, dir, walk_tick());
	todo = tree_mark(pf->tree, dir, TREE_MARK_PREFETCHED, res->gen);
	if (todo) {
		prefetch_listed(pf, np.session, np.pp.comp, np.pp.n, &ref, res, PREFETCH_NOW);
		prefetch_cousins(pf, dir, &np, ref.key ? ref.key : ref.path);
	}
out:
	resource_ref_clear(&ref);
	node_path_clear(&np);
}

struct prefetch *prefetch_new(struct fs_core *core)
{
	struct prefetch *pf = g_new0(struct prefetch, 1);

	pf->core = core;
	pf->accounts = fs_core_accounts(core);
	pf->tree = fs_core_tree(core);
	g_mutex_init(&pf->lock);
	return pf;
}

void prefetch_start(struct prefetch *pf)
{
	struct session *one = accounts_one(pf->accounts);
	const struct options *o = accounts_options(pf->accounts);

	/* One account whose quota is scarce never prefetches (prefetch_push says so for each
	 * resource of such an account in a mount of several). */
	if (o->prefetch <= 0 || (one && session_provider(one)->quota_is_scarce))
		return;
	GThreadPool *pool =
	    g_thread_pool_new_full(prefetch_one, pf, prefetch_job_free, o->prefetch, FALSE, NULL);
	g_thread_pool_set_sort_function(pool, prefetch_job_cmp, NULL);
	g_mutex_lock(&pf->lock);
	pf->pool = pool;
	g_mutex_unlock(&pf->lock);
}

void prefetch_stop(struct prefetch *pf)
{
	g_mutex_lock(&pf->lock);
	GThreadPool *pool = g_steal_pointer(&pf->pool);
	g_mutex_unlock(&pf->lock);
	/* Queued prefetches are dropped; running ones end within the HTTP timeout, and
	 * queue nothing more (prefetch_push sees no pool). */
	if (pool)
		g_thread_pool_free(pool, TRUE, TRUE);
}

uint64_t prefetch_queued(struct prefetch *pf)
{
	return atomic_load(&pf->seq);
}

void prefetch_free(struct prefetch *pf)
{
	if (!pf)
		return;
	prefetch_stop(pf);
	g_mutex_clear(&pf->lock);
	g_free(pf);
}
