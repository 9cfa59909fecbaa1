/* The stamps table: an mtime is kept for the same bytes across a reopen (a remount),
 * a new one for other bytes; the disk copy's rules and bound. A hash table stands in for
 * the tree's nodes, which hold a mount's stamps. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "stamps.h"

#define NO_DELAY G_MAXINT64 /* saved only by flush and free */
#define SECOND	 G_USEC_PER_SEC
#define T0	 ((gint64)1700000000 * SECOND)

/* The nodes of one mount, as the tree holds their stamps: ino -> struct stamp; guarded
 * by nodes_lock, as the tree's lock guards the nodes (the saver thread collects). */
static GHashTable *nodes;
static GMutex nodes_lock;

static size_t collect(void *data, struct stamp *out, size_t max)
{
	GHashTableIter it;
	gpointer value;
	size_t n = 0;

	g_mutex_lock(&nodes_lock);
	if (!out) {
		n = g_hash_table_size(nodes);
	} else {
		g_hash_table_iter_init(&it, nodes);
		while (n < max && g_hash_table_iter_next(&it, NULL, &value))
			out[n++] = *(struct stamp *)value;
	}
	g_mutex_unlock(&nodes_lock);
	return n;
}

/* A table of @dir for a new mount (no node settled yet). */
static struct stamps *mount_table(const char *dir, gint64 delay_us)
{
	g_mutex_lock(&nodes_lock);
	if (nodes)
		g_hash_table_remove_all(nodes);
	else
		nodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
	g_mutex_unlock(&nodes_lock);
	return stamps_open(dir, delay_us, collect, NULL);
}

/* What fs_core does when node @ino shows bytes @hash, @size long, whose resource changed
 * at @changed_at_wall_us (@first_seen_wall_us: when its directory first showed it): the
 * first time in the mount, the table decides; later, only a change of bytes does. */
static gint64 settle_first_seen(struct stamps *st, uint64_t ino, uint64_t hash, uint64_t size,
				gint64 changed_at_wall_us, gint64 first_seen_wall_us)
{
	g_mutex_lock(&nodes_lock);
	struct stamp *s = g_hash_table_lookup(nodes, &ino);

	if (!s) {
		s = g_new(struct stamp, 1);
		*s = (struct stamp){ino, hash, size,
				    stamps_settle(st, ino, hash, size, changed_at_wall_us,
						  first_seen_wall_us)};
		g_hash_table_insert(nodes, &s->ino, s);
	} else if (s->hash != hash || s->size != size) {
		s->hash = hash;
		s->size = size;
		s->mtime_wall_us = stamps_change(st, s->mtime_wall_us, changed_at_wall_us);
	}
	gint64 mtime_wall_us = s->mtime_wall_us;
	g_mutex_unlock(&nodes_lock);
	return mtime_wall_us;
}

/* Settles @ino as a node whose first sighting is not known (G_MAXINT64), or one seen
 * again: its resource's change time is the base. */
static gint64 settle(struct stamps *st, uint64_t ino, uint64_t hash, uint64_t size,
		     gint64 changed_at_wall_us)
{
	return settle_first_seen(st, ino, hash, size, changed_at_wall_us, G_MAXINT64);
}

/* Node @ino is freed (gone from its listing, forgotten by the kernel). */
static void free_node(uint64_t ino)
{
	g_mutex_lock(&nodes_lock);
	g_hash_table_remove(nodes, &ino);
	g_mutex_unlock(&nodes_lock);
}

static char *temp_dir(void)
{
	GError *err = NULL;
	char *dir = g_dir_make_tmp("smarthomefs-stamps-XXXXXX", &err);

	g_assert_no_error(err);
	return dir;
}

static void remove_dir(const char *dir)
{
	g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
	g_assert_cmpint(system(cmd), ==, 0);
}

static char *table_file(const char *dir)
{
	return g_build_filename(dir, "stamps", NULL);
}

/* A table in @dir holding node 42 (bytes 7, 10 long, changed at T0), saved. */
static void save_one(const char *dir)
{
	struct stamps *st = mount_table(dir, NO_DELAY);

	g_assert_cmpint(settle(st, 42, 7, 10, T0), ==, T0);
	stamps_free(st);
}

static void test_the_same_bytes_keep_their_mtime_after_a_reopen(void)
{
	g_autofree char *dir = temp_dir();

	save_one(dir);
	struct stamps *st = mount_table(dir, NO_DELAY);
	/* The resource changed since (another zone of an aggregate), this node's bytes not. */
	g_assert_cmpint(settle(st, 42, 7, 10, T0 + 60 * SECOND), ==, T0);
	stamps_free(st);
	remove_dir(dir);
}

static void test_other_bytes_get_the_resource_change_time(void)
{
	g_autofree char *dir = temp_dir();

	save_one(dir);
	struct stamps *st = mount_table(dir, NO_DELAY);
	g_assert_cmpint(settle(st, 42, 8, 10, T0 + 60 * SECOND), ==, T0 + 60 * SECOND);
	/* Same hash, other size: other bytes. */
	g_assert_cmpint(settle(st, 42, 8, 11, T0 + 61 * SECOND), ==, T0 + 61 * SECOND);
	stamps_free(st);

	st = mount_table(dir, NO_DELAY);
	g_assert_cmpint(settle(st, 42, 8, 11, T0 + 99 * SECOND), ==, T0 + 61 * SECOND);
	stamps_free(st);
	remove_dir(dir);
}

static void test_a_change_never_goes_back_in_time(void)
{
	struct stamps *st = mount_table(NULL, NO_DELAY);

	g_assert_cmpint(settle(st, 42, 7, 10, T0), ==, T0);
	/* A resource change time older than what was shown (a clock step, an old disk copy):
	 * still a time no backup has seen. */
	g_assert_cmpint(settle(st, 42, 8, 10, T0 - SECOND), ==, T0 + 1);
	stamps_free(st);
}

static void test_a_node_first_seen_is_as_old_as_its_directory_showed_it(void)
{
	struct stamps *st = mount_table(NULL, NO_DELAY);

	/* A resource first fetched during a backup that listed the directory before. */
	g_assert_cmpint(settle_first_seen(st, 42, 7, 10, T0 + SECOND, T0), ==, T0);
	/* A resource older than the directory's listing. */
	g_assert_cmpint(settle_first_seen(st, 43, 7, 10, T0 - SECOND, T0), ==, T0 - SECOND);
	/* Remembered: the first sighting no longer matters, for the same bytes or others. */
	g_assert_cmpint(settle_first_seen(st, 42, 7, 10, T0 + 2 * SECOND, 1), ==, T0);
	g_assert_cmpint(settle_first_seen(st, 42, 8, 10, T0 + 2 * SECOND, 1), ==, T0 + 2 * SECOND);
	stamps_free(st);
}

static void test_peek_knows_only_the_last_mounts_nodes(void)
{
	g_autofree char *dir = temp_dir();

	save_one(dir);
	struct stamps *st = mount_table(dir, NO_DELAY);
	g_assert_cmpuint(stamps_saved(st), ==, 1);
	g_assert_cmpint(stamps_peek(st, 42), ==, T0);
	g_assert_cmpint(stamps_peek(st, 43), ==, 0);
	settle(st, 43, 7, 10, T0);
	g_assert_cmpint(stamps_peek(st, 43), ==, 0); /* the node's own, not the table's */
	stamps_free(st);
	remove_dir(dir);
}

/* A node gone from its listing and freed takes its stamp with it: ids that change on
 * every listing do not grow the file. */
static void test_a_freed_node_is_not_saved(void)
{
	g_autofree char *dir = temp_dir();
	struct stamps *st = mount_table(dir, NO_DELAY);

	for (uint64_t ino = 100; ino < 200; ino++) {
		settle(st, ino, 1, 1, T0);
		free_node(ino);
	}
	settle(st, 42, 7, 10, T0);
	stamps_free(st);
	st = mount_table(dir, NO_DELAY);
	g_assert_cmpuint(stamps_saved(st), ==, 1);
	g_assert_cmpint(stamps_peek(st, 150), ==, 0);
	g_assert_cmpint(stamps_peek(st, 42), ==, T0);
	stamps_free(st);
	remove_dir(dir);
}

/* A node freed and made again in one mount may have shown other bytes in between: its
 * old bytes back get a new time, never the older one the last mount showed. */
static void test_a_node_made_again_never_goes_back_in_time(void)
{
	g_autofree char *dir = temp_dir();

	save_one(dir);
	struct stamps *st = mount_table(dir, NO_DELAY);
	g_assert_cmpint(settle(st, 42, 8, 10, T0 + 10 * SECOND), ==, T0 + 10 * SECOND);
	free_node(42);
	g_assert_cmpint(settle(st, 42, 7, 10, T0 + 20 * SECOND), ==, T0 + 20 * SECOND);
	stamps_free(st);
	remove_dir(dir);
}

static void test_the_directory_is_0700_and_the_file_0600(void)
{
	g_autofree char *top = temp_dir();
	g_autofree char *dir = g_build_filename(top, "a", "b", NULL);
	g_autofree char *file = table_file(dir);
	struct stat sb;

	save_one(dir);
	g_assert_cmpint(stat(dir, &sb), ==, 0);
	g_assert_cmpint(sb.st_mode & 0777, ==, 0700);
	g_assert_cmpint(stat(file, &sb), ==, 0);
	g_assert_cmpint(sb.st_mode & 0777, ==, 0600);
	remove_dir(top);
}

/* Writes @len bytes of @data as the table of @dir, 0600. */
static void write_table(const char *dir, const void *data, size_t len)
{
	g_autofree char *file = table_file(dir);
	GError *err = NULL;

	g_file_set_contents_full(file, data, (gssize)len, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
				 &err);
	g_assert_no_error(err);
}

/* Opens the table of @dir, which must have been ignored: node 42 is unknown, and the
 * next save replaces the file with a table that loads. */
static void assert_ignored_then_replaced(const char *dir)
{
	struct stamps *st = mount_table(dir, NO_DELAY);

	g_assert_cmpint(stamps_peek(st, 42), ==, 0);
	g_assert_cmpint(settle(st, 42, 9, 1, T0 + SECOND), ==, T0 + SECOND);
	g_assert_cmpint(stamps_flush(st), ==, 0);
	struct stamps *other = stamps_open(dir, NO_DELAY, NULL, NULL);
	g_assert_cmpint(stamps_peek(other, 42), ==, T0 + SECOND);
	stamps_free(other);
	stamps_free(st);
	st = mount_table(dir, NO_DELAY);
	g_assert_cmpint(stamps_peek(st, 42), ==, T0 + SECOND);
	stamps_free(st);
}

static void test_a_corrupt_file_is_ignored(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *file = table_file(dir);
	g_autofree char *good = NULL;
	gsize len;

	save_one(dir);
	g_assert_true(g_file_get_contents(file, &good, &len, NULL));

	const char *garbage = "smarthomefs-cache 1\nkey=x\n";
	write_table(dir, garbage, strlen(garbage));
	assert_ignored_then_replaced(dir);

	write_table(dir, good, len - 1); /* cut short */
	assert_ignored_then_replaced(dir);

	g_autofree char *flipped = g_memdup2(good, len);
	flipped[len - 12] ^= 1; /* a bit of the last record's mtime: the checksum */
	write_table(dir, flipped, len);
	assert_ignored_then_replaced(dir);

	write_table(dir, "", 0);
	assert_ignored_then_replaced(dir);
	remove_dir(dir);
}

static void test_a_file_others_may_write_is_ignored(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *file = table_file(dir);

	save_one(dir);
	g_assert_cmpint(chmod(file, 0620), ==, 0);
	assert_ignored_then_replaced(dir);
	remove_dir(dir);
}

static void test_another_users_file_is_ignored(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *file = table_file(dir);

	if (geteuid() != 0) {
		g_test_skip("giving a file away needs root");
		remove_dir(dir);
		return;
	}
	save_one(dir);
	g_assert_cmpint(chown(file, 4242, 4242), ==, 0);
	assert_ignored_then_replaced(dir);
	remove_dir(dir);
}

static void test_a_symlink_is_not_followed(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *other = temp_dir();
	g_autofree char *file = table_file(dir);
	g_autofree char *target = table_file(other);

	save_one(other);
	g_assert_cmpint(symlink(target, file), ==, 0);
	assert_ignored_then_replaced(dir);
	remove_dir(dir);
	remove_dir(other);
}

static void test_a_directory_others_may_write_keeps_the_table_in_memory(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *file = table_file(dir);

	g_assert_cmpint(chmod(dir, 0777), ==, 0);
	struct stamps *st = mount_table(dir, NO_DELAY);
	g_assert_cmpint(settle(st, 42, 7, 10, T0), ==, T0);
	g_assert_cmpint(settle(st, 42, 7, 10, T0 + SECOND), ==, T0);
	stamps_free(st);
	g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
	remove_dir(dir);
}

static void test_a_change_is_saved_after_the_delay_without_a_flush(void)
{
	g_autofree char *dir = temp_dir();
	g_autofree char *file = table_file(dir);
	struct stamps *st = mount_table(dir, 10 * 1000);

	settle(st, 42, 7, 10, T0);
	gint64 deadline = g_get_monotonic_time() + 10 * SECOND;
	while (!g_file_test(file, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < deadline)
		g_usleep(1000);
	g_assert_true(g_file_test(file, G_FILE_TEST_EXISTS));
	struct stamps *other = stamps_open(dir, NO_DELAY, NULL, NULL);
	g_assert_cmpint(stamps_peek(other, 42), ==, T0);
	stamps_free(other);
	stamps_free(st);
	remove_dir(dir);
}

/* A permutation of 1..n by a multiplicative step, so that inserts come out of order. */
static uint64_t shuffled_ino(uint64_t i, uint64_t n)
{
	return (i * 7919) % n + 1;
}

static void test_many_nodes_survive_a_reopen(void)
{
	g_autofree char *dir = temp_dir();
	const uint64_t n = 50000;
	struct stamps *st = mount_table(dir, NO_DELAY);

	for (uint64_t i = 0; i < n; i++) {
		uint64_t ino = shuffled_ino(i, n) << 40;
		settle(st, ino, ino ^ 1, ino % 1000, T0 + (gint64)ino % 977);
	}
	stamps_free(st);

	st = mount_table(dir, NO_DELAY);
	g_assert_cmpuint(stamps_saved(st), ==, n);
	for (uint64_t ino = 1; ino <= n; ino++) {
		uint64_t key = ino << 40;
		g_assert_cmpint(settle(st, key, key ^ 1, key % 1000, T0 + 5000), ==,
				T0 + (gint64)key % 977);
	}
	stamps_free(st);
	remove_dir(dir);
}

static void test_the_table_is_bounded(void)
{
	g_autofree char *dir = temp_dir();
	struct stamps *st = mount_table(dir, NO_DELAY);

	for (uint64_t ino = 1; ino <= STAMPS_MAX + 10; ino++)
		settle(st, ino, 1, 1, T0);
	stamps_free(st);

	/* A full table keeps, at its next save, only the nodes seen in that mount. */
	st = mount_table(dir, NO_DELAY);
	g_assert_cmpuint(stamps_saved(st), ==, STAMPS_MAX);
	g_assert_cmpint(stamps_peek(st, STAMPS_MAX + 5), ==, 0); /* no room for it */
	g_assert_cmpint(settle(st, 3, 1, 1, T0 + SECOND), ==, T0);
	g_assert_cmpint(stamps_peek(st, 4), ==, T0);
	g_assert_cmpint(settle(st, 5, 2, 1, T0 + SECOND), ==, T0 + SECOND);
	stamps_free(st);
	st = mount_table(dir, NO_DELAY);
	g_assert_cmpuint(stamps_saved(st), ==, 3);
	g_assert_cmpint(stamps_peek(st, 4), ==, T0);
	stamps_free(st);
	remove_dir(dir);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/stamps/same_bytes_keep_mtime_after_reopen",
			test_the_same_bytes_keep_their_mtime_after_a_reopen);
	g_test_add_func("/stamps/other_bytes_get_resource_time",
			test_other_bytes_get_the_resource_change_time);
	g_test_add_func("/stamps/change_never_goes_back", test_a_change_never_goes_back_in_time);
	g_test_add_func("/stamps/first_seen",
			test_a_node_first_seen_is_as_old_as_its_directory_showed_it);
	g_test_add_func("/stamps/peek", test_peek_knows_only_the_last_mounts_nodes);
	g_test_add_func("/stamps/freed_not_saved", test_a_freed_node_is_not_saved);
	g_test_add_func("/stamps/made_again_never_goes_back",
			test_a_node_made_again_never_goes_back_in_time);
	g_test_add_func("/stamps/modes", test_the_directory_is_0700_and_the_file_0600);
	g_test_add_func("/stamps/corrupt_ignored", test_a_corrupt_file_is_ignored);
	g_test_add_func("/stamps/writable_ignored", test_a_file_others_may_write_is_ignored);
	g_test_add_func("/stamps/foreign_ignored", test_another_users_file_is_ignored);
	g_test_add_func("/stamps/symlink_ignored", test_a_symlink_is_not_followed);
	g_test_add_func("/stamps/open_dir_memory_only",
			test_a_directory_others_may_write_keeps_the_table_in_memory);
	g_test_add_func("/stamps/saved_after_delay",
			test_a_change_is_saved_after_the_delay_without_a_flush);
	g_test_add_func("/stamps/many_nodes", test_many_nodes_survive_a_reopen);
	g_test_add_func("/stamps/bounded", test_the_table_is_bounded);
	int r = g_test_run();
	if (nodes)
		g_hash_table_destroy(nodes);
	return r;
}
