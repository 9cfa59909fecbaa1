/* stamps: the table of what each node showed, and its disk copy (see stamps.h).
 *
 * Memory: a mount may have 100 000 nodes, so the table is a sorted array of 32-byte
 * entries (binary search), and the nodes first seen in this mount wait in a hash table
 * until a save, or until there are many of them, merges them in. */
#include "stamps.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fnv.h"
#include "log.h"

#define FILE_NAME  "stamps"
#define MAGIC	   "smarthomefs stamps 1\n"
#define MAGIC_LEN  (sizeof(MAGIC) - 1)
#define RECORD_LEN (4 * sizeof(uint64_t))

struct stamp {
	uint64_t ino;
	uint64_t hash;
	gint64 mtime_wall_us; /* unix µs */
	uint32_t size;	      /* saturated at UINT32_MAX: with the hash, only a check */
	uint32_t seen;	      /* settled or peeked in this mount */
};

struct stamps {
	char *file; /* NULL: memory only */
	gint64 save_delay_us;

	GMutex save_lock; /* orders saves, so an older table never replaces a newer one */
	GMutex lock;	  /* guards every field below */
	GCond wake;	  /* the saver: a change, or the end */
	GArray *sorted;	  /* struct stamp, by ino */
	GHashTable *new;  /* ino -> struct stamp *: not in sorted yet */
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

static gint stamp_cmp(gconstpointer a, gconstpointer b)
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

static void put_u64(GByteArray *out, uint64_t v)
{
	v = GUINT64_TO_LE(v);
	g_byte_array_append(out, (const guint8 *)&v, sizeof(v));
}

/* Reads the records of @data (@len bytes) into st->sorted. NULL, or how it is not a
 * well-formed table. */
static const char *parse(struct stamps *st, const char *data, size_t len)
{
	size_t head = MAGIC_LEN + sizeof(uint64_t);

	if (len < head + sizeof(uint64_t) || memcmp(data, MAGIC, MAGIC_LEN) != 0)
		return "not a table of this version";
	uint64_t count = get_u64(data + MAGIC_LEN);
	if (count > STAMPS_MAX || len != head + count * RECORD_LEN + sizeof(uint64_t))
		return "its length does not match its count";
	const char *rec = data + head;
	if (fnv1a_64(FNV1A_64_OFFSET, rec, count * RECORD_LEN) != get_u64(rec + count * RECORD_LEN))
		return "its checksum does not match";
	g_array_set_size(st->sorted, count);
	for (uint64_t i = 0; i < count; i++, rec += RECORD_LEN) {
		struct stamp *s = &g_array_index(st->sorted, struct stamp, i);
		s->ino = get_u64(rec);
		s->hash = get_u64(rec + 8);
		s->size = size32(get_u64(rec + 16));
		s->mtime_wall_us = (gint64)get_u64(rec + 24);
		s->seen = 0;
		if (s->ino == 0 || s->mtime_wall_us < 0 || (i > 0 && s[-1].ino >= s->ino)) {
			g_array_set_size(st->sorted, 0);
			return "its entries are out of order";
		}
	}
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

/* Loads st->file when it is a well-formed file that can be trusted; anything else is
 * logged and left to be replaced at the next save. */
static void load(struct stamps *st)
{
	g_autoptr(GError) err = NULL;
	const char *why = NULL;
	struct stat sb;
	int fd = open(st->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0 || fstat(fd, &sb) != 0)
		why = g_strerror(errno);
	else if (!(why = untrusted(&sb, S_IFREG)) &&
		 (uint64_t)sb.st_size >
		     MAGIC_LEN + 2 * sizeof(uint64_t) + (uint64_t)STAMPS_MAX * RECORD_LEN)
		why = "too large";
	else if (!why && sb.st_size == 0)
		why = "empty";
	if (!why) {
		GMappedFile *map = g_mapped_file_new_from_fd(fd, FALSE, &err);
		if (!map)
			why = err->message;
		else
			why = parse(st, g_mapped_file_get_contents(map),
				    g_mapped_file_get_length(map));
		if (map)
			g_mapped_file_unref(map);
	}
	if (why)
		log_warn("ignoring %s: %s; mtimes start anew", st->file, why);
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

struct stamps *stamps_open(const char *dir, gint64 save_delay_us)
{
	struct stamps *st = g_new0(struct stamps, 1);

	g_mutex_init(&st->save_lock);
	g_mutex_init(&st->lock);
	g_cond_init(&st->wake);
	st->save_delay_us = save_delay_us;
	st->sorted = g_array_new(FALSE, FALSE, sizeof(struct stamp));
	st->new = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
	if (dir && *dir && dir_is_ours(dir)) {
		st->file = g_build_filename(dir, FILE_NAME, NULL);
		load(st);
	}
	return st;
}

/* Moves the new nodes into the sorted array. (lock) */
static void merge(struct stamps *st)
{
	guint n_new = g_hash_table_size(st->new);

	if (!n_new)
		return;
	GArray *add = g_array_sized_new(FALSE, FALSE, sizeof(struct stamp), n_new);
	GHashTableIter it;
	gpointer value;
	g_hash_table_iter_init(&it, st->new);
	while (g_hash_table_iter_next(&it, NULL, &value))
		g_array_append_vals(add, value, 1);
	g_array_sort(add, stamp_cmp);
	g_hash_table_remove_all(st->new);

	GArray *out =
	    g_array_sized_new(FALSE, FALSE, sizeof(struct stamp), st->sorted->len + add->len);
	guint i = 0, j = 0;
	while (i < st->sorted->len || j < add->len) {
		bool take_old = j == add->len || (i < st->sorted->len &&
						  g_array_index(st->sorted, struct stamp, i).ino <
						      g_array_index(add, struct stamp, j).ino);
		if (take_old)
			g_array_append_vals(out, &g_array_index(st->sorted, struct stamp, i++), 1);
		else
			g_array_append_vals(out, &g_array_index(add, struct stamp, j++), 1);
	}
	g_array_free(add, TRUE);
	g_array_free(st->sorted, TRUE);
	st->sorted = out;
}

/* The entry of @ino, or NULL. (lock) */
static struct stamp *find(struct stamps *st, uint64_t ino)
{
	struct stamp *s = g_hash_table_lookup(st->new, GSIZE_TO_POINTER((gsize)ino));
	guint lo = 0, hi = st->sorted->len;

	if (s)
		return s;
	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;
		s = &g_array_index(st->sorted, struct stamp, mid);
		if (s->ino == ino)
			return s;
		if (s->ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The table as the file holds it, leaving out the nodes not seen in this mount when it
 * is over three quarters full. (lock) */
static GByteArray *serialize(struct stamps *st)
{
	guint count = 0;

	merge(st);
	bool only_seen = st->sorted->len > STAMPS_MAX / 4 * 3;
	GByteArray *out = g_byte_array_sized_new(MAGIC_LEN + 16 + st->sorted->len * RECORD_LEN);
	g_byte_array_append(out, (const guint8 *)MAGIC, MAGIC_LEN);
	put_u64(out, 0); /* the count, known at the end */
	for (guint i = 0; i < st->sorted->len; i++) {
		const struct stamp *s = &g_array_index(st->sorted, struct stamp, i);
		if (only_seen && !s->seen)
			continue;
		put_u64(out, s->ino);
		put_u64(out, s->hash);
		put_u64(out, s->size);
		put_u64(out, (uint64_t)s->mtime_wall_us);
		count++;
	}
	uint64_t le = GUINT64_TO_LE((uint64_t)count);
	memcpy(out->data + MAGIC_LEN, &le, sizeof(le));
	put_u64(out,
		fnv1a_64(FNV1A_64_OFFSET, out->data + MAGIC_LEN + 8, (size_t)count * RECORD_LEN));
	return out;
}

/* Writes the table when it changed since the last save: 0, or -EIO (logged once). */
static int save(struct stamps *st)
{
	g_autoptr(GError) err = NULL;
	GByteArray *data = NULL;

	g_mutex_lock(&st->save_lock);
	g_mutex_lock(&st->lock);
	if (st->dirty && st->file) {
		data = serialize(st);
		st->dirty = false;
	}
	g_mutex_unlock(&st->lock);
	int r = 0;
	if (data && !g_file_set_contents_full(st->file, (const char *)data->data, (gssize)data->len,
					      G_FILE_SET_CONTENTS_CONSISTENT, 0600, &err)) {
		r = -EIO;
		g_mutex_lock(&st->lock);
		if (!st->save_failing)
			log_warn("cannot save mtimes for the next mount: %s", err->message);
		st->save_failing = true;
		/* Again after a delay, not at once. */
		st->dirty = true;
		st->dirty_since_mono_us = g_get_monotonic_time();
		g_mutex_unlock(&st->lock);
	} else if (data) {
		g_mutex_lock(&st->lock);
		st->save_failing = false;
		g_mutex_unlock(&st->lock);
	}
	g_mutex_unlock(&st->save_lock);
	if (data)
		g_byte_array_unref(data);
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

/* How many nodes the table holds. (lock) */
static size_t count_locked(struct stamps *st)
{
	return st->sorted->len + g_hash_table_size(st->new);
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
	struct stamp *s = find(st, ino);
	if (s && s->hash == hash && s->size == size32(size)) {
		mtime_wall_us = s->mtime_wall_us;
	} else if (s) {
		/* Other bytes: a time no backup has seen for this node. */
		mtime_wall_us = MAX(mtime_wall_us, s->mtime_wall_us + 1);
		s->hash = hash;
		s->size = size32(size);
		s->mtime_wall_us = mtime_wall_us;
		mark_dirty(st);
	} else {
		/* A node first seen: its bytes are as old as the mount knows them, so that
		 * a file first read during a backup does not look changed to the next one
		 * (tar --listed-incremental compares with the time the backup started). */
		mtime_wall_us = MIN(mtime_wall_us, first_seen_wall_us);
		if (count_locked(st) < STAMPS_MAX) {
			s = g_new(struct stamp, 1);
			*s = (struct stamp){ino, hash, mtime_wall_us, size32(size), 0};
			g_hash_table_insert(st->new, GSIZE_TO_POINTER((gsize)ino), s);
			if (g_hash_table_size(st->new) > MAX(4096, st->sorted->len / 4)) {
				merge(st);
				s = find(st, ino);
			}
			mark_dirty(st);
		} else if (!st->full_logged) {
			st->full_logged = true;
			log_warn("more than %u files and directories: the new ones show their "
				 "resource's change time after a remount",
				 STAMPS_MAX);
		}
	}
	if (s)
		s->seen = 1;
	g_mutex_unlock(&st->lock);
	return mtime_wall_us;
}

gint64 stamps_peek(struct stamps *st, uint64_t ino)
{
	gint64 mtime_wall_us = 0;

	g_mutex_lock(&st->lock);
	struct stamp *s = find(st, ino);
	if (s) {
		s->seen = 1;
		mtime_wall_us = s->mtime_wall_us;
	}
	g_mutex_unlock(&st->lock);
	return mtime_wall_us;
}

int stamps_flush(struct stamps *st)
{
	return save(st);
}

size_t stamps_count(struct stamps *st)
{
	g_mutex_lock(&st->lock);
	size_t n = count_locked(st);
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
	g_array_free(st->sorted, TRUE);
	g_hash_table_destroy(st->new);
	g_cond_clear(&st->wake);
	g_mutex_clear(&st->lock);
	g_mutex_clear(&st->save_lock);
	g_free(st->file);
	g_free(st);
}
