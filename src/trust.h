/* trust: what smarthomefs accepts from the file system that another local user could
 * have put there. A directory of ours (runtime, state, cache) must be owned by the
 * caller and writable by nobody else, and so must every directory above it be owned by
 * the caller or root and writable by nobody else unless sticky (/tmp): otherwise another
 * user could swap it. A file of ours (lock, tokens) is opened without following a link
 * and must be a regular file owned by the caller that nobody else may write. A file we
 * only read (cafile) may be root's, and may be reached through a link.
 * Errors are -errno with @err saying what is wrong, where, and what to do. Thread-safe. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

/* Creates @path (0700, and any missing parents 0700) or checks the one there. */
int trust_private_dir(const char *path, GError **err);
/* Checks @path when it exists, else the directories above it, which it would be made
 * in; never creates anything. */
int trust_check_dir(const char *path, GError **err);
/* Opens @path with @flags (O_NOFOLLOW and O_CLOEXEC added; @mode with O_CREAT) and checks
 * the file. Returns the fd, -ENOENT when it does not exist (no @err), or -errno. */
int trust_open_private(const char *path, int flags, mode_t mode, GError **err);
/* Checks a file we only read: regular, owned by the caller or root, writable by nobody
 * else. Follows links (a CA bundle often is one). */
int trust_check_readable(const char *path, GError **err);
