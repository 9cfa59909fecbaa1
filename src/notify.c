/* notify: the notifier thread and the readahead across files. See the header. */
#include "notify.h"

#include <errno.h>
#include <string.h>

#include "log.h"

struct notify {
	struct fs_core *core;
	struct tree *tree;
	GMutex lock;		 /* guards se and thread */
	struct fuse_session *se; /* NULL before the start and after the stop */
	GThread *thread;
	gint ended;	      /* atomic: the thread has returned, or never started */
	GAsyncQueue *notices; /* struct notice *, or &stop_mark */
};

/* What the thread tells the kernel about a file. */
struct notice {
	uint64_t ino;
	bool fill;	 /* put its bytes in the page cache; else drop its pages and attributes */
	uint64_t parent; /* with name: it is deleted from this directory */
	char name[];
};

/* Tells the thread to end. */
static struct notice stop_mark;

struct notify *notify_new(struct fs_core *core)
{
	struct notify *n = g_new0(struct notify, 1);

	n->core = core;
	n->tree = fs_core_tree(core);
	g_mutex_init(&n->lock);
	n->ended = 1;
	n->notices = g_async_queue_new_full(g_free);
	return n;
}

void notify_free(struct notify *n)
{
	if (!n)
		return;
	notify_stop(n);
	g_async_queue_unref(n->notices);
	g_mutex_clear(&n->lock);
	g_free(n);
}

/* Puts file @ino's bytes in the kernel's page cache, when the cache holds the very
 * generation the kernel was last told of (its size and mtime): a read then needs no
 * request. Never fetches. */
static void fill_pages(struct notify *n, struct fuse_session *se, uint64_t ino)
{
	struct node *node = tree_get(n->tree, ino);
	g_autoptr(GBytes) data = NULL;
	uint64_t gen = 0;

	if (!node || fs_core_told_bytes(n->core, node, &data, &gen) < 0)
		return;
	gsize len = 0;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(0);
	buf.buf[0].mem = (void *)g_bytes_get_data(data, &len);
	buf.buf[0].size = len;
	/* -ENOENT: the kernel has forgotten the inode. */
	int r = len ? fuse_lowlevel_notify_store(se, ino, 0, &buf, 0) : 0;
	if (r < 0 && r != -ENOENT)
		log_debug("cannot fill the pages of inode %" G_GUINT64_FORMAT ": %s", ino,
			  g_strerror(-r));
	/* A newer version noted meanwhile (its invalidation may have run before this
	 * store): drop what was just stored. */
	if (r == 0 && !fs_core_is_told(n->core, node, gen))
		fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
}

/* Idle, it sleeps in g_async_queue_pop. */
static gpointer notify_thread(gpointer data)
{
	struct notify *n = data;

	g_mutex_lock(&n->lock);
	struct fuse_session *se = n->se;
	g_mutex_unlock(&n->lock);
	for (;;) {
		struct notice *x = g_async_queue_pop(n->notices);
		if (x == &stop_mark) {
			g_atomic_int_set(&n->ended, 1);
			return NULL;
		}
		if (x->parent) {
			int r = fuse_lowlevel_notify_delete(se, x->parent, x->ino, x->name,
							    strlen(x->name));
			/* -ENOENT: the kernel has forgotten it already; -ENOTEMPTY: a directory
			 * with entries still cached, which it then drops all the same. */
			if (r < 0 && r != -ENOENT && r != -ENOTEMPTY)
				log_debug("cannot delete inode %" G_GUINT64_FORMAT ": %s", x->ino,
					  g_strerror(-r));
		} else if (x->fill) {
			unsigned held = tree_hold(n->tree);
			fill_pages(n, se, x->ino);
			tree_release(n->tree, held);
		} else {
			/* -ENOENT: the kernel has forgotten the inode, nothing to drop. */
			int r = fuse_lowlevel_notify_inval_inode(se, x->ino, 0, 0);
			if (r < 0 && r != -ENOENT)
				log_debug("cannot invalidate inode %" G_GUINT64_FORMAT ": %s",
					  x->ino, g_strerror(-r));
		}
		g_free(x);
	}
}

void notify_start(struct notify *n, struct fuse_session *se)
{
	g_mutex_lock(&n->lock);
	n->se = se;
	g_atomic_int_set(&n->ended, 0);
	n->thread = g_thread_new("notify", notify_thread, n);
	g_mutex_unlock(&n->lock);
}

void notify_stop_soon(struct notify *n)
{
	g_mutex_lock(&n->lock);
	bool running = n->se != NULL;
	n->se = NULL; /* nothing more is queued */
	g_mutex_unlock(&n->lock);
	if (running)
		g_async_queue_push_front(n->notices, &stop_mark);
}

bool notify_ended(struct notify *n)
{
	return g_atomic_int_get(&n->ended);
}

void notify_stop(struct notify *n)
{
	notify_stop_soon(n);
	g_mutex_lock(&n->lock);
	GThread *thread = g_steal_pointer(&n->thread);
	g_mutex_unlock(&n->lock);
	if (!thread)
		return;
	g_thread_join(thread);
	/* What was queued after the mark is never sent. */
	struct notice *x;
	while ((x = g_async_queue_try_pop(n->notices)))
		if (x != &stop_mark)
			g_free(x);
}

/* Queues a notice (a deletion with @name), unless the thread is not running. */
static void notice(struct notify *n, uint64_t ino, bool fill, uint64_t parent, const char *name)
{
	g_mutex_lock(&n->lock);
	if (n->se) {
		size_t len = name ? strlen(name) + 1 : 0;
		struct notice *x = g_malloc0(sizeof(*x) + len);
		x->ino = ino;
		x->fill = fill;
		x->parent = parent;
		if (len)
			memcpy(x->name, name, len);
		/* Dropping old bytes goes before filling: a fill checks again what the
		 * kernel was told when it runs, so it may safely come after an
		 * invalidation queued later. Deletions keep their order (children before
		 * their directory). */
		if (fill || parent)
			g_async_queue_push(n->notices, x);
		else
			g_async_queue_push_front(n->notices, x);
	}
	g_mutex_unlock(&n->lock);
}

void notify_inval(struct notify *n, uint64_t ino)
{
	notice(n, ino, false, 0, NULL);
}

void notify_delete(struct notify *n, uint64_t parent, uint64_t ino, const char *name)
{
	notice(n, ino, false, parent, name);
}

/* Marks @dir's files as put in the page cache for its current listing; false when they
 * were already (or @dir is no listed directory). */
static bool fill_mark(struct notify *n, struct node *dir)
{
	uint64_t gen;

	if (dir->internal)
		return false;
	tree_lock(n->tree);
	gen = dir->is_dir ? dir->listed_gen : 0;
	tree_unlock(n->tree);
	return gen && tree_mark(n->tree, dir, TREE_MARK_FILLED, gen);
}

/* Has the files of @dir put in the page cache, but for @except, and those of its
 * subdirectories @depth levels down (a device's values/ beside its device.json); once
 * per listing generation of each directory. */
static void fill_dir(struct notify *n, struct node *dir, uint64_t except, int depth)
{
	if (!fill_mark(n, dir))
		return;
	GArray *entries = tree_list(n->tree, dir);
	for (guint i = 0; i < entries->len; i++) {
		struct tree_dirent *d = &g_array_index(entries, struct tree_dirent, i);
		struct node *sub = d->is_dir && depth > 0 ? tree_get(n->tree, d->ino) : NULL;
		if (!d->is_dir && d->ino != except)
			notice(n, d->ino, true, 0, NULL);
		else if (sub)
			fill_dir(n, sub, 0, depth - 1);
	}
	tree_dirents_free(entries);
}

void notify_fill_around(struct notify *n, struct node *node)
{
	struct node *next[NOTIFY_FILL_AHEAD];
	struct node *dir = tree_parent(n->tree, node);

	g_mutex_lock(&n->lock);
	bool running = n->se != NULL;
	g_mutex_unlock(&n->lock);
	if (!dir || !running || node->internal)
		return;
	fill_dir(n, dir, node->ino, 1);
	size_t k = tree_parent(n->tree, dir)
		       ? tree_next_siblings(n->tree, dir, next, NOTIFY_FILL_AHEAD)
		       : 0;
	for (size_t i = 0; i < k; i++)
		fill_dir(n, next[i], 0, 1); /* nothing for a file */
}
