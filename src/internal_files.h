/* internal_files: the files of .smarthomefs/ (status.json, metrics), rendered by the
 * accounts from their sessions' counters. Their bytes change with every request the mount makes, so
 * every lookup renders them, and bytes that differ from the latest rendering become a
 * FUSE node of their own (struct rendering), which a file open since keeps: a true
 * snapshot with an exact size, while the next open sees the new bytes.
 *
 * Thread-safe. Lock order: the internal_files lock is a leaf (rendering happens
 * before it is taken). */
#pragma once

#include <stdint.h>
#include <glib.h>

/* The names, spelt once: the directory under the mount's root, and its files. */
#define INTERNAL_DIR                                                                               \
	"."                                                                                        \
	"smarthomefs"
#define INTERNAL_STATUS	 "status.json"
#define INTERNAL_METRICS "metrics"

struct accounts;
struct tree;
struct node;
struct internal_files;

/* One rendering of an internal file. Its FUSE node id is its address; st_ino stays the
 * path's (node->ino). It lives until the kernel forgets it (nlookup back to 0) or
 * internal_files_free. All fields but nlookup are set once. */
struct rendering {
	struct node *node;
	GBytes *bytes;
	uint64_t hash;
	gint64 mtime_wall_us; /* when the file's bytes last changed */
	uint64_t nlookup;     /* (internal_files lock) the lookups the kernel has not forgotten */
	uint64_t generation;  /* FUSE generation: an address may come back for a later one */
};

/* Renderings of the internal files of @accounts' mount (not owned). */
struct internal_files *internal_files_new(struct accounts *accounts);
void internal_files_free(struct internal_files *f);
/* Adds INTERNAL_DIR under @t's root, and its files below it; returns the directory. */
struct node *internal_files_add(struct tree *t);
/* The rendering a lookup of internal file @node answers with (a new one unless the bytes
 * are the latest's), with one more lookup counted; never NULL, owned by @f. */
struct rendering *internal_files_lookup(struct internal_files *f, struct node *node);
/* The rendering whose FUSE node id is @id, or NULL. It stays valid for the request that
 * names it: the kernel sends no FORGET for a node while a request on it waits. */
struct rendering *internal_files_find(struct internal_files *f, uint64_t id);
/* The kernel forgot @n lookups of node id @id: a rendering it no longer holds goes. */
void internal_files_forget(struct internal_files *f, uint64_t id, uint64_t n);
