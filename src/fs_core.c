/* fs_core: sync, stat and render over the tree and the session. See the header. */
#include "fs_core.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "accounts.h"
#include "fnv.h"
#include "internal_files.h"
#include "log.h"
#include "stamps.h"

/* How much sooner than the cache the kernel stops trusting a file's attributes. */
#define KERNEL_MARGIN_S 0.05

/* How soon after a change the mtimes are saved for the next mount: a walk of a new mount
 * costs one write, and a crash loses at most this much. */
#define STAMPS_SAVE_DELAY_US (10 * G_USEC_PER_SEC)

/* The latest renderings kept, so that the chunks of one read (128 KiB each) of a large
 * file are slices of one rendering, not a parse and a rendering each: the files being
 * read now, at most this many and options.render_memory_mib bytes (the most recent one
 * whatever its size). The count bounds the search of the list, the bytes the memory. */
#define RENDERED_MAX 64

/* One file's bytes in one generation of its resource. */
struct rendered {
	uint64_t ino;
	uint64_t gen;
	GBytes *bytes;
};

struct fs_core {
	struct accounts *accounts;
	struct tree *tree;
	uid_t uid;
	gid_t gid;
	gint64 mounted_at_wall_us; /* the root, never remembered, shows this mtime */
	struct stamps *stamps;	   /* the mtimes shown, for the next mount */
	fs_core_changed_fn changed;
	void *changed_data;
	fs_core_gone_fn gone;
	void *gone_data;
	GMutex rendered_lock;	   /* guards rendered and rendered_bytes */
	GQueue rendered;	   /* struct rendered *, the most recently used first */
	size_t rendered_bytes;	   /* the sum of their sizes */
	size_t rendered_max_bytes; /* options.render_memory_mib, set once */
};

static void rendered_free(gpointer data)
{
	struct rendered *x = data;

	g_bytes_unref(x->bytes);
	g_free(x);
}

/* File @ino's rendering of generation @gen, if kept (a new reference), or NULL. */
static GBytes *rendered_take(struct fs_core *c, uint64_t ino, uint64_t gen)
{
	GBytes *bytes = NULL;

	g_mutex_lock(&c->rendered_lock);
	for (GList *l = c->rendered.head; l; l = l->next) {
		struct rendered *x = l->data;
		if (x->ino != ino || x->gen != gen)
			continue;
		bytes = g_bytes_ref(x->bytes);
		g_queue_unlink(&c->rendered, l);
		g_queue_push_head_link(&c->rendered, l);
		break;
	}
	g_mutex_unlock(&c->rendered_lock);
	return bytes;
}

/* Keeps @bytes as file @ino's rendering of generation @gen, replacing an older one of
 * the file's; the least recently used go beyond the bounds. */
static void rendered_put(struct fs_core *c, uint64_t ino, uint64_t gen, GBytes *bytes)
{
	struct rendered *x = g_new(struct rendered, 1);

	x->ino = ino;
	x->gen = gen;
	x->bytes = g_bytes_ref(bytes);
	g_mutex_lock(&c->rendered_lock);
	for (GList *l = c->rendered.head; l; l = l->next) {
		struct rendered *old = l->data;
		if (old->ino != ino)
			continue;
		c->rendered_bytes -= g_bytes_get_size(old->bytes);
		rendered_free(old);
		g_queue_delete_link(&c->rendered, l);
		break;
	}
	g_queue_push_head(&c->rendered, x);
	c->rendered_bytes += g_bytes_get_size(bytes);
	while (c->rendered.length > 1 &&
	       (c->rendered.length > RENDERED_MAX || c->rendered_bytes > c->rendered_max_bytes)) {
		struct rendered *last = g_queue_pop_tail(&c->rendered);
		c->rendered_bytes -= g_bytes_get_size(last->bytes);
		rendered_free(last);
	}
	g_mutex_unlock(&c->rendered_lock);
}

/* The fingerprint of a listing (what dir_settle saves for a directory): each entry's
 * kind and raw name, in order. */
static uint64_t listing_hash(uint64_t hash, bool is_dir, const char *raw)
{
	const char type = is_dir ? 'd' : 'f';

	hash = fnv1a_64(hash, &type, 1);
	return fnv1a_64(hash, raw, strlen(raw) + 1);
}

/* Where collect_stamp puts the stamps. */
struct stamp_sink {
	struct tree *tree;
	struct stamp *out;
	size_t max, n;
};

/* tree_for_each: puts @n's stamp, if it has one, in the struct stamp_sink @data. (tree
 * lock) */
static void collect_stamp(struct node *n, void *data)
{
	struct stamp_sink *sink = data;
	struct stamp s = {n->ino, 0, 0, n->mtime_wall_us};

	if (n->internal || !s.mtime_wall_us || sink->n == sink->max)
		return;
	if (!n->is_dir) {
		if (!n->memo.gen)
			return;
		s.hash = n->memo.hash;
		s.size = n->memo.size;
	} else {
		if (!n->listed_gen)
			return;
		s.hash = FNV1A_64_OFFSET;
		for (uint32_t i = 0; i < n->n_order; i++) {
			const struct node *k = tree_order_at(sink->tree, n, i);
			if (k->gone || k->internal)
				continue;
			s.hash = listing_hash(s.hash, k->is_dir, tree_node_raw(k));
			s.size++;
		}
	}
	sink->out[sink->n++] = s;
}

/* stamps' collect: the stamps the nodes hold (fs_core's memo and mtime). */
static size_t collect_stamps(void *data, struct stamp *out, size_t max)
{
	struct fs_core *c = data;
	struct stamp_sink sink = {c->tree, out, max, 0};

	if (!out)
		return tree_count(c->tree);
	tree_for_each(c->tree, collect_stamp, &sink);
	return sink.n;
}

/* The accounts' gauges, for status.json and metrics. */
static void core_gauges(void *data, struct accounts_gauges *ret)
{
	struct fs_core *c = data;

	ret->nodes = tree_count(c->tree);
	ret->bytes = tree_memory_bytes(c->tree);
	ret->stamps = stamps_saved(c->stamps);
}

struct fs_core *fs_core_new(struct accounts *accounts, fs_core_changed_fn changed, void *data)
{
	struct fs_core *c = g_new0(struct fs_core, 1);

	c->accounts = accounts;
	c->tree = tree_new();
	c->uid = getuid();
	c->gid = getgid();
	c->mounted_at_wall_us = g_get_real_time();
	g_autofree char *cache_dir = accounts_cache_dir(accounts);
	c->stamps = stamps_open(cache_dir, STAMPS_SAVE_DELAY_US, collect_stamps, c);
	accounts_set_gauges(accounts, core_gauges, c);
	c->changed = changed;
	c->changed_data = data;
	g_mutex_init(&c->rendered_lock);
	g_queue_init(&c->rendered);
	c->rendered_max_bytes = (size_t)MAX(accounts_options(accounts)->render_memory_mib, 0) << 20;
	return c;
}

void fs_core_set_gone(struct fs_core *c, fs_core_gone_fn gone, void *data)
{
	c->gone = gone;
	c->gone_data = data;
}

/* Tells the gone hook of @node and what the kernel holds below it. */
static void tell_gone(struct fs_core *c, struct node *node)
{
	if (!c->gone)
		return;
	GArray *held = g_array_new(FALSE, FALSE, sizeof(struct tree_held));
	tree_held_below(c->tree, node, held);
	for (guint i = 0; i < held->len; i++) {
		struct tree_held *h = &g_array_index(held, struct tree_held, i);
		c->gone(c->gone_data, h->parent, h->ino, h->name);
		g_free(h->name);
	}
	g_array_free(held, TRUE);
}

void fs_core_free(struct fs_core *c)
{
	if (!c)
		return;
	stamps_free(c->stamps);
	g_queue_clear_full(&c->rendered, rendered_free);
	g_mutex_clear(&c->rendered_lock);
	tree_free(c->tree);
	g_free(c);
}

void fs_core_save(struct fs_core *c)
{
	stamps_flush(c->stamps);
}

struct tree *fs_core_tree(struct fs_core *c)
{
	return c->tree;
}

struct accounts *fs_core_accounts(struct fs_core *c)
{
	return c->accounts;
}

static uint64_t bytes_hash(GBytes *data)
{
	gsize len = 0;
	const void *p = g_bytes_get_data(data, &len);

	return fnv1a_64(FNV1A_64_OFFSET, p, len);
}

void node_path_init(struct fs_core *c, struct node *node, struct node_path *np)
{
	size_t n = 0;

	np->comp = tree_raw_path(c->tree, node, &n);
	np->pp.comp = (const char *const *)np->comp;
	np->pp.n = n;
	np->session = accounts_route(c->accounts, &np->pp);
	if (np->session) {
		np->pp.now_s = session_now_s(np->session);
		np->pp.history_from_s = session_history_from_s(np->session, np->pp.now_s);
	}
}

void node_path_clear(struct node_path *np)
{
	g_strfreev(np->comp);
}

int fs_core_source(struct fs_core *c, struct node *node, struct resource_ref *ref,
		   struct node_path *np)
{
	node_path_init(c, node, np);
	if (!np->session)
		return accounts_owns(c->accounts, &np->pp) ? 0 : -ENOENT;
	return session_source(np->session, &np->pp, ref, false);
}

/* When @node, never remembered, was first seen: when its directory's listing showed it
 * (the parent's mtime), or the mount's time for the root. What an unlisted directory's
 * stat shows, and the oldest time a file first seen can have. (tree lock) */
static gint64 first_seen_wall_us(struct fs_core *c, struct node *node)
{
	struct node *parent = tree_parent(c->tree, node);

	if (parent && parent->mtime_wall_us)
		return parent->mtime_wall_us;
	return c->mounted_at_wall_us;
}

/* Sets @dir's mtime after a listing of @entries from a resource whose bytes changed at
 * @changed_at_wall_us: it changes only when the names do (@changed: the tree says they
 * did; a resource can change its bytes but not its names). A directory never settled in
 * this mount keeps at its first listing the time its stat showed until then. */
static void dir_settle(struct fs_core *c, struct node *dir, GPtrArray *entries, bool changed,
		       gint64 changed_at_wall_us)
{
	uint64_t hash = FNV1A_64_OFFSET;

	for (guint i = 0; i < entries->len; i++) {
		const struct provider_entry *e = g_ptr_array_index(entries, i);
		if (!e || !e->name)
			continue; /* as tree_set_children */
		hash = listing_hash(hash, e->type == ENTRY_DIR, e->name);
	}
	tree_lock(c->tree);
	if (!dir->mtime_wall_us) {
		gint64 first_seen = first_seen_wall_us(c, dir);
		dir->mtime_wall_us =
		    stamps_settle(c->stamps, dir->ino, hash, entries->len,
				  MAX(changed_at_wall_us, first_seen), first_seen);
	} else if (changed) {
		dir->mtime_wall_us =
		    stamps_change(c->stamps, dir->mtime_wall_us, changed_at_wall_us);
	}
	tree_unlock(c->tree);
}

/* The resource of @ref through @s's cache; without @may_fetch, -EINPROGRESS when that
 * needs a fetch. */
static int core_get(struct session *s, const struct resource_ref *ref, struct resource *res,
		    bool may_fetch)
{
	return may_fetch ? session_get(s, ref, res) : session_get_cached(s, ref, res);
}

/* Drops the cached copy of @ref (memory and disk) when it is @node's own: a resource
 * whose API path names @node's id. Others (a home's zoneStates, made into the state.json
 * of every zone) are shared with the nodes still listed. */
static void forget_if_own(struct session *s, struct node *node, struct resource_ref *ref)
{
	g_autofree char *segment = provider_path_segment(tree_node_raw(node));
	g_autofree char *inner = segment ? g_strconcat("/", segment, "/", NULL) : NULL;
	g_autofree char *last = segment ? g_strconcat("/", segment, NULL) : NULL;

	/* A period of history (immutable) is always its file's own. */
	if (ref->path && (ref->immutable_at_s || (segment && (strstr(ref->path, inner) ||
							      g_str_has_suffix(ref->path, last)))))
		session_forget(s, ref);
	resource_ref_clear(ref);
}

/* @node left its directory's listing: the copies of the resources that were its own go
 * (its disk copy must not outlive it). Looks at its own resource, and for a directory at
 * those of its static children's files (a device's device.json), as prefetch does. */
static void forget_gone(struct fs_core *c, struct node *node)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	int r = fs_core_source(c, node, &ref, &np);
	const struct provider *p = np.session ? session_provider(np.session) : NULL;

	if (!p) {
		/* Nobody serves it (anymore): nothing of its own is cached. */
	} else if (r == 0 && ref.path) {
		forget_if_own(np.session, node, &ref);
	} else if (!ref.path && tree_node_is_dir(c->tree, node)) {
		g_autoptr(GPtrArray) files = provider_entries_new();
		const char **cc = g_new0(const char *, np.pp.n + 2);
		memcpy(cc, np.pp.comp, np.pp.n * sizeof(*cc));
		if (p->list(&np.pp, NULL, files) == 0) {
			for (guint k = 0; k < files->len; k++) {
				struct provider_entry *f = files->pdata[k];
				struct provider_path fp = {.comp = cc, .n = np.pp.n + 1};
				struct resource_ref fref = {0};
				cc[np.pp.n] = f->name;
				if (p->source(&fp, &fref) == 0)
					forget_if_own(np.session, node, &fref);
				else
					resource_ref_clear(&fref);
			}
		}
		g_free(cc);
	}
	resource_ref_clear(&ref);
	node_path_clear(&np);
}

/* What a listing made from @res for @ref is of: the body's generation, and the epoch the
 * provider says it also depends on (history's day). Never 0 nor 1 (a static listing). */
static uint64_t listing_gen(const struct resource *res, const struct resource_ref *ref)
{
	uint64_t gen = res->gen;

	if (!ref->list_epoch)
		return gen;
	gen = fnv1a_64(FNV1A_64_OFFSET, &gen, sizeof(gen));
	gen = fnv1a_64(gen, &ref->list_epoch, sizeof(ref->list_epoch));
	return gen > 1 ? gen : gen + 2;
}

/* Puts @entries, listed from @res in listing generation @gen, as @dir's children (listed
 * before in generation @listed, 0: never): the children gone have their copies dropped,
 * and the directory's mtime follows its names (@changed_at_us when they changed). */
static void apply_listing(struct fs_core *c, struct node *dir, const struct node_path *np,
			  GPtrArray *entries, const struct resource *res, uint64_t gen,
			  gint64 changed_at_us, uint64_t listed)
{
	const struct options *o =
	    np->session ? session_options(np->session) : accounts_options(c->accounts);
	guint max = (guint)o->max_entries;
	g_autoptr(GPtrArray) gone = g_ptr_array_new();

	if (entries->len > max) {
		/* A bound on what one listing may cost in names and nodes. */
		log_warn("%s lists %u entries; showing the first %u (max_entries)",
			 np->pp.n ? np->comp[np->pp.n - 1] : "/", entries->len, max);
		g_ptr_array_set_size(entries, max);
	}
	bool changed = tree_set_children_gone(c->tree, dir, entries, gen, gone);
	for (guint i = 0; i < gone->len; i++) {
		forget_gone(c, gone->pdata[i]);
		tell_gone(c, gone->pdata[i]);
	}
	dir_settle(c, dir, entries, changed, changed_at_us);
	if (np->pp.n == 0 && !listed)
		internal_files_add(c->tree);
}

/* Where the quota is scarce (tado), a history directory shows only the files the cache
 * holds (the background fill, history_fill.h, brings them in): a walk of it can read
 * every file it lists without a call. Drops the others from @entries (of directory @np)
 * and returns @gen made to change with the names kept. */
static uint64_t keep_held(const struct node_path *np, GPtrArray *entries, uint64_t gen)
{
	const char **cc = g_new0(const char *, np->pp.n + 2);
	guint kept = 0;

	memcpy(cc, np->pp.comp, np->pp.n * sizeof(*cc));
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = entries->pdata[i];
		struct provider_path fp = np->pp;
		struct resource_ref ref = {0};
		bool held = true;

		fp.comp = cc;
		fp.n = np->pp.n + 1;
		cc[np->pp.n] = e->name;
		if (e->type == ENTRY_FILE) {
			held = session_source(np->session, &fp, &ref, true) == 0 &&
			       (!(ref.paged || ref.immutable_at_s) ||
				session_holds(np->session, &ref));
			resource_ref_clear(&ref);
		}
		if (!held) {
			provider_entry_free(e);
			continue;
		}
		entries->pdata[kept++] = e;
		gen = fnv1a_64(gen, e->name, strlen(e->name) + 1);
	}
	entries->len = kept;
	g_free(cc);
	return gen > 1 ? gen : gen + 2;
}

/* Brings @dir's children up to date with its resource, which goes to @listing when it
 * is not NULL (gen 0: a static directory). The root and its directories in a mount of
 * several accounts are listed by the accounts (accounts_list). */
static int sync_dir(struct fs_core *c, struct node *dir, struct resource *listing, bool may_fetch)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	g_autoptr(GPtrArray) entries = provider_entries_new();
	uint64_t listed, gen;
	bool held_only;
	int r;

	if (dir->internal)
		return 0; /* internal_files_add made its files with it */
	tree_lock(c->tree);
	listed = dir->listed_gen;
	tree_unlock(c->tree);

	r = fs_core_source(c, dir, &ref, &np);
	if (r < 0)
		goto out;
	if (!np.session) {
		r = accounts_list(c->accounts, &np.pp, may_fetch, &res, entries);
		if (r == 0 && res.gen != listed)
			apply_listing(c, dir, &np, entries, &res, listing_gen(&res, &ref),
				      res.changed_at_us, listed);
		goto out;
	}
	const struct provider *p = session_provider(np.session);
	if (!ref.path) {
		if (listed)
			goto out;
		r = p->list(&np.pp, NULL, entries);
		if (r < 0)
			goto out;
		bool changed = tree_set_children_gone(c->tree, dir, entries, 1, NULL);
		dir_settle(c, dir, entries, changed, c->mounted_at_wall_us);
		if (np.pp.n == 0)
			internal_files_add(c->tree);
		goto out;
	}

	r = core_get(np.session, &ref, &res, may_fetch);
	if (r < 0)
		goto out;
	gen = listing_gen(&res, &ref);
	held_only = p->quota_is_scarce && ref.list_epoch;
	if (gen != listed || held_only) {
		json_t *body = resource_json(&res);
		r = body ? p->list(&np.pp, body, entries) : -EIO;
		json_decref(body);
		if (r == 0 && held_only)
			gen = keep_held(&np, entries, gen);
		/* Held history changes its names when the fill brings a day in. */
		if (r == 0 && gen != listed)
			apply_listing(c, dir, &np, entries, &res, gen,
				      held_only ? g_get_real_time() : res.changed_at_us, listed);
		else if (r < 0)
			log_warn("cannot list %s from %s: %s", np.pp.n ? np.comp[np.pp.n - 1] : "/",
				 ref.path, g_strerror(-r));
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

int fs_core_dir(struct fs_core *c, uint64_t ino, struct resource *listing, bool may_fetch,
		struct node **ret_dir)
{
	struct node *dir = tree_get(c->tree, ino);
	int r;

	*ret_dir = NULL;
	if (!dir)
		return -ENOENT;
	if (!tree_node_is_dir(c->tree, dir))
		return -ENOTDIR;
	r = sync_dir(c, dir, listing, may_fetch);
	if (r == 0)
		*ret_dir = dir;
	return r;
}

/* The resource file @node is made from, fetched through the cache. */
static int node_resource(struct fs_core *c, struct node *node, struct resource *res, bool may_fetch)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	int r = fs_core_source(c, node, &ref, &np);

	if (r == 0)
		r = ref.path && np.session ? core_get(np.session, &ref, res, may_fetch) : -EIO;
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* Provider file @node's bytes made from @res: the kept rendering of its generation, or
 * a new one, then kept. A large body is rendered under the large lock (one tree of a
 * large body at a time), and a reader that waited there finds the rendering
 * another one just made (the reader and the readahead of the same file). */
static int render_from(struct fs_core *c, struct node *node, const struct resource *res,
		       GBytes **data)
{
	*data = rendered_take(c, node->ino, res->gen);
	if (*data)
		return 0;

	bool large = session_large_begin(res->bytes ? g_bytes_get_size(res->bytes) : 0);
	*data = large ? rendered_take(c, node->ino, res->gen) : NULL;
	if (*data) {
		session_large_end(large);
		return 0;
	}
	GString *out = g_string_new(NULL);
	struct node_path np = {0};
	json_t *body = resource_json(res);
	int r;

	node_path_init(c, node, &np);
	r = body && np.session ? session_provider(np.session)->render(&np.pp, body, out) : -EIO;
	json_decref(body);
	session_large_end(large);
	node_path_clear(&np);
	if (r == 0) {
		*data = g_string_free_to_bytes(out);
		rendered_put(c, node->ino, res->gen, *data);
	} else {
		g_string_free(out, TRUE);
	}
	return r;
}

/* Records in the memo what @node's bytes are now (of resource generation @gen, changed
 * at @changed_at_wall_us); true when they differ from what was seen before (and then the
 * kernel's copy is on its way out). */
static bool note_content(struct fs_core *c, struct node *node, GBytes *data, uint64_t gen,
			 gint64 changed_at_wall_us, bool fixed_time)
{
	uint64_t hash = bytes_hash(data);
	bool changed;

	tree_lock(c->tree);
	if (node->is_dir || (gen && node->memo.gen > gen)) {
		/* A listing made it a directory meanwhile (whose fields share the memo's
		 * place in the node), or another thread already noted a newer rendering:
		 * keep its size and mtime. */
		tree_unlock(c->tree);
		return false;
	}
	changed = node->memo.gen && node->memo.hash != hash;
	/* A resource of a fixed time (a finished period's end) shows that time, known
	 * without a fetch and the same on every mount, unless the same bytes were shown
	 * with another time before (the period's file while it was today's): then that one,
	 * so that a period turning final changes no mtime. */
	if (changed)
		node->mtime_wall_us =
		    stamps_change(c->stamps, node->mtime_wall_us, changed_at_wall_us);
	else if (!node->memo.gen)
		node->mtime_wall_us = stamps_settle(
		    c->stamps, node->ino, hash, g_bytes_get_size(data), changed_at_wall_us,
		    fixed_time ? G_MAXINT64 : first_seen_wall_us(c, node));
	node->memo.gen = gen ? gen : 1;
	node->memo.hash = hash;
	node->memo.size = (uint32_t)MIN(g_bytes_get_size(data), UINT32_MAX);
	tree_unlock(c->tree);
	if (changed && c->changed)
		c->changed(c->changed_data, node->ino);
	return changed;
}

static void fill_time(struct stat *st, gint64 wall_us)
{
	st->st_mtim.tv_sec = wall_us / G_USEC_PER_SEC;
	st->st_mtim.tv_nsec = (long)(wall_us % G_USEC_PER_SEC) * 1000;
	st->st_ctim = st->st_atim = st->st_mtim;
}

void fs_core_file_stat(struct fs_core *c, uint64_t ino, size_t size, gint64 mtime_wall_us,
		       struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = c->uid;
	st->st_gid = c->gid;
	st->st_blksize = 4096;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = (st->st_size + 511) / 512;
	fill_time(st, mtime_wall_us);
}

double fs_core_dir_timeout_s(struct fs_core *c, struct node *dir)
{
	if (dir->internal)
		return 0;
	struct session *s = accounts_one(c->accounts);
	if (!s) {
		struct node_path np = {0};
		node_path_init(c, dir, &np);
		s = np.session;
		node_path_clear(&np);
	}
	if (!s)
		return 1; /* the accounts' own: logins and logouts show within a second */
	const struct options *o = session_options(s);
	return o->ttl >= 0 ? o->ttl : session_provider(s)->default_ttl;
}

int fs_core_stat(struct fs_core *c, struct node *node, enum stat_how how, bool may_fetch,
		 struct stat *st, double *ret_timeout_s)
{
	bool is_dir, told;
	gint64 mtime_wall_us;

	*ret_timeout_s = 0;
	tree_lock(c->tree);
	is_dir = node->is_dir;
	mtime_wall_us = node->mtime_wall_us;
	told = how == STAT_AS_TOLD && !is_dir && node->memo.gen;
	tree_unlock(c->tree);
	if (is_dir) {
		memset(st, 0, sizeof(*st));
		st->st_ino = node->ino;
		st->st_uid = c->uid;
		st->st_gid = c->gid;
		st->st_blksize = 4096;
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		if (!mtime_wall_us)
			mtime_wall_us = stamps_peek(c->stamps, node->ino);
		if (!mtime_wall_us) {
			tree_lock(c->tree);
			mtime_wall_us = first_seen_wall_us(c, node);
			tree_unlock(c->tree);
		}
		fill_time(st, mtime_wall_us);
		*ret_timeout_s = fs_core_dir_timeout_s(c, node);
		return 0;
	}

	if (!told) {
		struct resource res = {0};
		bool fresh_memo;
		int r = node_resource(c, node, &res, may_fetch);
		if (r < 0)
			return r;
		tree_lock(c->tree);
		fresh_memo = !node->is_dir && node->memo.gen == res.gen;
		tree_unlock(c->tree);
		if (!fresh_memo) {
			GBytes *data = NULL;
			r = render_from(c, node, &res, &data);
			if (r == 0) {
				note_content(c, node, data, res.gen, res.changed_at_us,
					     res.fixed_time);
				g_bytes_unref(data);
			}
		}
		/* The kernel counts from when it gets the reply, in whole jiffies: let it ask
		 * again a little before the cache would fetch anew. */
		*ret_timeout_s = MAX(res.fresh_for_s - KERNEL_MARGIN_S, 0);
		resource_clear(&res);
		if (r < 0)
			return r;
	}
	tree_lock(c->tree);
	size_t size = node->is_dir ? 0 : node->memo.size;
	mtime_wall_us = node->mtime_wall_us;
	tree_unlock(c->tree);
	fs_core_file_stat(c, node->ino, size, mtime_wall_us, st);
	return 0;
}

int fs_core_read(struct fs_core *c, struct node *node, bool may_fetch, GBytes **ret_bytes)
{
	struct resource res = {0};
	int r;

	*ret_bytes = NULL;
	if (node->internal)
		return -EIO; /* internal files are read through their renderings */
	r = node_resource(c, node, &res, may_fetch);
	if (r == 0)
		r = render_from(c, node, &res, ret_bytes);
	if (r == 0)
		note_content(c, node, *ret_bytes, res.gen, res.changed_at_us, res.fixed_time);
	resource_clear(&res);
	return r;
}

bool fs_core_costly(struct fs_core *c, struct node *node)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	bool costly = false;

	node_path_init(c, node, &np);
	if (np.session && session_source(np.session, &np.pp, &ref, true) == 0 &&
	    (ref.paged || ref.immutable_at_s))
		costly = session_get_cached(np.session, &ref, &res) < 0;
	resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return costly;
}

bool fs_core_is_told(struct fs_core *c, struct node *node, uint64_t gen)
{
	bool told;

	tree_lock(c->tree);
	told = !node->is_dir && node->memo.gen == gen;
	tree_unlock(c->tree);
	return told;
}

int fs_core_told_bytes(struct fs_core *c, struct node *node, GBytes **ret_bytes, uint64_t *ret_gen)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	GBytes *data = NULL;
	int r;

	*ret_bytes = NULL;
	if (node->internal)
		return -ENOENT;
	node_path_init(c, node, &np);
	r = np.session ? session_source(np.session, &np.pp, &ref, true) : -ENOENT;
	if (r == 0)
		r = ref.path ? session_peek(np.session, &ref, &res) : -ENOENT;
	if (r == 0 && !fs_core_is_told(c, node, res.gen))
		r = -ESTALE;
	if (r == 0)
		r = render_from(c, node, &res, &data);
	if (r == 0) {
		uint64_t hash = bytes_hash(data);
		tree_lock(c->tree);
		bool same = !node->is_dir && node->memo.gen == res.gen && node->memo.hash == hash;
		tree_unlock(c->tree);
		if (same) {
			*ret_bytes = g_steal_pointer(&data);
			*ret_gen = res.gen;
		} else {
			r = -ESTALE;
		}
	}
	if (data)
		g_bytes_unref(data);
	resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}
