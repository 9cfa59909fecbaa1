/* keyring: the file token store (the Secret Service is exercised through real mounts by
 * the integration tests, with the rig's own D-Bus session). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "keyring.h"
#include "tmp_tree.h"

struct fixture {
	char *dir;
	struct token_store store;
	char *tokens; /* STATE_DIR/tokens */
};

static void fixture_setup(struct fixture *f)
{
	f->dir = g_dir_make_tmp("test_keyring_XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	f->store = (struct token_store){TOKEN_STORE_FILE, g_strdup(f->dir)};
	f->tokens = g_build_filename(f->dir, "tokens", NULL);
}

static void fixture_teardown(struct fixture *f)
{
	tmp_tree_remove(f->dir);
	token_store_clear(&f->store);
	g_free(f->tokens);
	g_free(f->dir);
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	g_assert_cmpint(lstat(path, &st), ==, 0);
	return st.st_mode & 07777;
}

static void test_file_store_round_trips_and_lists(void)
{
	struct fixture f;
	fixture_setup(&f);
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(token_store_save(&f.store, "tado", "tado", "{\"a\":1}", &err), ==, 0);
	g_assert_cmpint(token_store_save(&f.store, "tibber:car", "tibber", "{\"b\":2}", &err), ==,
			0);
	g_autofree char *json = NULL;
	g_assert_cmpint(token_store_load(&f.store, "tibber:car", &json, &err), ==, 0);
	g_assert_cmpstr(json, ==, "{\"b\":2}");

	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	g_assert_cmpint(token_store_list(&f.store, ids, &err), ==, 0);
	g_assert_cmpuint(ids->len, ==, 2);
	g_assert_true(g_ptr_array_find_with_equal_func(ids, "tado", g_str_equal, NULL));
	g_assert_true(g_ptr_array_find_with_equal_func(ids, "tibber:car", g_str_equal, NULL));

	g_assert_cmpint(token_store_delete(&f.store, "tado", &err), ==, 0);
	g_assert_cmpint(token_store_delete(&f.store, "tado", &err), ==, -ENOENT);
	g_autofree char *gone = NULL;
	g_assert_cmpint(token_store_load(&f.store, "tado", &gone, &err), ==, -ENOENT);
	g_assert_null(gone);
	fixture_teardown(&f);
}

static void test_file_store_is_private_to_the_user(void)
{
	struct fixture f;
	fixture_setup(&f);
	g_autoptr(GError) err = NULL;

	/* A directory that exists already with looser rights is tightened. */
	g_assert_cmpint(g_mkdir(f.tokens, 0755), ==, 0);
	g_assert_cmpint(chmod(f.tokens, 0755), ==, 0);
	g_assert_cmpint(token_store_save(&f.store, "tado", "tado", "{}", &err), ==, 0);
	g_autofree char *file = g_build_filename(f.tokens, "tado.json", NULL);
	g_assert_cmpint(mode_of(f.tokens), ==, 0700);
	g_assert_cmpint(mode_of(file), ==, 0600);
	/* Also when the file was replaced: a new file gets 0600, whatever the umask. */
	mode_t old = umask(0);
	g_assert_cmpint(token_store_save(&f.store, "tado", "tado", "{\"x\":1}", &err), ==, 0);
	umask(old);
	g_assert_cmpint(mode_of(file), ==, 0600);
	fixture_teardown(&f);
}

static void test_file_store_replaces_the_file_whole(void)
{
	struct fixture f;
	fixture_setup(&f);
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(token_store_save(&f.store, "tado", "tado", "{\"gen\":1}", &err), ==, 0);
	g_autofree char *file = g_build_filename(f.tokens, "tado.json", NULL);
	g_autofree char *old = g_build_filename(f.dir, "old-generation", NULL);
	g_assert_cmpint(link(file, old), ==, 0);

	g_assert_cmpint(token_store_save(&f.store, "tado", "tado", "{\"gen\":2}", &err), ==, 0);
	/* Written to a new file and renamed over the old one, never in place: the old
	 * inode (reached through a hard link) still holds the old set whole, so a crash
	 * half way could not have left half of each. */
	g_autofree char *before = NULL, *after = NULL;
	g_assert_true(g_file_get_contents(old, &before, NULL, NULL));
	g_assert_cmpstr(before, ==, "{\"gen\":1}");
	g_assert_true(g_file_get_contents(file, &after, NULL, NULL));
	g_assert_cmpstr(after, ==, "{\"gen\":2}");
	/* And nothing is left beside it. */
	g_autoptr(GDir) d = g_dir_open(f.tokens, 0, NULL);
	g_assert_cmpstr(g_dir_read_name(d), ==, "tado.json");
	g_assert_null(g_dir_read_name(d));
	fixture_teardown(&f);
}

static void test_file_store_does_not_follow_a_planted_link(void)
{
	struct fixture f;
	fixture_setup(&f);
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(g_mkdir(f.tokens, 0700), ==, 0);
	g_autofree char *target = g_build_filename(f.dir, "elsewhere.json", NULL);
	g_assert_true(g_file_set_contents(target, "{\"planted\":1}", -1, NULL));
	g_autofree char *file = g_build_filename(f.tokens, "tado.json", NULL);
	g_assert_cmpint(symlink(target, file), ==, 0);

	g_autofree char *json = NULL;
	g_assert_cmpint(token_store_load(&f.store, "tado", &json, &err), <, 0);
	g_assert_null(json);
	fixture_teardown(&f);
}

static void test_account_names_cannot_leave_the_directory(void)
{
	struct fixture f;
	fixture_setup(&f);
	const char *bad[] = {"", ".hidden", "../tado", "a/b"};
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GError) err = NULL;
		g_assert_cmpint(token_store_save(&f.store, bad[i], "tado", "{}", &err), ==,
				-EINVAL);
		g_assert_nonnull(err);
	}
	g_assert_false(g_file_test(f.tokens, G_FILE_TEST_EXISTS));
	fixture_teardown(&f);
}

static void test_store_names_parse_both_ways(void)
{
	enum token_store_kind k;
	g_assert_cmpint(token_store_parse("file", &k), ==, 0);
	g_assert_cmpstr(token_store_name(k), ==, "file");
	g_assert_cmpint(token_store_parse("keyring", &k), ==, 0);
	g_assert_cmpstr(token_store_name(k), ==, "keyring");
	g_assert_cmpint(token_store_parse("gpg", &k), ==, -EINVAL);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/keyring/file_store_round_trips_and_lists",
			test_file_store_round_trips_and_lists);
	g_test_add_func("/keyring/file_store_is_private_to_the_user",
			test_file_store_is_private_to_the_user);
	g_test_add_func("/keyring/file_store_replaces_the_file_whole",
			test_file_store_replaces_the_file_whole);
	g_test_add_func("/keyring/file_store_does_not_follow_a_planted_link",
			test_file_store_does_not_follow_a_planted_link);
	g_test_add_func("/keyring/account_names_cannot_leave_the_directory",
			test_account_names_cannot_leave_the_directory);
	g_test_add_func("/keyring/store_names_parse_both_ways", test_store_names_parse_both_ways);
	return g_test_run();
}
