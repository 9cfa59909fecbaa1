/* fs: the libfuse low-level operations, one fs_<op> a request, each replying exactly
 * once on every path. A node's bytes come from its provider's rendering of one cached
 * resource.
 *
 * Kernel caching: there is no userspace open (FUSE_CAP_NO_OPEN_SUPPORT): open and
 * close of a file cost no request, and a warm read is served by the page cache alone.
 * Entries and attributes are valid for as long as the resource behind them stays
 * fresh. After that, an open by path looks the file up again, which fetches and
 * renders it: a new size or mtime (microseconds of when the bytes changed) drops the
 * kernel's pages (AUTO_INVAL_DATA). A change noticed through another file of the same
 * resource is sent as an inode invalidation by the notifier thread (never from inside
 * a request).
 *
 * Snapshots without an open: once a file's attributes expire, the kernel checks them
 * before each read through a file already open (a getattr with a file handle), and it
 * is told the size and mtime last told (STAT_AS_TOLD), so the pages it filled stay
 * and the reads through that open file see the bytes they started with, until a lookup
 * or stat by path (anyone's) shows the kernel a newer version: the page cache is the
 * inode's, not the open file's. A read that the page cache cannot answer renders the
 * resource as it is now (O_DIRECT, pages evicted under memory pressure): one read() is
 * always one version.
 * The files of .smarthomefs/ change with every request the mount makes: every lookup
 * renders them (their entries never stay valid, so every open by path looks up), and
 * bytes that differ from the last rendering become a FUSE node of their own (struct
 * rendering), which a file open since keeps: true snapshots, with exact sizes.
 *
 * Readahead across files: a read from a file's start has the notifier put the files
 * beside it, and those of the next directories, in the page cache (fs_fill_around),
 * from what the cache holds, so that cat, tar and backups read them without a request.
 *
 * Prefetch: when a listing is fetched anew, the resources its entries are made of are
 * fetched in parallel (at most options.prefetch at once), because ls -l, find and tar
 * stat every entry next; during a walk, the next directory's too, behind the current
 * one's (fs_prefetch_cousins). Never for a provider whose quota is scarce. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "provider.h"
#include "session.h"
#include "tree.h"

#define INTERNAL_DIR "." "smarthomefs"
#define STATUS_FILE "status.json"
#define METRICS_FILE "metrics"

struct fs {
	struct session *session;
	struct tree *tree;
	struct fuse_session *se;
	uid_t uid;
	gid_t gid;
	gint64 mounted_at;       /* unix µs */

	bool no_open;            /* the kernel sends no open/release for files */

	GMutex lock;             /* guards renderings, their counts, prefetched, filled */
	GHashTable *renderings;  /* FUSE node id -> struct rendering, the kernel's */
	GHashTable *latest;      /* internal file inode -> its latest struct rendering */
	uint64_t renderings_made; /* (lock) */
	GHashTable *prefetched;  /* directory inode -> struct listed: prefetched for */
	GHashTable *filled;      /* directory inode -> listing generation its files were put
				  * in the page cache for */
	GAsyncQueue *notices;    /* struct notice * for the notifier, or &stop_mark */
	GThread *notifier;       /* started in fs_init: after libfuse's fork */

	GMutex prefetch_lock;    /* guards pushing to prefetch against its end */
	GThreadPool *prefetch;   /* struct prefetch_job *; NULL when prefetch is off or ended */
	atomic_uint_fast64_t prefetch_seq; /* the order of queueing, for prefetch_job_cmp */
};

/* One rendering of an internal file (status.json, metrics), a FUSE node of its own: a
 * lookup that renders other bytes than the latest rendering makes a new one, so that a
 * file open since keeps its bytes and its size (an open file is a snapshot) while the
 * next open sees the new ones. Its node id is its address; st_ino stays the path's. It
 * lives until the kernel forgets it (nlookup back to 0) or the mount ends. */
struct rendering {
	struct node *node;
	GBytes *bytes;
	uint64_t hash;
	gint64 mtime;     /* unix µs: when the file's bytes last changed */
	uint64_t nlookup; /* (fs->lock) the lookups the kernel has not forgotten */
	uint64_t generation;
};

/* A directory whose listing was prefetched for: which generation of it, and when. */
struct listed {
	uint64_t gen;
	gint64 at; /* monotonic µs */
};

/* A directory listed this long after the one before it in its parent (a Tibber home's
 * devices/ after the previous home's) is taken for the next step of one walk. */
#define WALK_STEP_US (60 * G_USEC_PER_SEC)

/* How many directories after the one being read have their files put in the page
 * cache ahead of the reader (fs_fill_around). */
#define FILL_AHEAD 8

/* How much sooner than the cache the kernel stops trusting a file's attributes. */
#define KERNEL_MARGIN_S 0.05

/* What the notifier thread tells the kernel about a file. Invalidations go to the front
 * of the queue (fs_notice), fills to the back. */
struct notice {
	uint64_t ino;
	bool fill; /* put its bytes in the page cache; else drop its pages and attributes */
};

/* Tells the notifier thread to end. */
static struct notice stop_mark;

struct open_dir {
	GArray *entries; /* struct tree_dirent */
};

static void rendering_free(gpointer data)
{
	struct rendering *r = data;

	g_bytes_unref(r->bytes);
	g_free(r);
}

struct fs *fs_new(struct session *session)
{
	struct fs *fs = g_new0(struct fs, 1);

	fs->session = session;
	fs->tree = tree_new();
	fs->uid = getuid();
	fs->gid = getgid();
	fs->mounted_at = g_get_real_time();
	g_mutex_init(&fs->lock);
	g_mutex_init(&fs->prefetch_lock);
	fs->renderings = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
					       rendering_free);
	fs->latest = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	fs->prefetched = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	fs->filled = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	fs->notices = g_async_queue_new_full(g_free);
	return fs;
}

/* Ends the threads; called at unmount (destroy) and again, harmlessly, at fs_free. */
static void fs_stop_threads(struct fs *fs)
{
	g_mutex_lock(&fs->prefetch_lock);
	GThreadPool *pool = g_steal_pointer(&fs->prefetch);
	g_mutex_unlock(&fs->prefetch_lock);
	if (pool) {
		/* Queued prefetches are dropped; running ones end within the HTTP timeout,
		 * and queue nothing more (fs_prefetch_push sees no pool). */
		g_thread_pool_free(pool, TRUE, TRUE);
	}
	if (fs->notifier) {
		g_async_queue_push_front(fs->notices, &stop_mark);
		g_thread_join(fs->notifier);
		fs->notifier = NULL;
	}
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	fs_stop_threads(fs);
	g_async_queue_unref(fs->notices);
	g_hash_table_destroy(fs->filled);
	g_hash_table_destroy(fs->latest);
	g_hash_table_destroy(fs->renderings);
	g_hash_table_destroy(fs->prefetched);
	g_mutex_clear(&fs->lock);
	g_mutex_clear(&fs->prefetch_lock);
	tree_free(fs->tree);
	g_free(fs);
}

static void fs_fill_pages(struct fs *fs, uint64_t ino);

/* Drops the kernel's attributes and pages of the files it is told of, or fills their
 * pages. A notice for an inode must not be sent from inside a request on that inode
 * (the kernel may hold the inode's lock while it waits for our reply), hence this
 * thread; one thread, so that notices about one file keep their order. Idle, it sleeps
 * in g_async_queue_pop. */
static gpointer fs_notifier(gpointer data)
{
	struct fs *fs = data;

	for (;;) {
		struct notice *n = g_async_queue_pop(fs->notices);
		if (n == &stop_mark)
			return NULL;
		if (n->fill) {
			fs_fill_pages(fs, n->ino);
		} else {
			/* -ENOENT: the kernel has forgotten the inode, nothing to drop. */
			int r = fuse_lowlevel_notify_inval_inode(fs->se, n->ino, 0, 0);
			if (r < 0 && r != -ENOENT)
				log_debug("cannot invalidate inode %" G_GUINT64_FORMAT ": %s",
					  n->ino, g_strerror(-r));
		}
		g_free(n);
	}
}

static void fs_notice(struct fs *fs, uint64_t ino, bool fill)
{
	struct notice *n = g_new(struct notice, 1);

	n->ino = ino;
	n->fill = fill;
	/* Dropping old bytes goes before filling: a fill checks again what the kernel was
	 * told when it runs, so it may safely come after an invalidation queued later. */
	if (fill)
		g_async_queue_push(fs->notices, n);
	else
		g_async_queue_push_front(fs->notices, n);
}

/* Called when @node's bytes changed: the kernel's attributes and pages of it go. */
static void fs_forget_pages(struct fs *fs, struct node *node)
{
	if (fs->notifier && fs->se)
		fs_notice(fs, node->ino, false);
}

void fs_set_fuse_session(struct fs *fs, struct fuse_session *se)
{
	fs->se = se;
}

/* What a reader may see of an internal errno: the table in design.md. */
static int fs_errno(int r)
{
	switch (-r) {
	case ENOENT:
	case EACCES:
	case EAGAIN:
	case ETIMEDOUT:
	case EROFS:
	case ENOTDIR:
	case EISDIR:
		return -r;
	default:
		return EIO;
	}
}

/* 64-bit FNV-1a: a cheap fingerprint to notice that a file's bytes changed. */
static uint64_t content_hash(GBytes *data)
{
	gsize len = 0;
	const unsigned char *p = g_bytes_get_data(data, &len);
	uint64_t h = 0xcbf29ce484222325ULL;

	for (gsize i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

struct node_path {
	char **comp;
	struct provider_path pp;
};

static void node_path_init(struct fs *fs, struct node *node, struct node_path *np)
{
	size_t n = 0;
	np->comp = tree_raw_path(fs->tree, node, &n);
	np->pp.comp = (const char *const *)np->comp;
	np->pp.n = n;
}

static void node_path_clear(struct node_path *np)
{
	g_strfreev(np->comp);
}

/* The resource @node is made from (ref->path NULL: a static node). */
static int node_source(struct fs *fs, struct node *node, struct resource_ref *ref,
		       struct node_path *np)
{
	node_path_init(fs, node, np);
	return session_provider(fs->session)->source(&np->pp, ref);
}

static bool node_is_internal(struct node *node)
{
	return node->internal;
}

/* A prefetch job: warms the cache with one resource; with @comp, the resource is the
 * listing of directory @comp, and its entries' resources are queued next, at the same
 * priority. The pool runs lower @prio first, and among equals the older @seq. */
struct prefetch_job {
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

/* Queues @ref (taking over its strings, and @comp's) unless a resource of the same key
 * is queued already (@seen) or is the listing's own (@own). */
static void fs_prefetch_push(struct fs *fs, struct resource_ref *ref, int prio, char **comp,
			     size_t n, const char *own, GHashTable *seen)
{
	const char *key = ref->key ? ref->key : ref->path;

	if (!ref->path || g_strcmp0(key, own) == 0 || g_hash_table_contains(seen, key)) {
		resource_ref_clear(ref);
		g_strfreev(comp);
		return;
	}
	g_hash_table_add(seen, g_strdup(key));
	struct prefetch_job *job = g_new0(struct prefetch_job, 1);
	job->ref = *ref;
	job->prio = prio;
	job->seq = atomic_fetch_add(&fs->prefetch_seq, 1);
	job->comp = comp;
	job->n = n;
	*ref = (struct resource_ref){0};
	g_mutex_lock(&fs->prefetch_lock);
	/* No pool: the mount is ending, and a running job queues nothing more. */
	bool queued = fs->prefetch && g_thread_pool_push(fs->prefetch, job, NULL);
	g_mutex_unlock(&fs->prefetch_lock);
	if (!queued)
		prefetch_job_free(job);
}

/* Queues the resources that the files among @entries (of directory @comp, @n deep,
 * listed from resource @own), and the files of its static subdirectories, are made
 * of: what a stat of every entry (ls -l) or a walk (find, tar) reads next. Directory
 * listings are not queued, so listing homes/ does not fetch every home's devices. The
 * provider says which resources through source() and list(); nothing here knows a
 * cloud. */
static void fs_prefetch_entries(struct fs *fs, const char *const *comp, size_t n,
				GPtrArray *entries, const char *own, int prio)
{
	const struct provider *p = session_provider(fs->session);
	g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	const char **cc = g_new0(const char *, n + 2);

	for (size_t k = 0; k < n; k++)
		cc[k] = comp[k];
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = entries->pdata[i];
		struct provider_path cp = {cc, n + 1};
		struct resource_ref ref = {0};

		cc[n] = e->name;
		if (p->source(&cp, &ref) < 0) {
			resource_ref_clear(&ref);
			continue;
		}
		if (e->type == ENTRY_FILE) {
			fs_prefetch_push(fs, &ref, prio, NULL, 0, own, seen);
			continue;
		}
		if (!ref.path) {
			/* A static directory costs no call to list: look one level further. */
			g_autoptr(GPtrArray) files = provider_entries_new();
			if (p->list(&cp, NULL, files) == 0) {
				for (guint k = 0; k < files->len; k++) {
					struct provider_entry *f = files->pdata[k];
					struct provider_path gp = {cc, n + 2};
					struct resource_ref gref = {0};
					cc[n + 1] = f->name;
					if (f->type == ENTRY_FILE && p->source(&gp, &gref) == 0)
						fs_prefetch_push(fs, &gref, prio, NULL, 0, own, seen);
					else
						resource_ref_clear(&gref);
				}
			}
		}
		resource_ref_clear(&ref);
	}
	g_free(cc);
}

/* Queues the resources of the entries of directory @comp (@n deep) listed from @res. */
static void fs_prefetch_listed(struct fs *fs, const char *const *comp, size_t n,
			       const struct resource_ref *ref, const struct resource *res, int prio)
{
	g_autoptr(GPtrArray) entries = provider_entries_new();
	struct provider_path pp = {comp, n};
	json_t *body = resource_json(res);

	if (body && session_provider(fs->session)->list(&pp, body, entries) == 0)
		fs_prefetch_entries(fs, comp, n, entries, ref->key ? ref->key : ref->path, prio);
	json_decref(body);
}

/* Runs in the pool. A fresh copy is a cache hit; a cold one is fetched once, however
 * many readers join (single-flight). Errors are the reader's to see, later. */
static void fs_prefetch_one(gpointer data, gpointer user_data)
{
	struct prefetch_job *job = data;
	struct fs *fs = user_data;
	struct resource res = {0};

	if (session_get(fs->session, &job->ref, &res) == 0 && job->comp)
		fs_prefetch_listed(fs, (const char *const *)job->comp, job->n, &job->ref, &res,
				   job->prio);
	resource_clear(&res);
	prefetch_job_free(job);
}

/* Whether directory @dir was listed (for prefetch) less than WALK_STEP_US ago. */
static bool fs_listed_lately(struct fs *fs, struct node *dir)
{
	struct listed *l = NULL;
	gint64 at = 0;

	if (!dir)
		return false;
	g_mutex_lock(&fs->lock);
	l = g_hash_table_lookup(fs->prefetched, &dir->ino);
	if (l)
		at = l->at;
	g_mutex_unlock(&fs->lock);
	return l && g_get_monotonic_time() - at < WALK_STEP_US;
}

/* After @dir (at @np, made from resource @own) was listed for the first time in its
 * generation, and its entries are directories: a walk may be under way (find, tar,
 * ls -R), and it will list the directories of the same name beside @dir's parent next
 * (a Tibber home's devices/ beside the other homes'). Their listings are prefetched,
 * one resource each, so the walk finds each ready when it gets there. When the one
 * before @dir (in its grandparent's order) was listed lately, a walk is certain: the
 * entries of the one after are prefetched as well, after everything of @dir's own, so
 * that the prefetch threads never wait for the walk to get there. */
static void fs_prefetch_cousins(struct fs *fs, struct node *dir, const struct node_path *np,
				const char *own)
{
	const struct provider *p = session_provider(fs->session);
	struct node *parent = dir->parent;
	size_t n = np->pp.n;
	bool branches = false, walking = false;
	struct node *before = NULL, *next = NULL;
	char **next_comp = NULL;

	if (!parent || !parent->parent || n < 2)
		return;
	GArray *children = tree_list(fs->tree, dir);
	for (guint i = 0; i < children->len && !branches; i++)
		branches = g_array_index(children, struct tree_dirent, i).is_dir;
	tree_dirents_free(children);
	if (!branches)
		return;

	g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	GArray *uncles = tree_list(fs->tree, parent->parent);
	bool after_parent = false;
	for (guint i = 0; i < uncles->len; i++) {
		struct tree_dirent *d = &g_array_index(uncles, struct tree_dirent, i);
		struct node *uncle = tree_get(fs->tree, d->ino);
		struct resource_ref ref = {0};

		if (!d->is_dir || !uncle)
			continue;
		if (uncle == parent) {
			after_parent = true;
			walking = before && fs_listed_lately(fs, tree_child(fs->tree, before,
									      dir->name));
			continue;
		}
		if (after_parent && !next)
			next = uncle;
		if (!after_parent)
			before = uncle;
		char **comp = g_strdupv(np->comp);
		g_free(comp[n - 2]);
		comp[n - 2] = g_strdup(tree_node_raw(uncle));
		struct provider_path cp = {(const char *const *)comp, n};
		if (p->source(&cp, &ref) == 0)
			fs_prefetch_push(fs, &ref, PREFETCH_NOW, NULL, 0, own, seen);
		else
			resource_ref_clear(&ref);
		if (uncle == next)
			next_comp = g_steal_pointer(&comp);
		g_strfreev(comp);
	}
	tree_dirents_free(uncles);

	if (walking && next_comp) {
		struct provider_path cp = {(const char *const *)next_comp, n};
		struct resource_ref ref = {0};
		g_autoptr(GHashTable) once =
			g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
		if (p->source(&cp, &ref) == 0) {
			fs_prefetch_push(fs, &ref, PREFETCH_NEXT, g_steal_pointer(&next_comp), n,
					 own, once);
		} else {
			resource_ref_clear(&ref);
		}
	}
	g_strfreev(next_comp);
}

/* Prefetches for @dir's listing (resource @res) once per generation of it: a lookup
 * syncs a directory too, but only a listing says that all entries are about to be
 * read. */
static void fs_prefetch_listing(struct fs *fs, struct node *dir, const struct resource *res)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	bool todo;

	if (!fs->prefetch || !res->gen || node_is_internal(dir) ||
	    node_source(fs, dir, &ref, &np) < 0 || !ref.path)
		goto out;
	struct listed *l = g_new(struct listed, 1);
	l->gen = res->gen;
	l->at = g_get_monotonic_time();
	g_mutex_lock(&fs->lock);
	struct listed *was = g_hash_table_lookup(fs->prefetched, &dir->ino);
	todo = !was || was->gen != l->gen;
	g_hash_table_replace(fs->prefetched, g_memdup2(&dir->ino, sizeof(dir->ino)), l);
	g_mutex_unlock(&fs->lock);
	if (todo) {
		fs_prefetch_listed(fs, np.pp.comp, np.pp.n, &ref, res, PREFETCH_NOW);
		fs_prefetch_cousins(fs, dir, &np, ref.key ? ref.key : ref.path);
	}
out:
	resource_ref_clear(&ref);
	node_path_clear(&np);
}

/* Brings @dir's children up to date with its resource, which goes to @listing when it
 * is not NULL (gen 0: a static directory). */
static int fs_sync_dir(struct fs *fs, struct node *dir, struct resource *listing)
{
	const struct provider *p = session_provider(fs->session);
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	g_autoptr(GPtrArray) entries = provider_entries_new();
	uint64_t listed;
	int r;

	tree_lock(fs->tree);
	listed = dir->listed_gen;
	tree_unlock(fs->tree);

	if (node_is_internal(dir)) {
		if (!listed) {
			/* tree marks whatever lies below .smarthomefs internal. */
			tree_add_child(fs->tree, dir, STATUS_FILE, false);
			tree_add_child(fs->tree, dir, METRICS_FILE, false);
			tree_lock(fs->tree);
			dir->listed_gen = 1;
			tree_unlock(fs->tree);
		}
		return 0;
	}

	r = node_source(fs, dir, &ref, &np);
	if (r < 0)
		goto out;
	if (!ref.path) {
		if (listed)
			goto out;
		r = p->list(&np.pp, NULL, entries);
		if (r < 0)
			goto out;
		tree_set_children(fs->tree, dir, entries, 1);
		if (np.pp.n == 0) {
			tree_add_child(fs->tree, dir, INTERNAL_DIR, true);
		}
		goto out;
	}

	r = session_get(fs->session, &ref, &res);
	if (r < 0)
		goto out;
	if (res.gen != listed) {
		json_t *body = resource_json(&res);
		r = body ? p->list(&np.pp, body, entries) : -EIO;
		json_decref(body);
		if (r == 0) {
			tree_set_children(fs->tree, dir, entries, res.gen);
			tree_lock(fs->tree);
			dir->mtime = res.changed_at_us;
			tree_unlock(fs->tree);
		} else {
			log_warn("cannot list %s from %s: %s", np.pp.n ? np.comp[np.pp.n - 1] : "/",
				 ref.path, g_strerror(-r));
		}
	}
out:
	if (listing && r == 0)
		*listing = res;
	else
		resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* The resource file @node is made from, fetched through the cache. */
static int fs_node_resource(struct fs *fs, struct node *node, struct resource *res)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	int r = node_source(fs, node, &ref, &np);

	if (r == 0)
		r = ref.path ? session_get(fs->session, &ref, res) : -EIO;
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* Renders file @node: an internal file now, a provider's file from @res. */
static int fs_render_from(struct fs *fs, struct node *node, const struct resource *res,
			  GBytes **data)
{
	GString *out = g_string_new(NULL);
	int r = 0;

	if (node_is_internal(node)) {
		if (strcmp(node->name, STATUS_FILE) == 0)
			session_render_status(fs->session, out);
		else
			session_render_metrics(fs->session, out);
	} else {
		struct node_path np = {0};
		json_t *body = resource_json(res);

		node_path_init(fs, node, &np);
		r = body ? session_provider(fs->session)->render(&np.pp, body, out) : -EIO;
		json_decref(body);
		node_path_clear(&np);
	}
	if (r == 0)
		*data = g_string_free_to_bytes(out);
	else
		g_string_free(out, TRUE);
	return r;
}

static void fs_fill_time(struct stat *st, gint64 us)
{
	st->st_mtim.tv_sec = us / G_USEC_PER_SEC;
	st->st_mtim.tv_nsec = (long)(us % G_USEC_PER_SEC) * 1000;
	st->st_ctim = st->st_atim = st->st_mtim;
}

/* Renders internal file @node for a lookup: its rendering (a new one unless the bytes
 * are those of the latest), with one more lookup counted. */
static struct rendering *fs_render_internal(struct fs *fs, struct node *node)
{
	struct rendering *r = g_new0(struct rendering, 1);

	/* status.json and metrics always render. */
	fs_render_from(fs, node, NULL, &r->bytes);
	r->node = node;
	r->hash = content_hash(r->bytes);
	r->mtime = g_get_real_time();
	g_mutex_lock(&fs->lock);
	struct rendering *latest = g_hash_table_lookup(fs->latest, &node->ino);
	if (latest && latest->hash == r->hash) {
		rendering_free(r);
		r = latest;
	} else {
		r->generation = ++fs->renderings_made;
		g_hash_table_insert(fs->renderings, r, r);
		g_hash_table_replace(fs->latest, g_memdup2(&node->ino, sizeof(node->ino)), r);
	}
	r->nlookup++;
	g_mutex_unlock(&fs->lock);
	return r;
}

/* The rendering whose node id is @ino, or NULL. It stays valid for the request that
 * names it: the kernel sends no FORGET for a node while a request on it waits for our
 * reply (the caller holds the inode; eviction waits for locked pages first). */
static struct rendering *fs_rendering(struct fs *fs, fuse_ino_t ino)
{
	struct rendering *r;

	g_mutex_lock(&fs->lock);
	r = g_hash_table_lookup(fs->renderings, GSIZE_TO_POINTER((gsize)ino));
	g_mutex_unlock(&fs->lock);
	return r;
}

/* The kernel forgot @n lookups of @ino: a rendering it no longer holds goes. */
static void fs_forget_one(struct fs *fs, fuse_ino_t ino, uint64_t n)
{
	struct rendering *r;

	g_mutex_lock(&fs->lock);
	r = g_hash_table_lookup(fs->renderings, GSIZE_TO_POINTER((gsize)ino));
	if (r && (r->nlookup -= MIN(n, r->nlookup)) == 0) {
		if (g_hash_table_lookup(fs->latest, &r->node->ino) == r)
			g_hash_table_remove(fs->latest, &r->node->ino);
		g_hash_table_remove(fs->renderings, r);
	}
	g_mutex_unlock(&fs->lock);
}

/* Fills @st for a file of inode @ino, @size bytes, changed at @mtime (unix µs). */
static void fs_file_stat(struct fs *fs, uint64_t ino, size_t size, gint64 mtime,
			 struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = (st->st_size + 511) / 512;
	fs_fill_time(st, mtime);
}

static void fs_rendering_stat(struct fs *fs, const struct rendering *r, struct stat *st)
{
	fs_file_stat(fs, r->node->ino, g_bytes_get_size(r->bytes), r->mtime, st);
}

/* Records what @node's bytes are now; true when they differ from what was seen before
 * (and then the kernel's copy is on its way out). */
static bool fs_note_content(struct fs *fs, struct node *node, GBytes *data, uint64_t gen,
			    gint64 changed_at)
{
	uint64_t hash = content_hash(data);
	bool changed;

	tree_lock(fs->tree);
	if (node->is_dir || (gen && node->content_gen > gen)) {
		/* A listing made it a directory meanwhile (whose fields share the memo's
		 * place in the node), or another thread already noted a newer rendering:
		 * keep its size and mtime. */
		tree_unlock(fs->tree);
		return false;
	}
	changed = node->content_gen && node->content_hash != hash;
	if (!node->content_gen || changed)
		node->mtime = changed_at;
	node->content_gen = gen ? gen : 1;
	node->content_hash = hash;
	node->size = g_bytes_get_size(data);
	tree_unlock(fs->tree);
	if (changed)
		fs_forget_pages(fs, node);
	return changed;
}

/* How long the kernel may keep a directory's entry and attributes. */
static double fs_dir_timeout(struct fs *fs, struct node *node)
{
	if (node_is_internal(node))
		return 0;
	const struct options *o = session_options(fs->session);
	int ttl = o->ttl >= 0 ? o->ttl : session_provider(fs->session)->default_ttl;
	return ttl;
}

/* What a stat reports of a file. */
enum stat_how {
	/* A lookup, a listing, a stat or fstat: the file as it is now (its resource
	 * fetched when stale, rendered when it changed). */
	STAT_NOW,
	/* The kernel checking a file open since its last lookup, before a read (a
	 * getattr with a file handle): what it was told then, so that its pages stay and
	 * every read through that open file sees the same bytes. */
	STAT_AS_TOLD,
};

/* Fills @st for @node, a directory or a provider's file (internal files are renderings).
 * *timeout: how long the kernel may keep it (a file: while its resource is fresh; one
 * checked as told: not at all). */
static int fs_stat_node(struct fs *fs, struct node *node, enum stat_how how, struct stat *st,
			double *timeout)
{
	bool told;

	*timeout = 0;
	if (node->is_dir) {
		memset(st, 0, sizeof(*st));
		st->st_ino = node->ino;
		st->st_uid = fs->uid;
		st->st_gid = fs->gid;
		st->st_blksize = 4096;
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		tree_lock(fs->tree);
		fs_fill_time(st, node->mtime ? node->mtime : fs->mounted_at);
		tree_unlock(fs->tree);
		*timeout = fs_dir_timeout(fs, node);
		return 0;
	}

	tree_lock(fs->tree);
	told = how == STAT_AS_TOLD && !node->is_dir && node->content_gen;
	tree_unlock(fs->tree);
	if (!told) {
		struct resource res = {0};
		bool fresh_memo;
		int r = fs_node_resource(fs, node, &res);
		if (r < 0)
			return r;
		tree_lock(fs->tree);
		fresh_memo = node->content_gen == res.gen;
		tree_unlock(fs->tree);
		if (!fresh_memo) {
			GBytes *data = NULL;
			r = fs_render_from(fs, node, &res, &data);
			if (r == 0) {
				fs_note_content(fs, node, data, res.gen, res.changed_at_us);
				g_bytes_unref(data);
			}
		}
		/* The kernel counts from when it gets the reply, in whole jiffies: let it ask
		 * again a little before the cache would fetch anew. */
		*timeout = MAX(res.fresh_for_s - KERNEL_MARGIN_S, 0);
		resource_clear(&res);
		if (r < 0)
			return r;
	}
	tree_lock(fs->tree);
	size_t size = node->is_dir ? 0 : node->size;
	gint64 mtime = node->mtime;
	tree_unlock(fs->tree);
	fs_file_stat(fs, node->ino, size, mtime, st);
	return 0;
}

static int fs_fill_entry(struct fs *fs, struct node *node, struct fuse_entry_param *e)
{
	double timeout;

	memset(e, 0, sizeof(*e));
	int r = fs_stat_node(fs, node, STAT_NOW, &e->attr, &timeout);
	if (r < 0)
		return r;
	e->ino = node->ino;
	e->generation = 1;
	e->attr_timeout = timeout;
	e->entry_timeout = timeout;
	return 0;
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;
	const struct options *o = session_options(fs->session);

	/* Page-cache data is dropped when a getattr shows a new mtime or size. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* No open or release round trip per file: fs_open answers ENOSYS once, and the
	 * kernel stops asking and keeps the page cache (see the top of this file). */
	if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		fs->no_open = true;
	}
	/* Always readdirplus, not the kernel's guess (READDIRPLUS_AUTO): whoever lists a
	 * directory here stats its entries next (ls -l, find, tar), and one listing then
	 * answers all of it. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;

	/* Threads start here, in the daemon after libfuse's fork. */
	fs->notifier = g_thread_new("inval", fs_notifier, fs);
	if (o->prefetch > 0 && !session_provider(fs->session)->quota_is_scarce) {
		fs->prefetch = g_thread_pool_new_full(fs_prefetch_one, fs, prefetch_job_free,
						      o->prefetch, FALSE, NULL);
		g_thread_pool_set_sort_function(fs->prefetch, prefetch_job_cmp, NULL);
	}
}

static void fs_destroy(void *userdata)
{
	fs_stop_threads(userdata);
}

/* The directory @ino with its children brought up to date, or NULL after replying
 * the error to @req. @listing: as for fs_sync_dir. */
static struct node *fs_synced_dir(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
				  struct resource *listing)
{
	struct node *dir = tree_get(fs->tree, ino);
	int r;

	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return NULL;
	}
	r = fs_sync_dir(fs, dir, listing);
	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return NULL;
	}
	return dir;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *dir = fs_synced_dir(req, fs, parent, NULL);
	struct fuse_entry_param e;
	int r;

	if (!dir)
		return;
	struct node *node = tree_child(fs->tree, dir, name);
	bool gone = true;
	if (node) {
		tree_lock(fs->tree);
		gone = node->gone;
		tree_unlock(fs->tree);
	}
	if (gone) {
		/* A negative entry the kernel may keep as long as a listing is fresh. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs_dir_timeout(fs, dir);
		fuse_reply_entry(req, &e);
		return;
	}
	if (node_is_internal(node) && !node->is_dir) {
		/* Never kept: every open by path looks it up and gets the bytes of now. */
		struct rendering *rd = fs_render_internal(fs, node);
		memset(&e, 0, sizeof(e));
		e.ino = (fuse_ino_t)(uintptr_t)rd;
		/* An address can come back for a later rendering: the generation tells
		 * the kernel it is another node. */
		e.generation = rd->generation;
		fs_rendering_stat(fs, rd, &e.attr);
		if (fuse_reply_entry(req, &e) != 0)
			fs_forget_one(fs, e.ino, 1);
		return;
	}
	r = fs_fill_entry(fs, node, &e);
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_entry(req, &e);
}

/* Tree nodes live until unmount, so an inode number never changes its meaning; only
 * renderings of internal files go when forgotten. */
static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_forget_one(fuse_req_userdata(req), ino, nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		fs_forget_one(fuse_req_userdata(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : fs_rendering(fs, ino);
	struct stat st;
	double timeout;
	int r;

	if (rd) {
		fs_rendering_stat(fs, rd, &st);
		fuse_reply_attr(req, &st, 0);
		return;
	}
	if (!node) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* With @fi: the kernel checks a file open since its last lookup before a read
	 * (stat and fstat come without). */
	r = fs_stat_node(fs, node, fi ? STAT_AS_TOLD : STAT_NOW, &st, &timeout);
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_attr(req, &st, timeout);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct resource listing = {0};
	struct node *dir = fs_synced_dir(req, fs, ino, &listing);

	if (!dir)
		return;
	fs_prefetch_listing(fs, dir, &listing);
	resource_clear(&listing);
	struct open_dir *od = g_new0(struct open_dir, 1);
	od->entries = tree_list(fs->tree, dir);
	fi->fh = (uint64_t)(uintptr_t)od;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) != 0) {
		tree_dirents_free(od->entries);
		g_free(od);
	}
}

/* Fills one readdir(plus) answer from the snapshot taken at opendir. Offsets: 1 ".",
 * 2 "..", 3.. the entries. */
static void fs_readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			      struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fuse_req_userdata(req);
	struct open_dir *od = (struct open_dir *)(uintptr_t)fi->fh;
	struct node *dir = tree_get(fs->tree, ino);
	char *buf = g_malloc(size);
	size_t used = 0;
	off_t total = (off_t)od->entries->len + 2;

	for (off_t i = off; i < total; i++) {
		struct fuse_entry_param e;
		const char *name;
		size_t need;

		memset(&e, 0, sizeof(e));
		if (i < 2) {
			name = i == 0 ? "." : "..";
			e.attr.st_ino = i == 0 || !dir->parent ? dir->ino : dir->parent->ino;
			e.attr.st_mode = S_IFDIR;
		} else {
			struct tree_dirent *d = &g_array_index(od->entries, struct tree_dirent, i - 2);
			name = d->name;
			e.attr.st_ino = d->ino;
			e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
			struct node *child = plus ? tree_get(fs->tree, d->ino) : NULL;
			/* ino 0 tells the kernel to look the entry up itself when its
			 * attributes cannot be had now, or, for an internal file, should be
			 * had at the open. */
			if (child && !d->is_dir && node_is_internal(child))
				child = NULL;
			if (child && fs_fill_entry(fs, child, &e) < 0) {
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->ino;
				e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
			}
		}
		if (plus)
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
		else
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
						 i + 1);
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	g_free(buf);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	fs_readdir_common(req, ino, size, off, fi, false);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	fs_readdir_common(req, ino, size, off, fi, true);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct open_dir *od = (struct open_dir *)(uintptr_t)fi->fh;

	tree_dirents_free(od->entries);
	g_free(od);
	fuse_reply_err(req, 0);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);

	if (!node && !fs_rendering(fs, ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (node && node->is_dir) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* A kernel that must open: no page cache kept across opens, so a change is seen
	 * at the next open (a rendering never changes). */
	fi->keep_cache = !node;
	fuse_reply_open(req, fi);
}

/* The bytes of provider file @node as they are now, rendered from its resource (whose
 * size and mtime are noted, so a change is seen). */
static int fs_file_bytes(struct fs *fs, struct node *node, GBytes **data)
{
	struct resource res = {0};
	int r;

	if (node_is_internal(node))
		return -EIO; /* internal files are read through their renderings */
	r = fs_node_resource(fs, node, &res);
	if (r == 0)
		r = fs_render_from(fs, node, &res, data);
	if (r == 0)
		fs_note_content(fs, node, *data, res.gen, res.changed_at_us);
	resource_clear(&res);
	return r;
}

/* Puts file @ino's bytes in the kernel's page cache, when the cache holds the very
 * generation the kernel was last told of (its size and mtime): a read then needs no
 * request. Never fetches. */
static void fs_fill_pages(struct fs *fs, uint64_t ino)
{
	struct node *node = tree_get(fs->tree, ino);
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	g_autoptr(GBytes) data = NULL;
	bool told = false;

	if (!node || node_is_internal(node) || node_source(fs, node, &ref, &np) < 0 ||
	    !ref.path || session_peek(fs->session, &ref, &res) < 0)
		goto out;
	tree_lock(fs->tree);
	told = !node->is_dir && node->content_gen == res.gen;
	tree_unlock(fs->tree);
	if (told && fs_render_from(fs, node, &res, &data) == 0) {
		uint64_t hash = content_hash(data);
		tree_lock(fs->tree);
		told = !node->is_dir && node->content_gen == res.gen && node->content_hash == hash;
		tree_unlock(fs->tree);
		if (told) {
			gsize len = 0;
			struct fuse_bufvec buf = FUSE_BUFVEC_INIT(0);
			buf.buf[0].mem = (void *)g_bytes_get_data(data, &len);
			buf.buf[0].size = len;
			/* -ENOENT: the kernel has forgotten the inode. */
			int r = len ? fuse_lowlevel_notify_store(fs->se, ino, 0, &buf, 0) : 0;
			if (r < 0 && r != -ENOENT)
				log_debug("cannot fill the pages of inode %" G_GUINT64_FORMAT ": %s",
					  ino, g_strerror(-r));
			/* A newer version noted meanwhile (its invalidation may have run
			 * before this store): drop what was just stored. */
			tree_lock(fs->tree);
			told = !node->is_dir && node->content_gen == res.gen;
			tree_unlock(fs->tree);
			if (r == 0 && !told)
				fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
		}
	}
out:
	resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
}

/* Marks @dir's files as put in the page cache for its current listing; false when they
 * were already (or @dir is no listed directory). */
static bool fs_fill_mark(struct fs *fs, struct node *dir)
{
	uint64_t gen;
	bool todo;

	if (node_is_internal(dir))
		return false;
	tree_lock(fs->tree);
	gen = dir->is_dir ? dir->listed_gen : 0;
	tree_unlock(fs->tree);
	if (!gen)
		return false;
	g_mutex_lock(&fs->lock);
	todo = GPOINTER_TO_SIZE(g_hash_table_lookup(fs->filled, &dir->ino)) != (gsize)gen;
	if (todo)
		g_hash_table_replace(fs->filled, g_memdup2(&dir->ino, sizeof(dir->ino)),
				     GSIZE_TO_POINTER((gsize)gen));
	g_mutex_unlock(&fs->lock);
	return todo;
}

/* Has the notifier put the files of @dir in the page cache, but for @except, and those
 * of its subdirectories @depth levels down (a device's values/ beside its device.json);
 * once per listing generation of each directory. */
static void fs_fill_dir(struct fs *fs, struct node *dir, uint64_t except, int depth)
{
	if (!fs_fill_mark(fs, dir))
		return;
	GArray *entries = tree_list(fs->tree, dir);
	for (guint i = 0; i < entries->len; i++) {
		struct tree_dirent *d = &g_array_index(entries, struct tree_dirent, i);
		struct node *sub = d->is_dir && depth > 0 ? tree_get(fs->tree, d->ino) : NULL;
		if (!d->is_dir && d->ino != except)
			fs_notice(fs, d->ino, true);
		else if (sub)
			fs_fill_dir(fs, sub, 0, depth - 1);
	}
	tree_dirents_free(entries);
}

/* After file @node was read from its start (its pages were not in the kernel's cache):
 * whoever reads a file of a directory reads the others next (cat of a whole directory,
 * find -exec cat, tar, backups), and then those of the next directories. So the files
 * beside it, and those of the FILL_AHEAD directories after its own, are put in the page
 * cache from what the cache holds: a readahead across files. Only files the kernel has
 * been told of (looked up or listed) are filled, and nothing is fetched for it. */
static void fs_fill_around(struct fs *fs, struct node *node)
{
	struct node *next[FILL_AHEAD];
	struct node *dir = node->parent;

	if (!dir || !fs->notifier || !fs->se || node_is_internal(node))
		return;
	fs_fill_dir(fs, dir, node->ino, 1);
	size_t n = dir->parent ? tree_next_siblings(fs->tree, dir, next, FILL_AHEAD) : 0;
	for (size_t i = 0; i < n; i++)
		fs_fill_dir(fs, next[i], 0, 1); /* nothing for a file */
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : fs_rendering(fs, ino);
	g_autoptr(GBytes) bytes = rd ? g_bytes_ref(rd->bytes) : NULL;
	gsize len = 0;
	int r = rd ? 0 : node ? fs_file_bytes(fs, node, &bytes) : -ENOENT;

	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return;
	}
	const char *data = g_bytes_get_data(bytes, &len);
	if (off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	fuse_reply_buf(req, data + off, MIN(size, len - (size_t)off));
	if (off == 0 && node)
		fs_fill_around(fs, node);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;

	memset(&st, 0, sizeof(st));
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.read = fs_read,
	.statfs = fs_statfs,
};

const struct fuse_lowlevel_ops *fs_operations(void)
{
	return &fs_ops;
}
