/* fs: the mount's FUSE face — the libfuse low-level operations over fs_core, and the
 * threads behind them (prefetch, notify), for one session. */
#pragma once

#include <fuse_lowlevel.h>

struct session;
struct fs;

/* A filesystem serving @session (not owned). */
struct fs *fs_new(struct session *session);
void fs_free(struct fs *fs);
/* The operations table for fuse_session_new(), with @fs as userdata. */
const struct fuse_lowlevel_ops *fs_operations(void);
/* Tells the filesystem its FUSE session (for notices to the kernel), before the loop. */
void fs_set_fuse_session(struct fs *fs, struct fuse_session *se);
/* Ends the threads behind the operations (prefetch, notify). Call when the loop has
 * ended and before fuse_session_unmount: a notice to the kernel must not be in flight
 * while the mount goes (it may wait for a page that only an answer unlocks, and this
 * answers requests until it is done). Called again at destroy, harmlessly. */
void fs_stop(struct fs *fs);
