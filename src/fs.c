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
 * Modules below it: fs_core (sync, stat, render), prefetch, notify, internal_files. */
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
#include "prefetch.h"

struct fs {
	struct fs_core *core;
	struct tree *tree; /* the core's */
	struct internal_files *internal;
	struct prefetch *prefetch;
	struct notify *notify;
	struct fuse_session *se; /* set before the loop starts, then read only */
	bool no_open;		 /* the kernel sends no open/release for files; set in init */
};

struct open_dir {
	GArray *entries; /* struct tree_dirent */
};

/* fs_core's changed function: the kernel's attributes and pages of @ino go. */
static void fs_content_changed(void *data, uint64_t ino)
{
	struct fs *fs = data;

	notify_inval(fs->notify, ino);
}

struct fs *fs_new(struct session *session)
{
	struct fs *fs = g_new0(struct fs, 1);

	fs->core = fs_core_new(session, fs_content_changed, fs);
	fs->tree = fs_core_tree(fs->core);
	fs->internal = internal_files_new(session);
	fs->prefetch = prefetch_new(fs->core);
	fs->notify = notify_new(fs->core);
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

static int fs_fill_entry(struct fs *fs, struct node *node, struct fuse_entry_param *e)
{
	double timeout_s;

	memset(e, 0, sizeof(*e));
	int r = fs_core_stat(fs->core, node, STAT_NOW, &e->attr, &timeout_s);
	if (r < 0)
		return r;
	e->ino = node->ino;
	e->generation = 1;
	e->attr_timeout = timeout_s;
	e->entry_timeout = timeout_s;
	return 0;
}

static void fs_rendering_stat(struct fs *fs, const struct rendering *rd, struct stat *st)
{
	fs_core_file_stat(fs->core, rd->node->ino, g_bytes_get_size(rd->bytes), rd->mtime_wall_us,
			  st);
}

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
	prefetch_stop(fs->prefetch);
	notify_stop_soon(fs->notify);
	if (fs->se && !notify_ended(fs->notify))
		fs_answer_until_notify_ends(fs);
	notify_stop(fs->notify);
}

static void fs_destroy(void *userdata)
{
	fs_stop(userdata);
}

/* The directory @ino brought up to date, or NULL after replying the error to @req.
 * @listing: as for fs_core_dir. */
static struct node *fs_synced_dir(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
				  struct resource *listing)
{
	struct node *dir = NULL;
	int r = fs_core_dir(fs->core, ino, listing, &dir);

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
	if (!node || tree_node_gone(fs->tree, node)) {
		/* A negative entry the kernel may keep as long as a listing is fresh. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs_core_dir_timeout_s(fs->core, dir);
		fuse_reply_entry(req, &e);
		return;
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
	struct fs *fs = fuse_req_userdata(req);

	internal_files_forget(fs->internal, ino, nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fuse_req_userdata(req);

	for (size_t i = 0; i < count; i++)
		internal_files_forget(fs->internal, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : internal_files_find(fs->internal, ino);
	struct stat st;
	double timeout_s;
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
	r = fs_core_stat(fs->core, node, fi ? STAT_AS_TOLD : STAT_NOW, &st, &timeout_s);
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_attr(req, &st, timeout_s);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct resource listing = {0};
	struct node *dir = fs_synced_dir(req, fs, ino, &listing);

	if (!dir)
		return;
	prefetch_listing(fs->prefetch, dir, &listing);
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
			struct tree_dirent *d =
			    &g_array_index(od->entries, struct tree_dirent, i - 2);
			name = d->name;
			e.attr.st_ino = d->ino;
			e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
			struct node *child = plus ? tree_get(fs->tree, d->ino) : NULL;
			/* ino 0 tells the kernel to look the entry up itself when its
			 * attributes cannot be had now, or, for an internal file, should be
			 * had at the open. */
			if (child && !d->is_dir && child->internal)
				child = NULL;
			if (child && fs_fill_entry(fs, child, &e) < 0) {
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->ino;
				e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
			}
		}
		if (plus)
			need =
			    fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
		else
			need =
			    fuse_add_direntry(req, buf + used, size - used, name, &e.attr, i + 1);
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

	if (!node && !internal_files_find(fs->internal, ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (node && tree_node_is_dir(fs->tree, node)) {
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
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);
	struct rendering *rd = node ? NULL : internal_files_find(fs->internal, ino);
	g_autoptr(GBytes) bytes = rd ? g_bytes_ref(rd->bytes) : NULL;
	gsize len = 0;
	int r = rd ? 0 : node ? fs_core_read(fs->core, node, &bytes) : -ENOENT;

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
		notify_fill_around(fs->notify, node);
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
