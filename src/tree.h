/* tree: the nodes a mount shows, their inode numbers and names.
 *
 * A node is created the first time its parent is listed or looked up. Inode numbers are
 * derived from the path (a 64-bit hash), so they stay the same across remounts and when a
 * node is freed and made again; a collision takes the next free number.
 *
 * Lifetime: a node that leaves its listing is marked gone (and all below it). The kernel
 * holds lookups of a node (FUSE's lookup count: fs counts each entry it answers with
 * tree_ref and each FORGET with tree_forget); a gone node the kernel holds none of, with
 * no child left, leaves the index at once, or at its last FORGET, and its memory is
 * reused once no thread may still hold it: every thread that keeps node pointers does so
 * inside tree_hold .. tree_release, and a node unlinked is freed only after every section
 * that began before has ended. So ids that change on every listing cost only the nodes
 * alive at once. A gone node the kernel still holds stays in its directory's order
 * (unlisted), and comes back with its number if it is listed again.
 *
 * Names: an id that is not a safe file name is escaped reversibly (tree_escape_name).
 * The node keeps the raw id for the provider.
 *
 * Escaping, byte by byte: '/', '%', bytes below 0x20 and 0x7f become "%XX" (upper-case
 * hex), and so does each byte of the UTF-8 of a C1 control (U+0080..U+009F, NEL
 * among them), U+2028, U+2029 and the bidi controls (U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069), which would make a name print as another or break a line; every byte of "." and
 * ".." does ("%2E", "%2E%2E"); the empty id is "%" alone (which no other id can give, as '%' is
 * always escaped). All other bytes stay, invalid UTF-8 included (Linux names are bytes). An escaped
 * name over 255 bytes is cut at a character and escape boundary at or before byte 200 and ends in
 * "%~" and 16 hex digits of the SHA-256 of the whole raw id; such a name does not unescape.
 *
 * Internal nodes (the directory tree_add_internal_dir adds under the root, and all
 * below it) are served by fs, not the provider: tree_set_children on the root never
 * marks them gone nor lets a provider entry of the same name replace them; they stay
 * listed after the provider's entries. They are never freed.
 *
 * Memory (a mount may hold 100 000 nodes): nodes are carved from slabs with their
 * names inline (a freed one's piece is reused by the next of its size); the tree finds
 * them through one tree-wide index by inode number, and a child of a directory by the
 * inode number its path hashes to (then the next ones, as a collision did when it was
 * made); a directory keeps only its listing order, as an array, where a file keeps its
 * memo, which also holds what the stamps table saves for the next mount. Nodes point to
 * each other (a parent, a listing order, the index) by a 32-bit node ref, not a 64-bit
 * pointer: a slab is 64 KiB aligned to its size and begins with its number, so a
 * node's ref is that number and its offset in eighths, and a ref is a node again through
 * the tree's table of slabs. With 100 000 nodes that is 1.2 MB less than pointers.
 *
 * Thread safety: every function takes the tree's lock (a plain mutex: no function is
 * called with it held, so it is never taken twice); the fields marked (lock) may only
 * be read or written with tree_lock held, or through the accessor functions. Fields
 * not marked are set when the node is made and never change.
 *
 * Lock order: the tree lock is a leaf but for the stamps table's (a leaf below it, so
 * that a node's mtime is settled with its memo). Whoever holds it calls nothing else that
 * takes a lock (no session, cache or fs lock is taken under it). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include "provider.h"

struct tree;

/* What fs_core remembers of a file's last rendering, so that a stat needs no rendering,
 * and a remount the same mtime for the same bytes (stamps.h). fs_core's alone to read
 * and write (with tree_lock held); the tree only zeroes it when the node is made or
 * turns from a directory into a file (a new file has no rendering). Packed, as is a
 * directory's part, so that a node takes 50 bytes before its name. */
struct __attribute__((packed)) file_memo {
	uint64_t gen;  /* resource generation it was rendered from; 0: none */
	uint64_t hash; /* fnv1a_64 of the bytes */
	uint32_t size; /* a rendering is far below 4 GiB (bodies are capped at 16 MiB) */
};

struct node {
	uint64_t ino;
	/* (lock) wall clock µs: when this file's bytes or this directory's listing last
	 * changed; written by fs_core. */
	gint64 mtime_wall_us;
	/* (lock) what a file or a directory keeps, never both: is_dir says which, so check
	 * it with the lock held before touching these. A node that changes kind starts
	 * over (the children of a former directory are gone). */
	union {
		struct file_memo memo; /* a file's: fs_core's, see struct file_memo */
		struct __attribute__((packed)) {
			uint64_t listed_gen; /* resource generation of the last listing */
			uint32_t *order;     /* children in listing order (n_order of them, as
					      * node refs: tree_order_at), live ones first, then
					      * gone ones the kernel holds */
			uint32_t n_order;
		};
	};
	uint32_t parent_ref; /* the parent's node ref (tree_parent), 0 for the root */
	uint32_t nlookup; /* (lock) the kernel's lookup count (tree_ref, tree_forget) */
	uint8_t marks;	  /* (lock) a directory's bits for the modules above (tree_mark) */
	uint8_t tick;	  /* (lock) a directory's time, the caller's clock (tree_tick_set) */
	bool is_dir;	  /* (lock) to change it; a file's kind may change on a listing */
	bool internal;	  /* under .smarthomefs: served by the session, not the provider */
	bool gone;	  /* (lock) the resource no longer lists it */
	bool raw_follows; /* the raw name differs from name and follows it in name[] */
	char name[];	  /* escaped, what the user sees; then the raw name if raw_follows */
};

struct tree *tree_new(void);
/* For tests: a tree whose inode numbers come from only the low @bits bits of the path
 * hash, so that paths collide. tree_new() is tree_new_hash_bits(64). */
struct tree *tree_new_hash_bits(unsigned bits);
void tree_free(struct tree *t);
struct node *tree_root(struct tree *t);
/* @node's directory, or NULL for the root (no lock: it never changes). */
struct node *tree_parent(struct tree *t, const struct node *node);
/* Child @i (< dir->n_order) of directory @dir's listing order; caller holds the lock. */
struct node *tree_order_at(struct tree *t, const struct node *dir, uint32_t i);
/* The node with inode @ino, or NULL. */
struct node *tree_get(struct tree *t, uint64_t ino);
/* The child of @dir named @name (escaped), or NULL; gone nodes are returned too. */
struct node *tree_child(struct tree *t, struct node *dir, const char *name);
/* Makes the children of @dir exactly @entries (raw names) in that order: new ones are
 * created, missing ones marked gone (and unlinked unless the kernel holds them), present
 * ones revived. Records @gen. */
void tree_set_children(struct tree *t, struct node *dir, GPtrArray *entries, uint64_t gen);
/* tree_set_children, and the children it marked gone now are appended to @ret_gone (valid
 * until the caller's section ends). True when the names, their order or a kind changed. */
bool tree_set_children_gone(struct tree *t, struct node *dir, GPtrArray *entries, uint64_t gen,
			    GPtrArray *ret_gone);
/* Adds one child (raw name) if not there (a gone one comes back); returns it, or NULL
 * when @dir is no directory. */
struct node *tree_add_child(struct tree *t, struct node *dir, const char *raw, bool is_dir);
/* Adds directory @raw under the root as an internal node (see above); returns it. */
struct node *tree_add_internal_dir(struct tree *t, const char *raw);
/* A section in which the caller may hold node pointers (from tree_get, tree_child, a
 * listing ...): no node unlinked after it began is freed before it ends. Returns what
 * tree_release takes. Sections may nest; pointers never outlive them. */
unsigned tree_hold(struct tree *t);
void tree_release(struct tree *t, unsigned held);
/* The kernel now holds one more lookup of @node (an entry is about to be answered with
 * it): false, counting nothing, when @node has left the tree. */
bool tree_ref(struct tree *t, struct node *node);
/* The kernel forgot @n lookups of inode @ino (FORGET): a gone node it no longer holds,
 * and what waited for it, leave the tree. */
void tree_forget(struct tree *t, uint64_t ino, uint64_t n);
/* A node the kernel holds, with what it knows it by. */
struct tree_held {
	uint64_t parent; /* the directory's inode */
	uint64_t ino;
	char *name; /* g_free */
};
/* Appends to @out (of struct tree_held) gone node @node and the gone nodes below it that
 * the kernel still holds, children before their directory: what to tell the kernel is
 * deleted, so that it forgets them. */
void tree_held_below(struct tree *t, struct node *node, GArray *out);
/* The bytes of the tree's slabs (its nodes, their names and most listing orders: mapped,
 * not malloc's) and of its index. */
size_t tree_memory_bytes(struct tree *t);
/* How many nodes the tree holds (linked; the root included). */
size_t tree_count(struct tree *t);
/* Calls @fn for every node, with the tree lock held (fn takes no lock but a leaf). */
void tree_for_each(struct tree *t, void (*fn)(struct node *n, void *data), void *data);
/* What the modules above remember of a directory's listing, in the node rather than in
 * tables of their own (which grew with every directory ever listed): */
enum tree_mark {
	TREE_MARK_FILLED = 1,	  /* notify put its files in the page cache */
	TREE_MARK_PREFETCHED = 2, /* prefetch queued its entries */
};
/* Sets @mark on directory @dir for its listing of generation @gen; returns whether it was
 * not set yet (true, and nothing kept, when @gen is not @dir's listing now: a new
 * listing clears every mark). */
bool tree_mark(struct tree *t, struct node *dir, unsigned mark, uint64_t gen);
/* Sets a byte of time kept in directory @dir (a coarse clock of the caller's) to @now. */
void tree_tick_set(struct tree *t, struct node *dir, uint8_t now);
/* The byte of time @dir holds in *ret_tick; false when none was set. */
bool tree_tick_get(struct tree *t, struct node *dir, uint8_t *ret_tick);
/* @node's is_dir and gone, read under the lock. */
bool tree_node_is_dir(struct tree *t, struct node *node);
bool tree_node_gone(struct tree *t, struct node *node);
/* Puts in @out the live nodes after @node in its parent's listing order, at most @max;
 * returns how many. */
size_t tree_next_siblings(struct tree *t, struct node *node, struct node **out, size_t max);
/* Copies the names of the live children of @dir, in order, as struct tree_dirent. */
GArray *tree_list(struct tree *t, struct node *dir);

struct tree_dirent {
	uint64_t ino;
	bool is_dir;
	uint32_t pos; /* its position in the directory's listing order */
	char *name;   /* g_free via tree_dirents_free */
};
void tree_dirents_free(GArray *entries);
/* A window of @dir's listing, for a readdir that must not copy it all: the live children
 * from position @from of its listing order, at most @max, into @out (each name g_free);
 * returns how many. A position means the same child as long as the listing does not
 * change. */
size_t tree_list_window(struct tree *t, struct node *dir, size_t from, size_t max,
			struct tree_dirent *out);

/* The provider's name of @node (its raw id): name itself unless it had to be escaped. */
const char *tree_node_raw(const struct node *node);

/* The raw path of @node below the root, for the provider; free with g_strfreev.
 * *n receives the number of components. */
char **tree_raw_path(struct tree *t, struct node *node, size_t *n);

void tree_lock(struct tree *t);
void tree_unlock(struct tree *t);

/* Escapes @raw (of @len bytes) into a safe, unique file name (g_free): "", ".", "..",
 * names with '/', '%', control bytes, or over 255 bytes are escaped with %XX; a name
 * still too long is cut and ends in "%~" and a hash of the whole id. */
char *tree_escape_name(const char *raw, size_t len);
/* The inverse of tree_escape_name for names that were not cut: returns the raw bytes
 * (g_free) and their length in *len, or NULL when @name is not a valid escape or was cut. */
char *tree_unescape_name(const char *name, size_t *len);
/* The stable inode number of a path ("/homes/1001"), never 0 or 1 (1 is the root). */
uint64_t tree_path_ino(const char *path);
