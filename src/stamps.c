/* stamps: the table of what each node showed, and its disk copy (see stamps.h).
 *
 * Memory: a mount may have 100 000 nodes, so the table is a sorted array of 32-byte
 * entries (binary search), and the nodes first seen in this mount wait in a hash table
 * until a save, or until there are many of them, merges them in. */
#include "stamps.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fnv.h"
#include "log.h"

#define FILE_NAME  "stamps"
#define MAGIC	   "smarthomefs stamps 1\n"
#define MAGIC_LEN  (sizeof(MAGIC) - 1)
#define HEAD_LEN   (MAGIC_LEN + sizeof(uint64_t))
#define RECORD_LEN (4 * sizeof(uint64_t))

/* What this mount did with a record of the last mount's table (stamps.old_flags). */
enum { OLD_SEEN = 1, OLD_CLAIMED = 2 };

struct stamps {
	char *file; /* NULL: memory only */
	gint64 save_delay_us;
	stamps_collect_fn collect;
	void *collect_data;

	GMutex save_lock; /* orders saves, so an older table never replaces a newer one */
	GMutex lock;	  /* guards every field below */
	GCond wake;	  /* the saver: a change, or the end */
	/* The last mount's table, mapped from the file read at open (its pages are the
	 * file's, not the heap's): n_old records from old_recs, and a byte of OLD_* each. */
	GMappedFile *old;
	const char *old_recs;
	size_t n_old;
	guint8 *old_flags;
	size_t saved;	    /* records in the file now */
	bool dirty;
	gint64 dirty_since_mono_us; /* monotonic */
	bool full_logged;
	bool save_failing; /* the last save failed (and was logged) */
	bool ending;
	GThread *saver;
};

static uint32_t size32(uint64_t size)
{
	return size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
}

static int stamp_cmp(const void *a, const void *b)
{
	const struct stamp *x = a, *y = b;

	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static uint64_t get_u64(const char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return GUINT64_FROM_LE(v);
}


/* Record @i of the last mount's table. */
static struct stamp old_record(const struct stamps *st, size_t i)
{
	const char *rec = st->old_recs + i * RECORD_LEN;

	return (struct stamp){get_u64(rec), get_u64(rec + 8), get_u64(rec + 16),
			      (gint64)get_u64(rec + 24)};
}

/* NULL when @data (@len bytes) is a well-formed table (its records then from @data +
 * HEAD_LEN, their count in *ret_count), or how it is not. */
static const char *check(const char *data, size_t len, size_t *ret_count)
{
	if (len < HEAD_LEN + sizeof(uint64_t) || memcmp(data, MAGIC, MAGIC_LEN) != 0)
		return "not a table of this version";
	uint64_t count = get_u64(data + MAGIC_LEN);
	if (count > STAMPS_MAX || len != HEAD_LEN + count * RECORD_LEN + sizeof(uint64_t))
		return "its length does not match its count";
	const char *rec = data + HEAD_LEN;
	if (fnv1a_64(FNV1A_64_OFFSET, rec, count * RECORD_LEN) != get_u64(rec + count * RECORD_LEN))
		return "its checksum does not match";
	for (uint64_t i = 0; i < count; i++, rec += RECORD_LEN) {
		uint64_t ino = get_u64(rec);
		if (ino == 0 || (gint64)get_u64(rec + 24) < 0 ||
		    (i > 0 && get_u64(rec - RECORD_LEN) >= ino))
			return "its entries are out of order";
	}
	*ret_count = count;
	return NULL;
}

/* Why a file of kind @type (S_IFREG, S_IFDIR) with status @sb cannot be trusted: it is of
 * another kind, another user's, or others may write it. NULL when it can. */
static const char *untrusted(const struct stat *sb, mode_t type)
{
	if ((sb->st_mode & S_IFMT) != type)
		return type == S_IFDIR ? "not a directory" : "not a regular file";
	if (sb->st_uid != geteuid())
		return "another user's";
	if (sb->st_mode & (S_IWGRP | S_IWOTH))
		return "others may write it";
	return NULL;
}

/* Maps st->file when it is a well-formed file that can be trusted; anything else is
 * logged and left to be replaced at the next save. */
static void load(struct stamps *st)
{
	g_autoptr(GError) err = NULL;
	const char *why = NULL;
	struct stat sb;
	GMappedFile *map = NULL;
	size_t count = 0;
	int fd = open(st->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0 || fstat(fd, &sb) != 0)
		why = g_strerror(errno);
	else if (!(why = untrusted(&sb, S_IFREG)) &&
		 (uint64_t)sb.st_size > HEAD_LEN + sizeof(uint64_t) + (uint64_t)STAMPS_MAX * RECORD_LEN)
		why = "too large";
	else if (!why && sb.st_size == 0)
		why = "empty";
	if (!why) {
		map = g_mapped_file_new_from_fd(fd, FALSE, &err);
		if (!map)
			why = err->message;
		else
			why = check(g_mapped_file_get_contents(map), g_mapped_file_get_length(map),
				    &count);
	}
	if (why) {
		log_warn("ignoring %s: %s; mtimes start anew", st->file, why);
		if (map)
			g_mapped_file_unref(map);
	} else {
		st->old = map;
		st->old_recs = g_mapped_file_get_contents(map) + HEAD_LEN;
		st->n_old = count;
		st->old_flags = g_malloc0(MAX(count, 1));
		st->saved = count;
	}
	if (fd >= 0)
		close(fd);
}

/* True when @dir (made 0700 if missing) is a directory that can be trusted: only then
 * may a file in it be read and replaced. */
static bool dir_is_ours(const char *dir)
{
	struct stat sb;
	const char *why = NULL;

	if (g_mkdir_with_parents(dir, 0700) != 0 || lstat(dir, &sb) != 0)
		why = g_strerror(errno);
	else
		why = untrusted(&sb, S_IFDIR);
	if (why)
		log_warn("mtimes are not kept across remounts: %s: %s", dir, why);
	return !why;
}

struct stamps *stamps_open(const char *dir, gint64 save_delay_us, stamps_collect_fn collect,
			   void *data)
{
	struct stamps *st = g_new0(struct stamps, 1);

	g_mutex_init(&st->save_lock);
	g_mutex_init(&st->lock);
	g_cond_init(&st->wake);
	st->save_delay_us = save_delay_us;
	st->collect = collect;
	st->collect_data = data;
	if (dir && *dir && dir_is_ours(dir)) {
		st->file = g_build_filename(dir, FILE_NAME, NULL);
		load(st);
	}
	return st;
}

/* The index of @ino's record in the last mount's table, or -1. (lock, or the table
 * alone: it never changes.) */
static gssize old_find(const struct stamps *st, uint64_t ino)
{
	size_t lo = 0, hi = st->n_old;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t at = get_u64(st->old_recs + mid * RECORD_LEN);
		if (at == ino)
			return (gssize)mid;
		if (at < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* @bytes of zeroed memory of their own, not the heap's: what a save takes for a moment
 * (some 7 MiB with 100 000 nodes) is given back whole when it ends, and leaves no free
 * space in the heap that its pages would keep counting in the resident memory. */
static void *pages_new(size_t bytes)
{
	void *p = mmap(NULL, MAX(bytes, 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);

	return p == MAP_FAILED ? NULL : p;
}

static void pages_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, MAX(bytes, 1));
}

static void put_record(char *at, const struct stamp *s)
{
	uint64_t v[4] = {GUINT64_TO_LE(s->ino), GUINT64_TO_LE(s->hash), GUINT64_TO_LE(s->size),
			 GUINT64_TO_LE((uint64_t)s->mtime_wall_us)};

	memcpy(at, v, RECORD_LEN);
}

/* Whether the last mount's record @j goes to the file. (lock) */
static bool old_kept(const struct stamps *st, size_t j, bool only_seen)
{
	return !(st->old_flags[j] & OLD_CLAIMED) && (!only_seen || (st->old_flags[j] & OLD_SEEN));
}

/* Writes into @out (room for HEAD_LEN + 8 + STAMPS_MAX records) the file as the next
 * mount reads it: @nodes (@n of them, sorted by ino, this mount's), then the records of
 * the last mount's table that no node of this one has claimed, only those seen in this
 * mount when all would fill more than three quarters of the table, and at most
 * STAMPS_MAX in all. Returns its length. (lock) */
static size_t serialize(struct stamps *st, const struct stamp *nodes, size_t n, char *out)
{
	size_t unclaimed = 0;

	for (size_t i = 0; i < st->n_old; i++)
		unclaimed += !(st->old_flags[i] & OLD_CLAIMED);
	bool only_seen = n + unclaimed > STAMPS_MAX / 4 * 3;
	memcpy(out, MAGIC, MAGIC_LEN);
	char *rec = out + HEAD_LEN;
	size_t i = 0, j = 0, count = 0;
	for (;; count++) {
		while (j < st->n_old && !old_kept(st, j, only_seen))
			j++;
		if ((i == n && j == st->n_old) || count == STAMPS_MAX)
			break;
		struct stamp old = j < st->n_old ? old_record(st, j) : (struct stamp){0};
		if (i < n && (j == st->n_old || nodes[i].ino <= old.ino)) {
			if (j < st->n_old && nodes[i].ino == old.ino)
				j++; /* this mount's wins */
			put_record(rec + count * RECORD_LEN, &nodes[i++]);
		} else {
			put_record(rec + count * RECORD_LEN, &old);
			j++;
		}
	}
	if ((i < n || j < st->n_old) && !st->full_logged) {
		st->full_logged = true;
		log_warn("more than %u files and directories: some show their resource's change "
			 "time after a remount",
			 STAMPS_MAX);
	}
	uint64_t le = GUINT64_TO_LE((uint64_t)count);
	memcpy(out + MAGIC_LEN, &le, sizeof(le));
	le = GUINT64_TO_LE(fnv1a_64(FNV1A_64_OFFSET, rec, count * RECORD_LEN));
	memcpy(rec + count * RECORD_LEN, &le, sizeof(le));
	st->saved = count;
	return HEAD_LEN + count * RECORD_LEN + sizeof(uint64_t);
}

/* Writes the table when it changed since the last save: 0, or -EIO (logged once). */
static int save(struct stamps *st)
{
	g_autoptr(GError) err = NULL;
	struct stamp *nodes = NULL;
	char *image = NULL;
	size_t max = 0, n = 0, len = 0;
	size_t image_size = HEAD_LEN + sizeof(uint64_t) + (size_t)STAMPS_MAX * RECORD_LEN;

	g_mutex_lock(&st->save_lock);
	g_mutex_lock(&st->lock);
	bool todo = st->dirty && st->file;
	st->dirty = false;
	g_mutex_unlock(&st->lock);
	if (todo) {
		/* The nodes' stamps, taken with the caller's lock (the tree's), never with
		 * ours held: the tree lock comes first. Nodes made since the count wait for
		 * the next save. */
		max = st->collect ? st->collect(st->collect_data, NULL, 0) : 0;
		nodes = pages_new(max * sizeof(*nodes));
		image = pages_new(image_size);
		if (nodes && image) {
			n = st->collect ? st->collect(st->collect_data, nodes, max) : 0;
			qsort(nodes, n, sizeof(*nodes), stamp_cmp);
			g_mutex_lock(&st->lock);
			len = serialize(st, nodes, n, image);
			g_mutex_unlock(&st->lock);
		}
	}
	int r = 0;
	if (todo && (!len || !g_file_set_contents_full(st->file, image, (gssize)len,
						       G_FILE_SET_CONTENTS_CONSISTENT, 0600, &err))) {
		r = -EIO;
		g_mutex_lock(&st->lock);
		if (!st->save_failing)
			log_warn("cannot save mtimes for the next mount: %s",
				 err ? err->message : g_strerror(ENOMEM));
		st->save_failing = true;
		/* Again after a delay, not at once. */
		st->dirty = true;
		st->dirty_since_mono_us = g_get_monotonic_time();
		g_mutex_unlock(&st->lock);
	} else if (todo) {
		g_mutex_lock(&st->lock);
		st->save_failing = false;
		g_mutex_unlock(&st->lock);
	}
	g_mutex_unlock(&st->save_lock);
	pages_free(nodes, max * sizeof(*nodes));
	pages_free(image, image_size);
	return r;
}

/* Saves save_delay after the first change that is not saved yet: a burst of changes (a
 * walk of a new mount) costs one write. */
static gpointer saver(gpointer data)
{
	struct stamps *st = data;

	g_mutex_lock(&st->lock);
	while (!st->ending) {
		if (!st->dirty) {
			g_cond_wait(&st->wake, &st->lock);
			continue;
		}
		gint64 due = st->dirty_since_mono_us > G_MAXINT64 - st->save_delay_us
				 ? G_MAXINT64
				 : st->dirty_since_mono_us + st->save_delay_us;
		if (g_get_monotonic_time() < due) {
			g_cond_wait_until(&st->wake, &st->lock, due);
			continue;
		}
		g_mutex_unlock(&st->lock);
		save(st);
		g_mutex_lock(&st->lock);
	}
	g_mutex_unlock(&st->lock);
	return NULL;
}

/* Notes a change to be saved. (lock) */
static void mark_dirty(struct stamps *st)
{
	if (st->dirty || !st->file)
		return;
	st->dirty = true;
	st->dirty_since_mono_us = g_get_monotonic_time();
	if (!st->saver)
		st->saver = g_thread_new("stamps", saver, st);
	g_cond_signal(&st->wake);
}

gint64 stamps_settle(struct stamps *st, uint64_t ino, uint64_t hash, uint64_t size,
		     gint64 changed_at_wall_us, gint64 first_seen_wall_us)
{
	gint64 mtime_wall_us = changed_at_wall_us;

	g_mutex_lock(&st->lock);
	gssize i = old_find(st, ino);
	struct stamp old = i >= 0 ? old_record(st, (size_t)i) : (struct stamp){0};
	if (i >= 0 && !(st->old_flags[i] & OLD_CLAIMED) && old.hash == hash &&
	    size32(old.size) == size32(size)) {
		mtime_wall_us = old.mtime_wall_us;
	} else if (i >= 0) {
		/* Other bytes, or a node freed and made again in this mount, which may have
		 * shown other bytes since: a time no backup has seen for this node. */
		mtime_wall_us = MAX(mtime_wall_us, old.mtime_wall_us + 1);
		mark_dirty(st);
	} else {
		/* A node first seen: its bytes are as old as the mount knows them, so that
		 * a file first read during a backup does not look changed to the next one
		 * (tar --listed-incremental compares with the time the backup started). */
		mtime_wall_us = MIN(mtime_wall_us, first_seen_wall_us);
		mark_dirty(st);
	}
	if (i >= 0)
		st->old_flags[i] |= OLD_SEEN | OLD_CLAIMED;
	g_mutex_unlock(&st->lock);
	return mtime_wall_us;
}

gint64 stamps_change(struct stamps *st, gint64 shown_wall_us, gint64 changed_at_wall_us)
{
	g_mutex_lock(&st->lock);
	mark_dirty(st);
	g_mutex_unlock(&st->lock);
	/* A change time older than what was shown (a clock step, an old disk copy) is still
	 * a time no backup has seen. */
	return MAX(changed_at_wall_us, shown_wall_us + 1);
}

gint64 stamps_peek(struct stamps *st, uint64_t ino)
{
	gint64 mtime_wall_us = 0;

	g_mutex_lock(&st->lock);
	gssize i = old_find(st, ino);
	if (i >= 0 && !(st->old_flags[i] & OLD_CLAIMED)) {
		st->old_flags[i] |= OLD_SEEN;
		mtime_wall_us = old_record(st, (size_t)i).mtime_wall_us;
	}
	g_mutex_unlock(&st->lock);
	return mtime_wall_us;
}

int stamps_flush(struct stamps *st)
{
	return save(st);
}

size_t stamps_saved(struct stamps *st)
{
	g_mutex_lock(&st->lock);
	size_t n = st->saved;
	g_mutex_unlock(&st->lock);
	return n;
}

void stamps_free(struct stamps *st)
{
	if (!st)
		return;
	g_mutex_lock(&st->lock);
	st->ending = true;
	g_cond_signal(&st->wake);
	g_mutex_unlock(&st->lock);
	if (st->saver)
		g_thread_join(st->saver);
	save(st);
	if (st->old)
		g_mapped_file_unref(st->old);
	g_free(st->old_flags);
	g_cond_clear(&st->wake);
	g_mutex_clear(&st->lock);
	g_mutex_clear(&st->save_lock);
	g_free(st->file);
	g_free(st);
}
