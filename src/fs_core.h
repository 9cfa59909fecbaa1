/* fs_core: what the filesystem answers, without FUSE. A directory brought up to date
 * with its resource (sync), a node's attributes (stat), a file's bytes (render from the
 * cached resource). Returns 0 or a negative errno; never sees a fuse_req_t, so it is
 * testable alone.
 *
 * @may_fetch: whether a call may fetch (and wait for the cloud, up to the timeout).
 * Without it, a call that needs a fetch returns -EINPROGRESS at once, so that a FUSE
 * worker answers what the cache holds and hands the rest to a thread that may wait.
 *
 * It owns the file memo: each file node's struct file_memo (the generation, fingerprint
 * and size of its last rendering) and its mtime_wall_us, so that a stat needs no
 * rendering, and a rendering with new bytes is a new mtime. When a file's bytes change,
 * it calls the @changed function given to fs_core_new (the kernel's copy must go).
 *
 * mtimes outlive the mount: what each file and directory showed is kept in a stamps
 * table (stamps.h) in the mount's cache directory (accounts_cache_dir), so a remount
 * shows the same mtime for the same bytes (a directory: the same names). A node never remembered shows its
 * directory's mtime at most (the root: the mount's time).
 *
 * It also keeps the latest renderings (of the files read lately, bounded in count and
 * bytes), so that every chunk of a read of one version is a slice of one rendering:
 * a read of any size costs one parse and one rendering.
 *
 * Thread-safe. Lock order: the rendered lock (the kept renderings) and the tree lock
 * are leaves, never held together, but for the stamps lock, a leaf taken under the tree
 * lock; the session (cache, http) is called with no lock held. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <glib.h>

#include "accounts.h"
#include "provider.h"
#include "session.h"
#include "tree.h"

struct fs_core;

/* Told the inode of a file whose bytes changed; called with no lock held. */
typedef void (*fs_core_changed_fn)(void *data, uint64_t ino);

/* A core over the sessions of @accounts (not owned), with a tree of its own. */
struct fs_core *fs_core_new(struct accounts *accounts, fs_core_changed_fn changed, void *data);
/* Told a node that left its listing and that the kernel holds (parent's inode, its inode
 * and name), children before their directory: the kernel is to forget it. Called with no
 * lock held, from inside a request. Set before any request. */
typedef void (*fs_core_gone_fn)(void *data, uint64_t parent, uint64_t ino, const char *name);
void fs_core_set_gone(struct fs_core *c, fs_core_gone_fn gone, void *data);
void fs_core_free(struct fs_core *c);
struct tree *fs_core_tree(struct fs_core *c);
/* Saves the mtimes shown so far for the next mount (at unmount; fs_core_free does too). */
void fs_core_save(struct fs_core *c);
struct accounts *fs_core_accounts(struct fs_core *c);

/* A node's raw path, as the provider takes it, and the session that serves it (NULL:
 * none, or the accounts' own directory: accounts.h). */
struct node_path {
	char **comp;
	struct provider_path pp;
	struct session *session;
};
void node_path_init(struct fs_core *c, struct node *node, struct node_path *np);
void node_path_clear(struct node_path *np);
/* The resource @node is made from, in *ref (ref->path NULL: a static node, or with
 * np->session NULL a directory the accounts list), and its path in *np; clear both
 * whatever it returns. -ENOENT: no such path. */
int fs_core_source(struct fs_core *c, struct node *node, struct resource_ref *ref,
		   struct node_path *np);

/* Directory @ino with its children brought up to date (fetching its listing when stale)
 * in *ret_dir. Its resource goes to @listing when not NULL (gen 0: a static directory;
 * resource_clear it). -ENOENT, -ENOTDIR, or the session's errors. */
int fs_core_dir(struct fs_core *c, uint64_t ino, struct resource *listing, bool may_fetch,
		struct node **ret_dir);

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
 * *ret_timeout_s: how long the kernel may keep it (a file: while its resource is fresh;
 * one checked as told: not at all). */
int fs_core_stat(struct fs_core *c, struct node *node, enum stat_how how, bool may_fetch,
		 struct stat *st, double *ret_timeout_s);
/* Fills @st for a file of inode @ino, @size bytes, changed at @mtime_wall_us. */
void fs_core_file_stat(struct fs_core *c, uint64_t ino, size_t size, gint64 mtime_wall_us,
		       struct stat *st);
/* How long the kernel may keep directory @dir's entry, attributes and negative entries. */
double fs_core_dir_timeout_s(struct fs_core *c, struct node *dir);

/* The bytes of provider file @node as they are now (a reference, g_bytes_unref),
 * rendered from its resource, fetched when stale; the memo notes them. -EIO for an
 * internal file (read through its rendering). */
int fs_core_read(struct fs_core *c, struct node *node, bool may_fetch, GBytes **ret_bytes);
/* The bytes of file @node in the generation the kernel was last told (the memo's), from
 * what the cache holds now, without fetching; their generation in *ret_gen. -ESTALE
 * when the cache holds another generation or other bytes, -ENOENT when nothing. */
int fs_core_told_bytes(struct fs_core *c, struct node *node, GBytes **ret_bytes, uint64_t *ret_gen);
/* Whether file @node is made of history (a paged or an immutable resource) that the cache
 * does not hold:
 * a listing shows such a file without its attributes, so that listing costs no call. */
bool fs_core_costly(struct fs_core *c, struct node *node);
/* Whether the kernel was last told of generation @gen of file @node. */
bool fs_core_is_told(struct fs_core *c, struct node *node, uint64_t gen);
