/* fs: the mount's FUSE face — the libfuse low-level operations over fs_core, and the
 * threads behind them (prefetch, notify), for one session. */
#pragma once

#include <fuse_lowlevel.h>

/* The internal directory at the mount's root, and its status file, which `smarthomefs
 * status` reads. */
#define FS_INTERNAL_DIR ".smarthomefs"
#define FS_STATUS_FILE  "status.json"

struct session;
struct fs;

/* A filesystem serving @session (not owned). */
struct fs *fs_new(struct session *session);
void fs_free(struct fs *fs);
/* The operations table for fuse_session_new(), with @fs as userdata. */
const struct fuse_lowlevel_ops *fs_operations(void);
/* Tells the filesystem its FUSE session (for notices to the kernel), before the loop. */
void fs_set_fuse_session(struct fs *fs, struct fuse_session *se);
