/* fs: the libfuse low-level operations, in passthrough_ll's shape: one fs_<op> a
 * request, each decoding it, asking fs_core (or internal_files) and replying exactly
 * once on every path; this file is the only caller of fuse_reply_*. It also holds the
 * one errno whitelist of the FUSE edge (fs_errno).
 *
 * Kernel caching: there is no userspace open (FUSE_CAP_NO_OPEN_SUPPORT): open and
 * close of a file cost no request, and a warm read is served by the page cache alone.
 * Entries and attributes are valid for as long as the resource behind them stays
 * fresh. After that, an open by path looks the file up again, which fetches and
 * renders it: a new size or mtime (microseconds of when the bytes changed) drops the
 * kernel's pages (AUTO_INVAL_DATA). A change noticed through another file of the same
 * resource is sent as an inode invalidation by notify (never from inside a request).
 *
 * Snapshots without an open: once a file's attributes expire, the kernel checks them
 * before each read through a file already open (a getattr with a file handle), and it
 * is told the size and mtime last told (STAT_AS_TOLD), so the pages it filled stay
 * and the reads through that open file see the bytes they started with, until a lookup
 * or stat by path (anyone's) shows the kernel a newer version: the page cache is the
 * inode's, not the open file's. A read that the page cache cannot answer renders the
 * resource as it is now (O_DIRECT, pages evicted under memory pressure): one read() is
 * always one version. The files of .smarthomefs/ are snapshots of their own
 * (internal_files.h).
 *
 * Answers within the timeout whatever the load: a FUSE worker answers what the cache
 * holds (fs_core without may_fetch) and hands a request that needs a fetch to the fetch
 * pool (options.max_threads threads), which answers it when the fetch is done (libfuse
 * lets any thread reply). So workers never wait for the cloud: a cached file and
 * .smarthomefs/ answer at once while any number of readers wait for a slow cloud. A
 * request still queued when its timeout has passed is answered ETIMEDOUT.
 *
 * Modules below it: fs_core (sync, stat, render), prefetch, notify, history_fill,
 * internal_files; and it calls accounts (options) and tree (lookup counts, sections)
 * itself.
 * Lock order: the fetch lock is a leaf (around the pool pointer only). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs_core.h"
#include "internal_files.h"
#include "notify.h"
#include "history_fill.h"
#include "prefetch.h"

struct fs {
	struct fs_core *core;
	struct tree *tree; /* the core's */
	struct internal_files *internal;
	struct prefetch *prefetch;
	struct history_fill *history; /* NULL: nothing to fill, or not started */
	struct notify *notify;
	struct fuse_session *se; /* set before the loop starts, then read only */
	bool no_open;		 /* the kernel sends no open/release for files; set in init */
	gint64 timeout_us;	 /* options.timeout */
	GMutex fetch_lock;	 /* guards fetch */
	GThreadPool *fetch;	 /* struct deferred *; NULL before init and after fs_stop */
};

/* The operations that may need a fetch, run by a worker without fetching, then by the
 * fetch pool when they need one. */
enum op { OP_LOOKUP, OP_GETATTR, OP_OPENDIR, OP_READDIR, OP_READDIRPLUS, OP_READ };

/* A request handed to the fetch pool, with what the operation was given. */
struct deferred {
	enum op op;
	fuse_req_t req;
	fuse_ino_t ino;
	char *name; /* OP_LOOKUP */
	size_t size;
	off_t off;
	struct fuse_file_info fi;
	bool has_fi;
	gint64 queued_mono_us;
};

/* fs_core's changed function: the kernel's attributes and pages of @ino go. */
static void fs_content_changed(void *data, uint64_t ino)
{
	struct fs *fs = data;

	notify_inval(fs->notify, ino);
}

/* fs_core's gone function: the kernel is told the node is deleted, to forget it. */
static void fs_node_gone(void *data, uint64_t parent, uint64_t ino, const char *name)
{
	struct fs *fs = data;

	notify_delete(fs->notify, parent, ino, name);
}

struct fs *fs_new(struct accounts *accounts)
{
	struct fs *fs = g_new0(struct fs, 1);

	fs->core = fs_core_new(accounts, fs_content_changed, fs);
	fs->tree = fs_core_tree(fs->core);
	fs->internal = internal_files_new(accounts);
	fs->prefetch = prefetch_new(fs->core);
	fs->notify = notify_new(fs->core);
	fs_core_set_gone(fs->core, fs_node_gone, fs);
	fs->timeout_us = (gint64)accounts_options(accounts)->timeout * G_USEC_PER_SEC;
	g_mutex_init(&fs->fetch_lock);
	return fs;
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	prefetch_free(fs->prefetch);
	notify_free(fs->notify);
	internal_files_free(fs->internal);
	fs_core_free(fs->core);
	g_mutex_clear(&fs->fetch_lock);
	g_free(fs);
}

void fs_set_fuse_session(struct fs *fs, struct fuse_session *se)
{
	fs->se = se;
}

/* What a reader may see of an internal errno: the errno table of docs/design.md. */
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

static int fs_fill_entry(struct fs *fs, struct node *node, bool may_fetch,
			 struct fuse_entry_param *e)
{
	double timeout_s;

	memset(e, 0, sizeof(*e));
	int r = fs_core_stat(fs->core, node, STAT_NOW, may_fetch, &e->attr, &timeout_s);
	if (r < 0)
		return r;
	e->ino = node->ino;
	e->generation = 1;
	e->attr_timeout = timeout_s;
	e->entry_timeout = timeout_s;
	return 0;
}

/* Answers @req with the entry of tree node @node (filled by fs_fill_entry), counting the
 * kernel's lookup before the answer (a FORGET may follow it at once) and taking it back
 * when the answer did not arrive. A node that left the tree meanwhile is no entry. */
static void fs_reply_node_entry(struct fs *fs, fuse_req_t req, struct node *node,
				struct fuse_entry_param *e)
{
	if (!tree_ref(fs->tree, node)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (fuse_reply_entry(req, e) != 0)
		tree_forget(fs->tree, node->ino, 1);
}

static void fs_rendering_stat(struct fs *fs, const struct rendering *rd, struct stat *st)
{
	fs_core_file_stat(fs->core, rd->node->ino, g_bytes_get_size(rd->bytes), rd->mtime_wall_us,
			  st);
}

static void fs_fetch_one(gpointer data, gpointer user_data);
static void fs_fetch_dropped(gpointer data);

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

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
	if (fs->se)
		notify_start(fs->notify, fs->se);
	prefetch_start(fs->prefetch);
	fs->history = history_fill_start(fs_core_accounts(fs->core));
	GThreadPool *pool = g_thread_pool_new_full(
	    fs_fetch_one, fs, fs_fetch_dropped,
	    accounts_options(fs_core_accounts(fs->core))->max_threads, FALSE, NULL);
	g_mutex_lock(&fs->fetch_lock);
	fs->fetch = pool;
	g_mutex_unlock(&fs->fetch_lock);
}

/* Answers the kernel's requests until the notifier has ended. The loop has ended, so
 * nothing else reads /dev/fuse; but a notice being sent may wait for a page that the
 * kernel locked for a read still queued, which only an answer unlocks. */
static void fs_answer_until_notify_ends(struct fs *fs)
{
	struct fuse_buf buf = {0};
	int fd = fuse_session_fd(fs->se);

	/* fuse_session_receive_buf drops what it reads once the session has exited. */
	fuse_session_reset(fs->se);
	while (!notify_ended(fs->notify)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, 20);
		if (n < 0 && errno != EINTR)
			break;
		if (n <= 0)
			continue;
		if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
			break; /* the connection is gone: so is any wait on it */
		int r = fuse_session_receive_buf(fs->se, &buf);
		if (r > 0)
			fuse_session_process_buf(fs->se, &buf);
		else if (r < 0 && r != -EINTR && r != -EAGAIN)
			break;
		else if (r == 0)
			break; /* the connection ended */
	}
	free(buf.mem);
	fuse_session_exit(fs->se);
}

void fs_stop(struct fs *fs)
{
	/* The pools' threads wait in GLib once their pool is freed (GLib ends them after 15
	 * idle seconds) instead of ending at once, while the daemon exits: libcrypto's exit
	 * handler deletes the keys of each thread's own state (error queue, random
	 * generators), and a thread ending after it drops that state unfreed. */
	g_thread_pool_set_max_unused_threads(-1);
	/* First, before waiting for prefetches: what a remount shows must not hang on them. */
	fs_core_save(fs->core);
	prefetch_stop(fs->prefetch);
	history_fill_stop(g_steal_pointer(&fs->history));
	notify_stop_soon(fs->notify);
	if (fs->se && !notify_ended(fs->notify))
		fs_answer_until_notify_ends(fs);
	notify_stop(fs->notify);
	/* Queued requests are answered EINTR (fs_fetch_dropped), running ones when their
	 * fetch ends, within the timeout: while /dev/fuse is still open. */
	g_mutex_lock(&fs->fetch_lock);
	GThreadPool *pool = g_steal_pointer(&fs->fetch);
	g_mutex_unlock(&fs->fetch_lock);
	if (pool)
		g_thread_pool_free(pool, TRUE, TRUE);
}

static void fs_destroy(void *userdata)
{
	fs_stop(userdata);
}

/* The directory @ino brought up to date in *ret_dir, or an error: replied to @req, or
 * -EINPROGRESS (not replied) when that needs a fetch and @may_fetch is false. */
static int fs_synced_dir(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct resource *listing,
			 bool may_fetch, struct node **ret_dir)
{
	int r = fs_core_dir(fs->core, ino, listing, may_fetch, ret_dir);

	if (r < 0 && r != -EINPROGRESS)
		fuse_reply_err(req, fs_errno(r));
	return r;
}

/* Each op_<name> below answers its request and returns 0, or returns -EINPROGRESS
 * without answering when the answer needs a fetch and @may_fetch is false. */

static int op_lookup(struct fs *fs, fuse_req_t req, fuse_ino_t parent, const char *name,
		     bool may_fetch)
{
	struct node *dir = NULL;
	struct fuse_entry_param e;
	int r = fs_synced_dir(req, fs, parent, NULL, may_fetch, &dir);

	if (r < 0)
		return r == -EINPROGRESS ? r : 0;
	struct node *node = tree_child(fs->tree, dir, name);
	if (!node || tree_node_gone(fs->tree, node)) {
		/* A negative entry the kernel may keep as long as a listing is fresh. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs_core_dir_timeout_s(fs->core, dir);
		fuse_reply_entry(req, &e);
		return 0;
	}
	if (node->internal && !tree_node_is_dir(fs->tree, node)) {
		/* Never kept: every open by path looks it up and gets the bytes of now. */
		struct rendering *rd = internal_files_lookup(fs->internal, node);
		memset(&e, 0, sizeof(e));
		e.ino = (fuse_ino_t)(uintptr_t)rd;
		e.generation = rd->generation;
		fs_rendering_stat(fs, rd, &e.attr);
		if (fuse_reply_entry(req, &e) != 0)
			internal_files_forget(fs->internal, e.ino, 1);
		return 0;
	}
	r = fs_fill_entry(fs, node, may_fetch, &e);
	if (r == -EINPROGRESS)
		return r;
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fs_reply_node_entry(fs, req, node, &e);
	return 0;
}

static int op_getattr(struct fs *fs, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      bool may_fetch)
{
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : internal_files_find(fs->internal, ino);
	struct stat st;
	double timeout_s;
	int r;

	if (rd) {
		fs_rendering_stat(fs, rd, &st);
		fuse_reply_attr(req, &st, 0);
		return 0;
	}
	if (!node) {
		fuse_reply_err(req, ENOENT);
		return 0;
	}
	/* With @fi: the kernel checks a file open since its last lookup before a read
	 * (stat and fstat come without). */
	r = fs_core_stat(fs->core, node, fi ? STAT_AS_TOLD : STAT_NOW, may_fetch, &st, &timeout_s);
	if (r == -EINPROGRESS)
		return r;
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_attr(req, &st, timeout_s);
	return 0;
}

static int op_opendir(struct fs *fs, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      bool may_fetch)
{
	struct resource listing = {0};
	struct node *dir = NULL;
	int r = fs_synced_dir(req, fs, ino, &listing, may_fetch, &dir);

	if (r < 0)
		return r == -EINPROGRESS ? r : 0;
	prefetch_listing(fs->prefetch, dir, &listing);
	resource_clear(&listing);
	fi->fh = 0; /* readdir reads the listing as it is (op_readdir) */
	fi->cache_readdir = 0;
	fuse_reply_open(req, fi);
	return 0;
}

/* Whether @d, an entry of @dir, is left out of listings: INTERNAL_DIR in the root is
 * there by its path (status checks, node_exporter) but not listed, as NetApp's
 * .snapshot, because its files change with every request, and a backup of an unchanged
 * cloud must find nothing changed. (It is the root's last entry: tree.h.) */
static bool fs_unlisted(struct fs *fs, const struct node *dir, const struct tree_dirent *d)
{
	return !tree_parent(fs->tree, dir) && strcmp(d->name, INTERNAL_DIR) == 0;
}

/* The fewest bytes one entry takes in a readdir answer (its header and a name of up to 8
 * bytes): how many entries an answer of some size can hold at most. */
#define DIRENT_MIN_BYTES 32

/* Fills one readdir(plus) answer from the directory's listing as it is now, a window of
 * it at a time: an open directory holds no copy of its names. Offsets: 1 ".", 2 "..",
 * then 3 + the position in the listing order (tree_list_window) of the entry before. */
static int op_readdir(struct fs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      bool plus, bool may_fetch)
{
	struct node *dir = tree_get(fs->tree, ino);
	g_autofree char *buf = g_malloc(size);
	size_t used = 0, n = 0;
	size_t max = size / DIRENT_MIN_BYTES + 1;
	g_autofree struct tree_dirent *window = g_new0(struct tree_dirent, max);
	int r = 0;
	/* The entries answered with a node (readdirplus): each is a lookup the kernel
	 * counts, taken back if the answer does not arrive. */
	g_autoptr(GArray) counted = g_array_new(FALSE, FALSE, sizeof(uint64_t));

	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return 0;
	}
	for (off_t i = off; i < 2; i++) {
		struct fuse_entry_param e = {.attr.st_mode = S_IFDIR};
		struct node *parent = tree_parent(fs->tree, dir);
		e.attr.st_ino = i == 0 || !parent ? dir->ino : parent->ino;
		const char *name = i == 0 ? "." : "..";
		size_t need =
		    plus ? fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1)
			 : fuse_add_direntry(req, buf + used, size - used, name, &e.attr, i + 1);
		if (need > size - used)
			goto reply;
		used += need;
	}
	n = tree_list_window(fs->tree, dir, off > 2 ? (size_t)off - 2 : 0, max, window);
	for (size_t k = 0; k < n; k++) {
		struct tree_dirent *d = &window[k];
		struct fuse_entry_param e;
		off_t next_off = (off_t)d->pos + 3;
		size_t need;

		if (fs_unlisted(fs, dir, d))
			continue;
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = d->ino;
		e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
		if (plus) {
			struct node *child = tree_get(fs->tree, d->ino);
			/* ino 0 tells the kernel to look the entry up itself when its
			 * attributes cannot be had now, or, for an internal file, should be
			 * had at the open. */
			if (child && !d->is_dir && child->internal)
				child = NULL;
			/* A period of history not fetched yet is shown without its
			 * attributes: listing its directory costs no call. */
			if (child && !d->is_dir && fs_core_costly(fs->core, child))
				child = NULL;
			r = child ? fs_fill_entry(fs, child, may_fetch, &e) : 0;
			if (r == -EINPROGRESS)
				break; /* the fetch pool answers all of it */
			if (r < 0 || (child && !tree_ref(fs->tree, child))) {
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->ino;
				e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
			}
			r = 0;
		}
		need = plus ? fuse_add_direntry_plus(req, buf + used, size - used, d->name, &e,
						     next_off)
			    : fuse_add_direntry(req, buf + used, size - used, d->name, &e.attr,
						next_off);
		if (need > size - used) {
			if (e.ino)
				tree_forget(fs->tree, e.ino, 1);
			break;
		}
		if (e.ino)
			g_array_append_val(counted, e.ino);
		used += need;
	}
	for (size_t k = 0; k < n; k++)
		g_free(window[k].name);
	if (r == -EINPROGRESS) {
		for (guint k = 0; k < counted->len; k++)
			tree_forget(fs->tree, g_array_index(counted, uint64_t, k), 1);
		return r;
	}
reply:
	if (fuse_reply_buf(req, buf, used) != 0)
		for (guint k = 0; k < counted->len; k++)
			tree_forget(fs->tree, g_array_index(counted, uint64_t, k), 1);
	return 0;
}

static int op_read(struct fs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   bool may_fetch)
{
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : internal_files_find(fs->internal, ino);
	g_autoptr(GBytes) bytes = rd ? g_bytes_ref(rd->bytes) : NULL;
	gsize len = 0;
	int r = rd ? 0 : node ? fs_core_read(fs->core, node, may_fetch, &bytes) : -ENOENT;

	if (r == -EINPROGRESS)
		return r;
	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return 0;
	}
	const char *data = g_bytes_get_data(bytes, &len);
	if (off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return 0;
	}
	fuse_reply_buf(req, data + off, MIN(size, len - (size_t)off));
	if (off == 0 && node)
		notify_fill_around(fs->notify, node);
	return 0;
}

/* Runs @d's operation; returns -EINPROGRESS when it needs a fetch it may not make. */
static int fs_run(struct fs *fs, struct deferred *d, bool may_fetch)
{
	struct fuse_file_info *fi = d->has_fi ? &d->fi : NULL;

	switch (d->op) {
	case OP_LOOKUP:
		return op_lookup(fs, d->req, d->ino, d->name, may_fetch);
	case OP_GETATTR:
		return op_getattr(fs, d->req, d->ino, fi, may_fetch);
	case OP_OPENDIR:
		return op_opendir(fs, d->req, d->ino, &d->fi, may_fetch);
	case OP_READDIR:
	case OP_READDIRPLUS:
		return op_readdir(fs, d->req, d->ino, d->size, d->off, d->op == OP_READDIRPLUS,
				  may_fetch);
	case OP_READ:
		return op_read(fs, d->req, d->ino, d->size, d->off, may_fetch);
	}
	return 0;
}

static void deferred_free(struct deferred *d)
{
	g_free(d->name);
	g_free(d);
}

/* Runs in the fetch pool. */
static void fs_fetch_one(gpointer data, gpointer user_data)
{
	struct deferred *d = data;
	struct fs *fs = user_data;

	unsigned held = tree_hold(fs->tree);
	if (g_get_monotonic_time() - d->queued_mono_us > fs->timeout_us) {
		/* Waited its whole timeout in the queue: what the cache holds, or the error
		 * the man page promises after the timeout. */
		if (fs_run(fs, d, false) == -EINPROGRESS)
			fuse_reply_err(d->req, ETIMEDOUT);
	} else {
		fs_run(fs, d, true);
	}
	tree_release(fs->tree, held);
	deferred_free(d);
}

/* A queued request dropped at the end of the mount: answered all the same. */
static void fs_fetch_dropped(gpointer data)
{
	struct deferred *d = data;

	fuse_reply_err(d->req, EINTR);
	deferred_free(d);
}

/* Answers @d from the cache, or hands it to the fetch pool. */
static void fs_answer(fuse_req_t req, struct deferred d)
{
	struct fs *fs = fuse_req_userdata(req);

	d.req = req;
	/* Node pointers are held only inside a section (tree.h). */
	unsigned held = tree_hold(fs->tree);
	int r = fs_run(fs, &d, false);
	tree_release(fs->tree, held);
	if (r != -EINPROGRESS)
		return;
	struct deferred *copy = g_memdup2(&d, sizeof(d));
	copy->name = g_strdup(d.name);
	copy->queued_mono_us = g_get_monotonic_time();
	g_mutex_lock(&fs->fetch_lock);
	bool queued = fs->fetch && g_thread_pool_push(fs->fetch, copy, NULL);
	g_mutex_unlock(&fs->fetch_lock);
	if (!queued) {
		/* No pool (the mount starts or ends): wait here. */
		held = tree_hold(fs->tree);
		fs_run(fs, copy, true);
		tree_release(fs->tree, held);
		deferred_free(copy);
	}
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_answer(req, (struct deferred){.op = OP_LOOKUP, .ino = parent, .name = (char *)name});
}

/* The kernel forgot @nlookup lookups of node @ino: a tree node gone from its listing
 * that it no longer holds is freed (tree.h), a rendering of an internal file goes. */
static void fs_forget_one(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	if (tree_get(fs->tree, ino))
		tree_forget(fs->tree, ino, nlookup);
	else
		internal_files_forget(fs->internal, ino, nlookup);
}

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
	struct deferred d = {.op = OP_GETATTR, .ino = ino, .has_fi = fi != NULL};

	if (fi)
		d.fi = *fi;
	fs_answer(req, d);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_answer(req, (struct deferred){.op = OP_OPENDIR, .ino = ino, .fi = *fi, .has_fi = true});
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	fs_answer(
	    req,
	    (struct deferred){
		.op = OP_READDIR, .ino = ino, .size = size, .off = off, .fi = *fi, .has_fi = true});
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	fs_answer(req, (struct deferred){.op = OP_READDIRPLUS,
					 .ino = ino,
					 .size = size,
					 .off = off,
					 .fi = *fi,
					 .has_fi = true});
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	unsigned held = tree_hold(fs->tree);
	struct node *node = tree_get(fs->tree, ino);
	bool is_dir = node && tree_node_is_dir(fs->tree, node);

	tree_release(fs->tree, held);
	if (!node && !internal_files_find(fs->internal, ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (is_dir) {
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

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	fs_answer(req, (struct deferred){.op = OP_READ, .ino = ino, .size = size, .off = off});
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
    .open = fs_open,
    .read = fs_read,
    .statfs = fs_statfs,
};

const struct fuse_lowlevel_ops *fs_operations(void)
{
	return &fs_ops;
}
