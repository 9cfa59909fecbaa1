/* stamps: what each file and directory of a mount showed — a fingerprint of its bytes
 * (of a directory: its listing), its size and its mtime — kept on disk beside the cache,
 * so that a remount shows the same mtime for the same bytes.
 *
 * Why: a file's mtime is when its bytes last changed. Within a mount the tree remembers
 * it; a new mount knows only when its resource last changed, and one resource feeds
 * many files (tado's zoneStates feeds every zone's state.json): without this table every
 * file of a resource that changed, and every directory, would look changed to rsync,
 * restic and tar after a remount.
 *
 * Where: this mount's stamps are the nodes' own (the memo of tree.h and the node's mtime:
 * no second table in memory); the caller hands them over at each save (collect). The
 * last mount's table is the file itself, mapped read-only at open (its pages are the
 * file's, which the kernel may drop, not the heap's), searched by inode number.
 *
 * Keys are inode numbers, which derive from the path (tree.h) and so are the same in
 * every mount. There is no ctime here: the filesystem reports ctime = mtime (the bytes
 * are the only thing of a node that ever changes).
 *
 * On disk: <dir>/stamps, created 0600 in a directory created 0700, replaced atomically
 * (g_file_set_contents_full) by a saver thread at most every save_delay after a change,
 * and by stamps_flush and stamps_free. Read once, at stamps_open: a file that is not a
 * regular file of ours, is writable by others, or is not well formed (header, length,
 * order, checksum) is ignored with a log line, and replaced at the next save.
 *   "smarthomefs stamps 1\n", u64 count, count × {u64 ino, hash, size; i64 mtime_wall_us}
 *   sorted by ino, u64 FNV-1a (fnv.h) of those records; integers little-endian.
 *
 * Bounded: a save writes the nodes the mount holds now (a node freed, gone from its
 * listing, takes its stamp with it), then the last mount's records that no node of this
 * one settled: all of them while the file stays under three quarters of STAMPS_MAX, else
 * only those this mount looked at; never more than STAMPS_MAX (logged once): a node left
 * out shows its resource's change time after a remount, as without the table.
 *
 * Thread safety: every function is thread-safe; one mutex guards the table, and no
 * function calls out while holding it, so callers may hold their own locks (the tree's).
 * A save calls collect without it, from the saver thread or the caller of stamps_flush
 * and stamps_free. The saver thread starts at the first change, so a table opened before
 * a fork is fine if nothing changes before it. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#define STAMPS_MAX (1u << 18)

struct stamps;

/* One node's stamp, as saved. */
struct stamp {
	uint64_t ino;
	uint64_t hash;
	uint64_t size;
	gint64 mtime_wall_us; /* unix µs */
};

/* Puts in @out the stamps of the nodes shown now that have one, at most @max; returns
 * how many. With @out NULL: how many nodes there are (at most that many stamps). */
typedef size_t (*stamps_collect_fn)(void *data, struct stamp *out, size_t max);

/* A table read from @dir/stamps (@dir created 0700 when missing; NULL: memory only),
 * saved at most every @save_delay_us (monotonic µs) after a change, with the stamps
 * @collect gives. Never fails: a directory that cannot be ours is logged, and the table
 * then lives in memory only. */
struct stamps *stamps_open(const char *dir, gint64 save_delay_us, stamps_collect_fn collect,
			   void *data);
/* Saves what changed, ends the saver thread, frees. */
void stamps_free(struct stamps *st);
/* Saves what changed now (at unmount, before waiting for anything else). Returns 0 or
 * -EIO (logged). */
int stamps_flush(struct stamps *st);

/* The mtime (unix µs) that node @ino shows the first time this mount settles it, for
 * bytes fingerprinted @hash, @size long, whose resource last changed at
 * @changed_at_wall_us: the one the last mount showed for these very bytes; else, for a
 * node the last mount did not show, the earlier of @changed_at_wall_us and
 * @first_seen_wall_us (when its directory first showed it; G_MAXINT64: unknown); else
 * (other bytes, or a node this mount settled before and freed since)
 * @changed_at_wall_us, made later than the last mount's. */
gint64 stamps_settle(struct stamps *st, uint64_t ino, uint64_t hash, uint64_t size,
		     gint64 changed_at_wall_us, gint64 first_seen_wall_us);
/* The mtime of a node settled before in this mount, which showed @shown_wall_us, whose
 * bytes changed now (the resource's at @changed_at_wall_us): never earlier than the one
 * shown; to be saved. */
gint64 stamps_change(struct stamps *st, gint64 shown_wall_us, gint64 changed_at_wall_us);
/* The mtime the last mount showed for @ino, whatever its bytes now, or 0: for a
 * directory stat'd before its listing is read. */
gint64 stamps_peek(struct stamps *st, uint64_t ino);
/* How many stamps the file holds (after the last save, or as read at open). */
size_t stamps_saved(struct stamps *st);
