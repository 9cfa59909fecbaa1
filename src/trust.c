/* trust: the owner and mode checks of files and directories others could have made. */
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>

static int refused(GError **err, int r, const char *path, const char *why)
{
	g_set_error(err, G_IO_ERROR, g_io_error_from_errno(-r), "%s %s.", path, why);
	return r;
}

/* Whether another user could replace what is in directory @st: they own it, or may
 * write it (a sticky directory lets them remove only their own entries). */
static bool others_control(const struct stat *st)
{
	if (st->st_uid != getuid() && st->st_uid != 0)
		return true;
	return (st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX);
}

/* Checks every directory above @path (not @path itself). */
static int check_ancestors(const char *path, GError **err)
{
	g_autofree char *dir = g_path_get_dirname(path);
	for (;;) {
		struct stat st;
		if (stat(dir, &st) == 0) {
			if (!S_ISDIR(st.st_mode))
				return refused(err, -ENOTDIR, dir, "is not a directory");
			if (others_control(&st))
				return refused(
				    err, -EPERM, dir,
				    "belongs to another user or may be written by others, "
				    "so they could replace what smarthomefs keeps below it; "
				    "choose a directory of your own");
		} else if (errno != ENOENT) {
			return refused(err, -errno, dir, g_strerror(errno));
		}
		if (strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0)
			return 0;
		char *up = g_path_get_dirname(dir);
		g_free(dir);
		dir = up;
	}
}

/* Checks the directory @path itself, as lstat() sees it. */
static int check_own_dir(const char *path, GError **err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return refused(err, -ENOTDIR, path, "is not a directory (a link?); remove it");
	if (st.st_uid != getuid())
		return refused(err, -EPERM, path,
			       "belongs to another user; remove it (or choose another directory) "
			       "so that smarthomefs makes its own");
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return refused(err, -EPERM, path,
			       "may be written by other users; chmod 700 it, or remove it so "
			       "that smarthomefs makes its own");
	return 0;
}

int trust_check_dir(const char *path, GError **err)
{
	int r = check_ancestors(path, err);
	if (r < 0)
		return r;
	r = check_own_dir(path, err);
	return r == -ENOENT ? 0 : r;
}

int trust_private_dir(const char *path, GError **err)
{
	int r = check_ancestors(path, err);
	if (r < 0)
		return r;
	if (g_mkdir_with_parents(path, 0700) < 0)
		return refused(err, -errno, path, g_strerror(errno));
	r = check_own_dir(path, err);
	if (r == -ENOENT)
		return refused(err, r, path, "vanished");
	return r;
}

int trust_open_private(const char *path, int flags, mode_t mode, GError **err)
{
	int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		if (errno == ELOOP)
			return refused(err, -ELOOP, path, "is a link; remove it");
		return refused(err, -errno, path, g_strerror(errno));
	}
	struct stat st;
	int r = 0;
	if (fstat(fd, &st) < 0)
		r = refused(err, -errno, path, g_strerror(errno));
	else if (!S_ISREG(st.st_mode))
		r = refused(err, -EINVAL, path, "is not a regular file; remove it");
	else if (st.st_uid != getuid())
		r = refused(err, -EPERM, path, "belongs to another user; remove it");
	else if (st.st_mode & (S_IWGRP | S_IWOTH))
		r = refused(err, -EPERM, path,
			    "may be written by other users, who could have put anything in it; "
			    "remove it");
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int trust_check_readable(const char *path, GError **err)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return refused(err, -errno, path, g_strerror(errno));
	if (!S_ISREG(st.st_mode))
		return refused(err, -EINVAL, path, "is not a regular file");
	if (st.st_uid != getuid() && st.st_uid != 0)
		return refused(err, -EPERM, path, "belongs to another user, who could change it");
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return refused(err, -EPERM, path, "may be written by other users");
	return 0;
}
