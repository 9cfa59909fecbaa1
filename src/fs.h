/* fs: the mount's FUSE face — the libfuse low-level operations over fs_core, and the
 * threads behind them (prefetch, notify, the fetch pool), for the sessions of a mount
 * (accounts.h: one account, or all).
 *
 * Modules, each arrow pointing down: fs (fs.c) -> prefetch, notify -> fs_core ->
 * internal_files -> accounts -> session; fs -> history_fill -> accounts, session; fs
 * also calls internal_files, accounts and tree, and prefetch and fs_core call session
 * and tree (docs/design.md, "Modules and their arrows").
 *
 * Lock order of the filesystem: no fs lock is ever held while another lock of ours is
 * taken, nor across a session call. Each is a leaf, with only GLib's own queue or pool
 * lock under it: the fetch lock (fs.c), the prefetch lock, the notify lock, the
 * internal_files lock, the history fill's lock and fs_core's rendered lock; the tree
 * lock has only the stamps lock under it (an mtime is settled with the memo). The
 * session's locks (session, cache, json memo) are taken by the session's calls, always
 * without an fs lock held; the one for large bodies (session_large_begin) is taken
 * before any. Threads: libfuse's workers, the fetch pool (options.max_threads), the
 * prefetch pool (options.prefetch), the notify thread and the history fill. */
#pragma once

#include <fuse_lowlevel.h>

struct accounts;
struct fs;

/* A filesystem serving the sessions of @accounts (not owned). */
struct fs *fs_new(struct accounts *accounts);
void fs_free(struct fs *fs);
/* The operations table for fuse_session_new(), with @fs as userdata. */
const struct fuse_lowlevel_ops *fs_operations(void);
/* Tells the filesystem its FUSE session (for notices to the kernel), before the loop. */
void fs_set_fuse_session(struct fs *fs, struct fuse_session *se);
/* Saves the mtimes shown for the next mount, and ends the threads behind the operations
 * (prefetch, notify). Call when the loop has ended and before fuse_session_unmount: a
 * notice to the kernel must not be in flight while the mount goes (it may wait for a
 * page that only an answer unlocks, and this answers requests until it is done). Called
 * again at destroy, harmlessly. */
void fs_stop(struct fs *fs);
