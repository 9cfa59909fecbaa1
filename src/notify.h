/* notify: what the kernel is told about files outside of any request, by one thread of
 * its own: invalidations (a file's bytes changed: its attributes and pages go) and page
 * fills (notify_store of bytes the cache holds, the readahead across files), and
 * deletions (a node left its listing: the kernel is to forget it). A notice
 * for an inode must not be sent from inside a request on that inode (the kernel may
 * hold the inode's lock while it waits for our reply), hence the thread; one thread, so
 * that notices about one file keep their order. Invalidations overtake queued fills.
 *
 * Readahead across files: a read from a file's start has the files beside it, and those
 * of the next NOTIFY_FILL_AHEAD directories, put in the page cache from what the cache
 * holds, so that cat, tar and backups read them without a request. Only files the
 * kernel was told of (looked up or listed), in the generation it was told, and nothing
 * is fetched for it.
 *
 * Thread-safe. Lock order: the notify lock has nothing under it but GAsyncQueue's own
 * lock (a notice is queued under it, so that none is queued after notify_stop_soon); the
 * thread calls fs_core (tree lock, session) and the kernel with no lock held. */
#pragma once

#include <fuse_lowlevel.h>

#include "fs_core.h"

/* How many directories after the one being read have their files put in the page
 * cache ahead of the reader. */
#define NOTIFY_FILL_AHEAD 8

struct notify;

/* A notifier for @core (not owned); no thread runs before notify_start. */
struct notify *notify_new(struct fs_core *core);
/* Ends the thread (notify_stop) and frees. */
void notify_free(struct notify *n);
/* Starts the thread, telling the kernel through @se. Call after libfuse's fork. */
void notify_start(struct notify *n, struct fuse_session *se);
/* Asks the thread to end, without waiting: queued notices are dropped, nothing more is
 * queued, the one being sent is finished. */
void notify_stop_soon(struct notify *n);
/* Whether the thread has ended (or never started). */
bool notify_ended(struct notify *n);
/* Ends the thread and waits for it: nothing is sent after it returns. A notice being
 * sent may wait for a page the kernel locked for a read: let the reads be answered
 * until notify_ended. Harmless when not started or called again. */
void notify_stop(struct notify *n);
/* Has the kernel drop inode @ino's attributes and pages; nothing before notify_start. */
void notify_inval(struct notify *n, uint64_t ino);
/* Tells the kernel that node @ino, named @name in directory @parent, is deleted (it left
 * its listing): its dentry goes and, when nobody has it open, the inode too, which the
 * kernel then forgets (FORGET), so the tree may free the node. Nothing before
 * notify_start. */
void notify_delete(struct notify *n, uint64_t parent, uint64_t ino, const char *name);
/* After file @node was read from its start: the readahead across files. */
void notify_fill_around(struct notify *n, struct node *node);
