/* tmp_tree: removing a unit test's temporary directory tree (links are unlinked, never
 * followed). */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>

static inline void tmp_tree_remove(const char *path)
{
	g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *child = g_build_filename(path, name, NULL);
		if (g_file_test(child, G_FILE_TEST_IS_DIR) &&
		    !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
			tmp_tree_remove(child);
		else
			g_unlink(child);
	}
	g_rmdir(path);
}
