/* fs: the libfuse low-level operations, one fs_<op> a request, each replying exactly
 * once on every path. A node's bytes come from its provider's rendering of one cached
 * resource; an open file keeps the bytes it saw (a snapshot). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
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
	gint64 mounted_at;
};

struct open_file {
	GBytes *data;
};

struct open_dir {
	GArray *entries; /* struct tree_dirent */
};

struct fs *fs_new(struct session *session)
{
	struct fs *fs = g_new0(struct fs, 1);

	fs->session = session;
	fs->tree = tree_new();
	fs->uid = getuid();
	fs->gid = getgid();
	fs->mounted_at = g_get_real_time() / G_USEC_PER_SEC;
	return fs;
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	tree_free(fs->tree);
	g_free(fs);
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

/* Brings @dir's children up to date with its resource. */
static int fs_sync_dir(struct fs *fs, struct node *dir)
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
			struct node *n = tree_add_child(fs->tree, dir, STATUS_FILE, false);
			n->internal = true;
			n = tree_add_child(fs->tree, dir, METRICS_FILE, false);
			n->internal = true;
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
			struct node *internal = tree_add_child(fs->tree, dir, INTERNAL_DIR, true);
			internal->internal = true;
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
			dir->mtime = res.changed_at;
			tree_unlock(fs->tree);
		} else {
			log_warn("cannot list %s from %s: %s", np.pp.n ? np.comp[np.pp.n - 1] : "/",
				 ref.path, g_strerror(-r));
		}
	}
out:
	resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* Renders file @node now. *gen is the resource generation (0 for internal files). */
static int fs_render(struct fs *fs, struct node *node, GBytes **data, uint64_t *gen,
		     gint64 *changed_at)
{
	const struct provider *p = session_provider(fs->session);
	struct resource_ref ref = {0};
	struct node_path np = {0};
	struct resource res = {0};
	GString *out = g_string_new(NULL);
	int r;

	*gen = 0;
	*changed_at = g_get_real_time() / G_USEC_PER_SEC;
	if (node_is_internal(node)) {
		if (strcmp(node->name, STATUS_FILE) == 0)
			session_render_status(fs->session, out);
		else
			session_render_metrics(fs->session, out);
		r = 0;
		goto out;
	}
	r = node_source(fs, node, &ref, &np);
	if (r < 0)
		goto out;
	if (!ref.path) {
		r = -EIO;
		goto out;
	}
	r = session_get(fs->session, &ref, &res);
	if (r < 0)
		goto out;
	json_t *body = resource_json(&res);
	r = body ? p->render(&np.pp, body, out) : -EIO;
	json_decref(body);
	*gen = res.gen;
	*changed_at = res.changed_at;
out:
	if (r == 0)
		*data = g_string_free_to_bytes(out);
	else
		g_string_free(out, TRUE);
	resource_clear(&res);
	resource_ref_clear(&ref);
	node_path_clear(&np);
	return r;
}

/* Records what @node's bytes are now; true when they differ from what was seen before. */
static bool fs_note_content(struct fs *fs, struct node *node, GBytes *data, uint64_t gen,
			    gint64 changed_at)
{
	uint64_t hash = content_hash(data);
	bool changed;

	tree_lock(fs->tree);
	changed = node->content_gen && node->content_hash != hash;
	if (!node->content_gen || changed)
		node->mtime = changed_at;
	node->content_gen = gen ? gen : 1;
	node->content_hash = hash;
	node->size = g_bytes_get_size(data);
	tree_unlock(fs->tree);
	return changed;
}

static double fs_timeout(struct fs *fs, struct node *node)
{
	if (node_is_internal(node))
		return 0;
	const struct options *o = session_options(fs->session);
	int ttl = o->ttl >= 0 ? o->ttl : session_provider(fs->session)->default_ttl;
	return ttl;
}

/* Fills @st for @node, rendering a file when its resource changed since the last time. */
static int fs_stat_node(struct fs *fs, struct node *node, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = node->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;

	if (node->is_dir) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		tree_lock(fs->tree);
		st->st_mtime = node->mtime ? node->mtime : fs->mounted_at;
		tree_unlock(fs->tree);
		st->st_ctime = st->st_atime = st->st_mtime;
		return 0;
	}

	bool fresh_memo = false;
	if (!node_is_internal(node)) {
		struct resource_ref ref = {0};
		struct node_path np = {0};
		int r = node_source(fs, node, &ref, &np);
		if (r == 0 && ref.path) {
			struct resource res = {0};
			r = session_get(fs->session, &ref, &res);
			if (r == 0) {
				tree_lock(fs->tree);
				fresh_memo = node->content_gen == res.gen;
				tree_unlock(fs->tree);
			}
			resource_clear(&res);
		}
		resource_ref_clear(&ref);
		node_path_clear(&np);
		if (r < 0)
			return r;
	}
	if (!fresh_memo) {
		GBytes *data = NULL;
		uint64_t gen;
		gint64 changed_at;
		int r = fs_render(fs, node, &data, &gen, &changed_at);
		if (r < 0)
			return r;
		fs_note_content(fs, node, data, gen, changed_at);
		g_bytes_unref(data);
	}
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	tree_lock(fs->tree);
	st->st_size = (off_t)node->size;
	st->st_mtime = node->mtime;
	tree_unlock(fs->tree);
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_ctime = st->st_atime = st->st_mtime;
	return 0;
}

static int fs_fill_entry(struct fs *fs, struct node *node, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	int r = fs_stat_node(fs, node, &e->attr);
	if (r < 0)
		return r;
	e->ino = node->ino;
	e->generation = 1;
	e->attr_timeout = fs_timeout(fs, node);
	e->entry_timeout = fs_timeout(fs, node);
	return 0;
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Page-cache data is dropped when a getattr shows a new mtime or size. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *dir = tree_get(fs->tree, parent);
	struct fuse_entry_param e;
	int r;

	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return;
	}
	r = fs_sync_dir(fs, dir);
	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return;
	}
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
		e.entry_timeout = node_is_internal(dir) ? 0 : fs_timeout(fs, dir);
		fuse_reply_entry(req, &e);
		return;
	}
	r = fs_fill_entry(fs, node, &e);
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_entry(req, &e);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* Nodes live until unmount, so an inode number never changes its meaning. */
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *node = tree_get(fs->tree, ino);
	struct stat st;
	int r;

	if (!node) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	r = fs_stat_node(fs, node, &st);
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_attr(req, &st, fs_timeout(fs, node));
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node *dir = tree_get(fs->tree, ino);
	int r;

	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return;
	}
	r = fs_sync_dir(fs, dir);
	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return;
	}
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
			 * attributes cannot be had now. */
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
	GBytes *data = NULL;
	uint64_t gen;
	gint64 changed_at;
	int r;

	if (!node) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (node->is_dir) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	r = fs_render(fs, node, &data, &gen, &changed_at);
	if (r < 0) {
		fuse_reply_err(req, fs_errno(r));
		return;
	}
	if (node_is_internal(node)) {
		/* Counters change between stat and read: let the reader see all bytes. */
		fi->direct_io = 1;
	} else {
		bool changed = fs_note_content(fs, node, data, gen, changed_at);
		/* The page cache holds these very bytes unless they changed since. */
		fi->keep_cache = !changed;
		if (changed)
			fi->direct_io = 1;
	}
	struct open_file *of = g_new0(struct open_file, 1);
	of->data = data;
	fi->fh = (uint64_t)(uintptr_t)of;
	if (fuse_reply_open(req, fi) != 0) {
		g_bytes_unref(of->data);
		g_free(of);
	}
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	/* Our own reference: once the kernel has the reply, a release may free @of in
	 * another thread while fuse_reply_buf (and ASan's writev check) still reads. */
	g_autoptr(GBytes) bytes = g_bytes_ref(of->data);
	gsize len = 0;
	const char *data = g_bytes_get_data(bytes, &len);

	if (off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	fuse_reply_buf(req, data + off, MIN(size, len - (size_t)off));
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;

	g_bytes_unref(of->data);
	g_free(of);
	fuse_reply_err(req, 0);
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
	.release = fs_release,
	.statfs = fs_statfs,
};

const struct fuse_lowlevel_ops *fs_operations(void)
{
	return &fs_ops;
}
