/* trust: which directories and files another local user could have made are refused. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "trust.h"
#include "tmp_tree.h"

#define NOBODY 65534 /* another user */

static char *tmp_dir(void)
{
	char *d = g_dir_make_tmp("test_trust_XXXXXX", NULL);
	g_assert_nonnull(d);
	g_assert_cmpint(chmod(d, 0700), ==, 0);
	return d;
}

static int private_dir(const char *path)
{
	g_autoptr(GError) err = NULL;
	int r = trust_private_dir(path, &err);
	g_assert_true((r == 0) == (err == NULL));
	return r;
}

static void test_a_new_directory_is_made_private_with_its_parents(void)
{
	g_autofree char *top = tmp_dir();
	g_autofree char *dir = g_build_filename(top, "a", "b", NULL);
	g_assert_cmpint(private_dir(dir), ==, 0);
	struct stat st;
	g_assert_cmpint(stat(dir, &st), ==, 0);
	g_assert_cmpint(st.st_mode & 07777, ==, 0700);
	g_assert_cmpint(private_dir(dir), ==, 0); /* and again, as it is */
	tmp_tree_remove(top);
}

static void test_a_directory_others_own_or_may_write_is_refused(void)
{
	g_autofree char *top = tmp_dir();
	g_autofree char *dir = g_build_filename(top, "smarthomefs", NULL);
	g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);

	g_assert_cmpint(chown(dir, NOBODY, NOBODY), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, -EPERM);
	g_assert_cmpint(chown(dir, getuid(), getgid()), ==, 0);

	g_assert_cmpint(chmod(dir, 0777), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, -EPERM);
	/* Group-writable is fine for the user's private group (umask 002), not another. */
	g_assert_cmpint(chmod(dir, 0770), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, 0);
	g_assert_cmpint(chown(dir, getuid(), NOBODY), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, -EPERM);
	g_assert_cmpint(chmod(dir, 0700), ==, 0);

	/* A link in its place. */
	g_autofree char *link = g_build_filename(top, "link", NULL);
	g_assert_cmpint(symlink(dir, link), ==, 0);
	g_assert_cmpint(private_dir(link), ==, -ENOTDIR);
	tmp_tree_remove(top);
}

static void test_a_directory_above_that_others_may_write_is_refused_unless_sticky(void)
{
	g_autofree char *top = tmp_dir();
	g_autofree char *shared = g_build_filename(top, "shared", NULL);
	g_autofree char *dir = g_build_filename(shared, "smarthomefs", NULL);
	g_assert_cmpint(g_mkdir(shared, 0700), ==, 0);
	g_assert_cmpint(chmod(shared, 0777), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, -EPERM);
	g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(trust_check_dir(dir, &err), ==, -EPERM);
	g_assert_nonnull(strstr(err->message, shared));
	g_assert_cmpint(chmod(shared, 01777), ==, 0);
	g_assert_cmpint(private_dir(dir), ==, 0);
	tmp_tree_remove(top);
}

static void test_a_file_of_ours_must_be_a_regular_file_of_ours_and_no_link(void)
{
	g_autofree char *top = tmp_dir();
	g_autofree char *file = g_build_filename(top, "tado.lock", NULL);
	g_autoptr(GError) err = NULL;
	int fd = trust_open_private(file, O_RDWR | O_CREAT, 0600, &err);
	g_assert_cmpint(fd, >=, 0);
	close(fd);

	g_assert_cmpint(chown(file, NOBODY, NOBODY), ==, 0);
	g_assert_cmpint(trust_open_private(file, O_RDWR, 0, &err), ==, -EPERM);
	g_clear_error(&err);
	g_assert_cmpint(chown(file, getuid(), getgid()), ==, 0);
	g_assert_cmpint(chmod(file, 0666), ==, 0);
	g_assert_cmpint(trust_open_private(file, O_RDWR, 0, &err), ==, -EPERM);
	g_clear_error(&err);

	g_autofree char *link = g_build_filename(top, "link.lock", NULL);
	g_assert_cmpint(symlink(file, link), ==, 0);
	g_assert_cmpint(trust_open_private(link, O_RDWR | O_CREAT, 0600, &err), ==, -ELOOP);
	g_clear_error(&err);

	/* A FIFO planted in its place: refused at once, not a hang. */
	g_autofree char *fifo = g_build_filename(top, "fifo.json", NULL);
	g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
	g_assert_cmpint(trust_open_private(fifo, O_RDONLY, 0, &err), ==, -EINVAL);
	g_clear_error(&err);

	g_autofree char *missing = g_build_filename(top, "none.json", NULL);
	g_assert_cmpint(trust_open_private(missing, O_RDONLY, 0, &err), ==, -ENOENT);
	g_assert_no_error(err);
	tmp_tree_remove(top);
}

static void test_a_file_we_only_read_may_be_roots_or_a_link_but_not_a_device(void)
{
	g_autofree char *top = tmp_dir();
	g_autofree char *ca = g_build_filename(top, "ca.pem", NULL);
	g_autofree char *link = g_build_filename(top, "ca-link.pem", NULL);
	g_assert_true(g_file_set_contents(ca, "pem", -1, NULL));
	g_assert_cmpint(chmod(ca, 0644), ==, 0);
	g_assert_cmpint(symlink(ca, link), ==, 0);
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(trust_check_readable(link, &err), ==, 0);
	g_assert_cmpint(trust_check_readable("/dev/zero", &err), ==, -EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(chown(ca, NOBODY, NOBODY), ==, 0);
	g_assert_cmpint(trust_check_readable(ca, &err), ==, -EPERM);
	tmp_tree_remove(top);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/trust/a_new_directory_is_made_private_with_its_parents",
			test_a_new_directory_is_made_private_with_its_parents);
	g_test_add_func("/trust/a_directory_others_own_or_may_write_is_refused",
			test_a_directory_others_own_or_may_write_is_refused);
	g_test_add_func("/trust/a_directory_above_that_others_may_write_is_refused_unless_sticky",
			test_a_directory_above_that_others_may_write_is_refused_unless_sticky);
	g_test_add_func("/trust/a_file_of_ours_must_be_a_regular_file_of_ours_and_no_link",
			test_a_file_of_ours_must_be_a_regular_file_of_ours_and_no_link);
	g_test_add_func("/trust/a_file_we_only_read_may_be_roots_or_a_link_but_not_a_device",
			test_a_file_we_only_read_may_be_roots_or_a_link_but_not_a_device);
	return g_test_run();
}
