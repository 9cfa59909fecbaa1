/* fs_core: sync, stat and render over the tree and the session. See the header. */
#include "fs_core.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fnv.h"
#include "internal_files.h"
#include "log.h"

/* How much sooner than the cache the kernel stops trusting a file's attributes. */
#define KERNEL_MARGIN_S 0.05

/* The latest renderings kept, so that the chunks of one read (128 KiB each) of a large
 * file are slices of one rendering, not a parse and a rendering each: the files being
 * read now, at most this many and this many bytes (the most recent one whatever its
 * size). */
#define RENDERED_MAX	   64
#define RENDERED_MAX_BYTES (64 * 1024 * 1024)

/* One file's bytes in one generation of its resource. */
struct rendered {
	uint64_t ino;
	uint64_t gen;
	GBytes *bytes;
};

struct fs_core {
	struct session *session;
	struct tree *tree;
	uid_t uid;
	gid_t gid;
	gint64 mounted_at_wall_us; /* a directory never listed shows this mtime */
	fs_core_changed_fn changed;
	void *changed_data;
	GMutex rendered_lock;  /* guards rendered and rendered_bytes */
	GQueue rendered;       /* struct rendered *, the most recently used first */
	size_t rendered_bytes; /* the sum of their sizes */
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
	       (c->rendered.length > RENDERED_MAX || c->rendered_bytes > RENDERED_MAX_BYTES)) {
		struct rendered *last = g_queue_pop_tail(&c->rendered);
		c->rendered_bytes -= g_bytes_get_size(last->bytes);
		rendered_free(last);
	}
	g_mutex_unlock(&c->rendered_lock);
}

struct fs_core *fs_core_new(struct session *session, fs_core_changed_fn changed, void *data)
{
	struct fs_core *c = g_new0(struct fs_core, 1);

	c->session = session;
	c->tree = tree_new();
	c->uid = getuid();
	c->gid = getgid();
	c->mounted_at_wall_us = g_get_real_time();
	c->changed = changed;
	c->changed_data = data;
	g_mutex_init(&c->rendered_lock);
	g_queue_init(&c->rendered);
	return c;
}

void fs_core_free(struct fs_core *c)
{
	if (!c)
		return;
	g_queue_clear_full(&c->rendered, rendered_free);
	g_mutex_clear(&c->rendered_lock);
	tree_free(c->tree);
	g_free(c);
}

struct tree *fs_core_tree(struct fs_core *c)
{
	return c->tree;
}

struct session *fs_core_session(struct fs_core *c)
{
	return c->session;
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
}

void node_path_clear(struct node_path *np)
{
	g_strfreev(np->comp);
}

int fs_core_source(struct fs_core *c, struct node *node, struct resource_ref *ref,
		   struct node_path *np)
{
	node_path_init(c, node, np);
	return session_source(c->session, &np->pp, ref, false);
}

/* Brings @dir's children up to date with its resource, which goes to @listing when it
 * is not NULL (gen 0: a static directory). */
static int sync_dir(struct fs_core *c, struct node *dir, struct resource *listing)
{
	const struct provider *p = session_provider(c->session);
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	g_autoptr(GPtrArray) entries = provider_entries_new();
	uint64_t listed;
	int r;

	if (dir->internal)
		return 0; /* internal_files_add made its files with it */
	tree_lock(c->tree);
	listed = dir->listed_gen;
	tree_unlock(c->tree);

	r = fs_core_source(c, dir, &ref, &np);
	if (r < 0)
		goto out;
	if (!ref.path) {
		if (listed)
			goto out;
		r = p->list(&np.pp, NULL, entries);
		if (r < 0)
			goto out;
		tree_set_children(c->tree, dir, entries, 1);
		if (np.pp.n == 0)
			internal_files_add(c->tree);
		goto out;
	}

	r = session_get(c->session, &ref, &res);
	if (r < 0)
		goto out;
	if (res.gen != listed) {
		json_t *body = resource_json(&res);
		r = body ? p->list(&np.pp, body, entries) : -EIO;
		json_decref(body);
		if (r == 0) {
			tree_set_children(c->tree, dir, entries, res.gen);
			tree_lock(c->tree);
			dir->mtime_wall_us = res.changed_at_us;
			tree_unlock(c->tree);
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

int fs_core_dir(struct fs_core *c, uint64_t ino, struct resource *listing, struct node **ret_dir)
{
	struct node *dir = tree_get(c->tree, ino);
	int r;

	*ret_dir = NULL;
	if (!dir)
		return -ENOENT;
	if (!tree_node_is_dir(c->tree, dir))
		return -ENOTDIR;
	r = sync_dir(c, dir, listing);
	if (r == 0)
		*ret_dir = dir;
	return r;
}

/* The resource file @node is made from, fetched through the cache. */
static int node_resource(struct fs_core *c, struct node *node, struct resource *res)
{
	struct resource_ref ref = {0};
	struct node_path np = {0};
	int r = fs_core_source(c, node, &ref, &np);

	if (r == 0)
		r = ref.path ? session_get(c->session, &ref, res) : -EIO;
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* Provider file @node's bytes made from @res: the kept rendering of its generation, or
 * a new one, then kept. */
static int render_from(struct fs_core *c, struct node *node, const struct resource *res,
		       GBytes **data)
{
	*data = rendered_take(c, node->ino, res->gen);
	if (*data)
		return 0;

	GString *out = g_string_new(NULL);
	struct node_path np = {0};
	json_t *body = resource_json(res);
	int r;

	node_path_init(c, node, &np);
	r = body ? session_provider(c->session)->render(&np.pp, body, out) : -EIO;
	json_decref(body);
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
			 gint64 changed_at_wall_us)
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
	if (!node->memo.gen || changed)
		node->mtime_wall_us = changed_at_wall_us;
	node->memo.gen = gen ? gen : 1;
	node->memo.hash = hash;
	node->memo.size = g_bytes_get_size(data);
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
	const struct options *o = session_options(c->session);
	int ttl = o->ttl >= 0 ? o->ttl : session_provider(c->session)->default_ttl;
	return ttl;
}

int fs_core_stat(struct fs_core *c, struct node *node, enum stat_how how, struct stat *st,
		 double *ret_timeout_s)
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
		fill_time(st, mtime_wall_us ? mtime_wall_us : c->mounted_at_wall_us);
		*ret_timeout_s = fs_core_dir_timeout_s(c, node);
		return 0;
	}

	if (!told) {
		struct resource res = {0};
		bool fresh_memo;
		int r = node_resource(c, node, &res);
		if (r < 0)
			return r;
		tree_lock(c->tree);
		fresh_memo = !node->is_dir && node->memo.gen == res.gen;
		tree_unlock(c->tree);
		if (!fresh_memo) {
			GBytes *data = NULL;
			r = render_from(c, node, &res, &data);
			if (r == 0) {
				note_content(c, node, data, res.gen, res.changed_at_us);
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

int fs_core_read(struct fs_core *c, struct node *node, GBytes **ret_bytes)
{
	struct resource res = {0};
	int r;

	*ret_bytes = NULL;
	if (node->internal)
		return -EIO; /* internal files are read through their renderings */
	r = node_resource(c, node, &res);
	if (r == 0)
		r = render_from(c, node, &res, ret_bytes);
	if (r == 0)
		note_content(c, node, *ret_bytes, res.gen, res.changed_at_us);
	resource_clear(&res);
	return r;
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
	r = session_source(c->session, &np.pp, &ref, true);
	if (r == 0)
		r = ref.path ? session_peek(c->session, &ref, &res) : -ENOENT;
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
