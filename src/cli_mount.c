/* cli_mount: `smarthomefs mount [ACCOUNT] DIR` and the mount helper forms. Forks before
 * anything touches the keyring, starts the session and the filesystem, mounts, detaches
 * from the terminal and serves FUSE requests until unmounted. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <gio/gio.h>

#include "cli.h"
#include "config.h"
#include "fs.h"
#include "keyring.h"
#include "log.h"
#include "accounts.h"
#include "session.h"

/* mount(8) runs a user's helper without HOME, and mount.fuse3 sets HOME=/root: the
 * user's config file, disk cache and state would be looked for where they are not, the
 * cache silently lost. For a user (not root, whose HOME-less boot mounts use the system
 * directories), a HOME that is missing or not a directory of the caller's own gives way
 * to the password entry's. Before anything asks GLib for a directory: it keeps the
 * first answer. */
static void home_of_the_caller(void)
{
	const char *home = g_getenv("HOME");
	struct stat st;
	uid_t uid = getuid();

	if (uid == 0 || (home && g_path_is_absolute(home) && stat(home, &st) == 0 &&
			 S_ISDIR(st.st_mode) && st.st_uid == uid))
		return;
	struct passwd *pw = getpwuid(uid);
	if (pw && pw->pw_dir && g_path_is_absolute(pw->pw_dir))
		g_setenv("HOME", pw->pw_dir, TRUE);
}

/* The directories of @path that do not exist yet, deepest first: what a mount that
 * fails must not leave behind when it made them. */
static GPtrArray *missing_dirs(const char *path)
{
	GPtrArray *missing = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *dir = g_strdup(path);

	while (g_path_is_absolute(dir) && !g_file_test(dir, G_FILE_TEST_EXISTS)) {
		char *parent = g_path_get_dirname(dir);
		g_ptr_array_add(missing, g_steal_pointer(&dir));
		dir = parent;
	}
	return missing;
}

/* Makes the disk cache's directory; false after saying why a remount will fetch
 * everything again. */
static bool cache_dir_usable(const char *dir)
{
	if (g_mkdir_with_parents(dir, 0700) == 0 && access(dir, W_OK | X_OK) == 0)
		return true;
	log_warn("no disk cache: cannot use %s (%s); every mount fetches everything anew "
		 "(set cache_dir= to a directory of yours)",
		 dir, g_strerror(errno));
	return false;
}

/* The filesystem type and source of the mount on top of @path, if @path is a mount
 * point (NULL if not), from /proc/self/mountinfo: no stat, which a dead or another
 * user's FUSE mount refuses. */
static char *mounted_on(const char *path)
{
	g_autofree char *text = NULL;
	char *found = NULL;

	if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL))
		return NULL;
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE ... */
		g_auto(GStrv) f = g_strsplit(*l, " ", -1);
		const char *sep = strstr(*l, " - ");
		if (g_strv_length(f) < 5 || !sep)
			continue;
		g_autofree char *mp = g_strcompress(f[4]); /* octal escapes: \040 a space */
		if (strcmp(mp, path) != 0)
			continue;
		g_auto(GStrv) tail = g_strsplit(sep + 3, " ", 3);
		g_free(found); /* a later line is a mount on top of an earlier one */
		found = g_strdup_printf("%s %s", tail[0], tail[0] && tail[1] ? tail[1] : "");
	}
	return found;
}

/* Whether fusermount3 lets this user mount with allow_other: root always, a user when
 * /etc/fuse.conf has a line user_allow_other. */
static bool allow_other_allowed(void)
{
	g_autofree char *conf = NULL;

	if (getuid() == 0)
		return true;
	if (!g_file_get_contents("/etc/fuse.conf", &conf, NULL, NULL))
		return false;
	g_auto(GStrv) lines = g_strsplit(conf, "\n", -1);
	for (char **l = lines; *l; l++)
		if (strcmp(g_strstrip(*l), "user_allow_other") == 0)
			return true;
	return false;
}

/* The mount point, made absolute, once checked: not already a FUSE mount (fusermount3
 * would say "Permission denied", or stack a second mount), and a directory we can
 * resolve. NULL after saying why. */
static char *mountpoint_check(const char *arg)
{
	g_autofree char *abs = g_canonicalize_filename(arg, NULL);
	g_autofree char *on = mounted_on(abs);
	char real[PATH_MAX];

	if (on && g_str_has_prefix(on, "fuse")) {
		cli_fail("%s is already mounted (%s); unmount it first: fusermount3 -u %s", abs, on,
			 abs);
		return NULL;
	}
	if (!realpath(arg, real)) {
		int e = errno;
		if (e == ENOENT)
			cli_fail("cannot mount on %s: no such directory; make it first: mkdir -p %s",
				 arg, arg);
		else
			cli_fail("cannot mount on %s: %s", arg, g_strerror(e));
		return NULL;
	}
	g_free(on);
	on = mounted_on(real);
	if (on && g_str_has_prefix(on, "fuse")) {
		cli_fail("%s is already mounted (%s); unmount it first: fusermount3 -u %s", real,
			 on, real);
		return NULL;
	}
	/* fusermount3 mounts on a file of the user's too, where the tree's root directory
	 * then fails every access with EIO. */
	if (!g_file_test(real, G_FILE_TEST_IS_DIR)) {
		cli_fail("cannot mount on %s: not a directory", real);
		return NULL;
	}
	return g_strdup(real);
}

/* Tells the waiting parent how the start went (0 mounted), then lets it exit. */
static void report_start(int fd, unsigned char status)
{
	if (fd >= 0) {
		ssize_t n = write(fd, &status, 1);
		(void)n;
		close(fd);
	}
}

/* libsecret starts GDBus threads, which do not survive fork(): fork before anything
 * touches the keyring, and let the parent wait until the mount is up or failed, so that
 * `mount` reports failures (the way fuse_daemonize() cannot). Returns, in the child, the
 * pipe to report_start() on, or -1 after printing why it could not fork. The parent
 * never returns. */
static int fork_daemon(void)
{
	int pipefd[2];
	if (pipe(pipefd) < 0) {
		cli_fail("pipe: %s", g_strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		cli_fail("fork: %s", g_strerror(errno));
		return -1;
	}
	if (pid > 0) {
		unsigned char st = EXIT_FAIL;
		close(pipefd[1]);
		if (read(pipefd[0], &st, 1) != 1)
			st = EXIT_FAIL;
		_exit(st);
	}
	close(pipefd[0]);
	setsid();
	return pipefd[1];
}

/* The account to mount and its options. */
static int mount_account(const char *account_arg, struct account *account, struct options *opts)
{
	g_autoptr(GError) err = NULL;

	if (account_parse(account_arg, account, &err) < 0) {
		cli_fail("%s", err->message);
		return EXIT_USAGE;
	}
	return cli_load_options(account->id, opts);
}

/* libfuse's arguments for mounting @source (the account, or ALL_ACCOUNTS): read-only,
 * the kernel checks permissions, the source as fsname, and the user's own libfuse
 * options. */
static void mount_fuse_args(const char *source, const struct options *opts,
			    struct fuse_args *args)
{
	g_autoptr(GString) o = g_string_new("ro,default_permissions,subtype=smarthomefs");
	g_autofree char *fsname = g_strescape(source, NULL);
	g_string_append_printf(o, ",fsname=%s", fsname);
	if (opts->allow_other)
		g_string_append(o, ",allow_other");
	for (guint i = 0; i < opts->fuse_opts->len; i++)
		g_string_append_printf(o, ",%s", (char *)opts->fuse_opts->pdata[i]);
	fuse_opt_add_arg(args, cli_prog);
	fuse_opt_add_arg(args, "-o");
	fuse_opt_add_arg(args, o->str);
}

/* A FUSE session for @fs, with signal handlers, mounted on @mountpoint; NULL after
 * printing why not. */
static struct fuse_session *mount_fuse(struct fs *fs, struct fuse_args *args,
				       const char *mountpoint)
{
	struct fuse_session *se =
	    fuse_session_new(args, fs_operations(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se) {
		cli_fail("cannot start a FUSE session (bad options?)");
		return NULL;
	}
	fs_set_fuse_session(fs, se);
	if (fuse_set_signal_handlers(se) != 0) {
		cli_fail("cannot set signal handlers");
		fuse_session_destroy(se);
		return NULL;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		cli_fail("cannot mount on %s (is it a directory you may write, and is /dev/fuse "
			 "there?)",
			 mountpoint);
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
		return NULL;
	}
	return se;
}

/* The daemon leaves the terminal: stdio to /dev/null, the log to syslog. */
static void detach(bool debug)
{
	int null = open("/dev/null", O_RDWR);
	if (chdir("/") != 0)
		log_warn("chdir /: %s", g_strerror(errno));
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	log_setup(cli_prog, true, debug);
}

/* Serves FUSE requests until the mount goes away: 0 on an unmount, or the number of the
 * signal that ended it (libfuse's handlers end the loop on SIGTERM, SIGINT and SIGHUP),
 * or another error. */
static int serve(struct fuse_session *se, int max_threads)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_max_threads(cfg, (unsigned)max_threads);
	/* Workers beyond two end when a burst is over: each idle one keeps its stack, its
	 * request buffer and its curl handle, and a new one costs a thread start only. */
	fuse_loop_cfg_set_idle_threads(cfg, 2);
	int loop = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return loop;
}

/* What a mount starts with, one account or all. */
struct mount_start {
	struct accounts *accounts;
	char *source;	 /* fsname: the account, or ALL_ACCOUNTS */
	int max_threads; /* the mount's options, read before the sessions take theirs */
	bool debug;
	bool allow_other;
	struct fuse_args args;
	GPtrArray *made; /* directories made for the mount: removed when it fails */
	GHashTable *cache_dirs; /* all accounts: cache directory -> the account using it */
	char *no_cache;		/* a cache directory that could not be used, said again
				 * in the journal once detached */
};

/* Adds to @ms->made the directories of @dir that do not exist, and makes @dir; false
 * when it cannot be used. */
static bool make_cache_dir(struct mount_start *ms, const char *dir)
{
	g_autoptr(GPtrArray) missing = missing_dirs(dir);

	for (guint i = 0; ms->made && i < missing->len; i++)
		g_ptr_array_add(ms->made, g_strdup(missing->pdata[i]));
	if (cache_dir_usable(dir))
		return true;
	if (!ms->no_cache)
		ms->no_cache = g_strdup(dir);
	return false;
}

/* The mount of @account_arg alone. */
static int start_one(const char *account_arg, struct mount_start *ms)
{
	struct options opts;
	struct account account = {0};
	g_autoptr(GError) err = NULL;
	g_autofree char *cache_dir = NULL;
	int r;

	options_init(&opts);
	r = mount_account(account_arg, &account, &opts);
	if (r != EXIT_OK)
		goto out;
	r = EXIT_FAIL;
	if (options_check_trust(&opts, account.id, &err) < 0) {
		cli_fail("%s", err->message);
		goto out;
	}
	mount_fuse_args(account.id, &opts, &ms->args);
	ms->source = g_strdup(account.id);
	/* The session takes the options over. */
	ms->max_threads = opts.max_threads;
	ms->debug = opts.debug;
	ms->allow_other = opts.allow_other;
	cache_dir = options_cache_dir(&opts, account.id);
	make_cache_dir(ms, cache_dir);
	struct token_store store; /* before the session takes the options */
	options_token_store(&opts, &store);
	struct session *session = session_new(&account, &opts);
	ms->accounts = accounts_new_one(session);
	/* The account before the directory: a login that is missing is the first thing
	 * to mend. */
	if (session_start(session, &err) < 0) {
		/* A misspelled account: name the ones there are. */
		g_autofree char *in = g_error_matches(err, G_IO_ERROR, G_IO_ERROR_NOT_FOUND)
					  ? cli_logged_in(&store)
					  : NULL;
		cli_fail("%s%s%s%s", err ? err->message : "cannot load the login",
			 in ? " Logged in: " : "", in ?: "", in ? "." : "");
		token_store_clear(&store);
		goto out;
	}
	token_store_clear(&store);
	r = EXIT_OK;
out:
	options_clear(&opts);
	account_clear(&account);
	return r;
}

/* accounts_open_fn of a mount of all accounts: the session of @id, with the options of
 * its section of the config file and -o, started. Two accounts may not share a cache
 * directory (the same -o cache_dir= for all): their copies would mix. */
static int open_account(void *data, const char *id, struct session **ret, GError **err)
{
	struct mount_start *ms = data;
	struct account account = {0};
	struct options opts;
	g_autofree char *cache_dir = NULL;
	int r;

	options_init(&opts);
	r = account_parse(id, &account, err);
	if (r == 0)
		r = cli_read_options(account.id, &opts, err);
	if (r == 0)
		r = options_check_trust(&opts, account.id, err);
	if (r == 0) {
		cache_dir = options_cache_dir(&opts, account.id);
		const char *other = g_hash_table_lookup(ms->cache_dirs, cache_dir);
		if (other && strcmp(other, account.id) != 0) {
			g_set_error(err, G_IO_ERROR, G_IO_ERROR_EXISTS,
				    "the accounts %s and %s would share the cache directory %s: "
				    "give each its own cache_dir= in its section of the config file",
				    other, account.id, cache_dir);
			r = -EEXIST;
		}
	}
	if (r == 0) {
		make_cache_dir(ms, cache_dir);
		struct session *session = session_new(&account, &opts);
		r = session_start(session, err);
		if (r < 0) {
			session_free(session);
		} else {
			g_hash_table_replace(ms->cache_dirs, g_strdup(cache_dir),
					     g_strdup(account.id));
			*ret = session;
		}
	}
	options_clear(&opts);
	account_clear(&account);
	return r;
}

/* The mount of every account logged in: the mount's own options from -o, each
 * account's from its section of the config file and -o. */
static int start_all(struct mount_start *ms)
{
	struct options opts;
	struct token_store store;
	g_autoptr(GError) err = NULL;

	options_init(&opts);
	int r = cli_load_options("", &opts);
	if (r != EXIT_OK) {
		options_clear(&opts);
		return r;
	}
	if (options_check_trust(&opts, NULL, &err) < 0) {
		cli_fail("%s", err->message);
		options_clear(&opts);
		return EXIT_FAIL;
	}
	mount_fuse_args(ALL_ACCOUNTS, &opts, &ms->args);
	ms->source = g_strdup(ALL_ACCOUNTS);
	ms->max_threads = opts.max_threads;
	ms->debug = opts.debug;
	ms->allow_other = opts.allow_other;
	ms->cache_dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	g_autofree char *own_dir = options_cache_dir(&opts, ALL_ACCOUNTS);
	g_autoptr(GPtrArray) missing = missing_dirs(own_dir);
	for (guint i = 0; i < missing->len; i++)
		g_ptr_array_add(ms->made, g_strdup(missing->pdata[i]));
	options_token_store(&opts, &store);
	ms->accounts = accounts_new_all(&opts, &store, open_account, ms);
	token_store_clear(&store);
	if (accounts_start(ms->accounts, true, &err) < 0) {
		cli_fail("%s", err ? err->message : "cannot load the logins");
		/* No account could be served because of a config file or option error: a
		 * retry (smarthomefs.service's) cannot mend that. */
		return config_error(err) ? EXIT_USAGE : EXIT_FAIL;
	}
	return EXIT_OK;
}

static int run_mount(const char *account_arg, const char *mountpoint_arg, bool foreground)
{
	int status_fd = -1;
	if (!foreground) {
		status_fd = fork_daemon();
		if (status_fd < 0)
			return EXIT_FAIL;
	}

	struct mount_start ms = {.args = FUSE_ARGS_INIT(0, NULL)};
	struct fs *fs = NULL;
	struct fuse_session *se = NULL;
	g_autofree char *mountpoint = NULL;
	bool all = !account_arg || strcmp(account_arg, ALL_ACCOUNTS) == 0;
	int r;

	ms.made = g_ptr_array_new_with_free_func(g_free);
	r = all ? start_all(&ms) : start_one(account_arg, &ms);
	if (r != EXIT_OK)
		goto out;
	r = EXIT_FAIL;
	mountpoint = mountpoint_check(mountpoint_arg);
	if (!mountpoint)
		goto out;
	if (ms.allow_other && !allow_other_allowed()) {
		cli_fail("allow_other is refused to users unless /etc/fuse.conf has the line "
			 "user_allow_other (root's to add); mount without it");
		goto out;
	}
	fs = fs_new(ms.accounts);
	se = mount_fuse(fs, &ms.args, mountpoint);
	if (!se)
		goto out;
	if (!foreground) {
		detach(ms.debug);
		report_start(status_fd, EXIT_OK);
		status_fd = -1;
		if (ms.no_cache) /* said on the terminal; now in the journal too */
			cache_dir_usable(ms.no_cache);
		accounts_say_unopened(ms.accounts); /* the same for the accounts skipped */
	}
	g_ptr_array_set_size(ms.made, 0);
	log_info("mounted %s on %s", ms.source, mountpoint);

	int ended = serve(se, ms.max_threads);
	/* A stop asked for (systemctl stop sends SIGTERM when the mount is busy and
	 * fusermount3 -u failed; a terminal's ^C) is a success, as an unmount is: else
	 * every logout with a shell in the mount would leave the unit failed. */
	bool stopped = ended == SIGTERM || ended == SIGINT || ended == SIGHUP;
	if (stopped)
		log_info("stopped by %s", strsignal(ended));
	r = ended == 0 || stopped ? EXIT_OK : EXIT_FAIL;
	accounts_stop(ms.accounts);
	fs_stop(fs);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	log_info("unmounted %s", mountpoint);
out:
	if (se)
		fuse_session_destroy(se);
	if (ms.accounts)
		accounts_stop(ms.accounts);
	fs_free(fs);
	accounts_free(ms.accounts);
	/* A mount that failed leaves no empty cache directories of its making. */
	for (guint i = 0; i < ms.made->len; i++)
		if (rmdir(ms.made->pdata[i]) < 0)
			break;
	g_ptr_array_unref(ms.made);
	if (ms.cache_dirs)
		g_hash_table_destroy(ms.cache_dirs);
	g_free(ms.source);
	g_free(ms.no_cache);
	fuse_opt_free_args(&ms.args);
	report_start(status_fd, (unsigned char)r);
	return r;
}

/* mount --help's summary: what it does, and the bounds with their defaults (from
 * options_init, so that the help cannot tell another number than the code uses). */
static char *mount_summary(void)
{
	struct options o;

	options_init(&o);
	char *summary = g_strdup_printf(
	    "Mounts a cloud account as files. ACCOUNT is PROVIDER or PROVIDER:NAME; left out "
	    "(or \"all\"), every account logged in is mounted in one tree, and accounts logged "
	    "in or out later join or leave it.\n\n"
	    "Bounds (-o NAME=N; the defaults): cache_memory_mib=%d, cache_disk_mib=%d, "
	    "render_memory_mib=%d, max_entries=%d, prefetch_max=%d.",
	    o.cache_memory_mib, o.cache_disk_mib, o.render_memory_mib, o.max_entries,
	    o.prefetch_max);
	options_clear(&o);
	return summary;
}

int cli_mount(int argc, char **argv, bool helper)
{
	g_autofree char *summary = mount_summary();
	gboolean foreground = FALSE, sloppy = FALSE, fake = FALSE, no_mtab = FALSE, verbose = FALSE;
	GOptionEntry entries[] = {
	    {"foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground,
	     "Stay in the foreground, log to stderr", NULL},
	    G_OPTION_ENTRY_NULL,
	};
	/* mount(8)'s calling convention for helpers: -s sloppy, -f fake, -n no mtab,
	 * -v verbose. */
	GOptionEntry helper_entries[] = {
	    {"sloppy", 's', 0, G_OPTION_ARG_NONE, &sloppy, "Ignored (mount(8) convention)", NULL},
	    {"fake", 'f', 0, G_OPTION_ARG_NONE, &fake,
	     "Check the options and the config file, do not mount (mount(8) convention)", NULL},
	    {"no-mtab", 'n', 0, G_OPTION_ARG_NONE, &no_mtab, "Ignored", NULL},
	    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log request lines", NULL},
	    G_OPTION_ENTRY_NULL,
	};
	home_of_the_caller();
	int r = cli_parse_args("[ACCOUNT] MOUNTPOINT - mount an account, or all of them", summary,
			       helper ? helper_entries : entries, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc < 2 || argc > 3) {
		cli_fail("mount takes [ACCOUNT] MOUNTPOINT (try --help)");
		return EXIT_USAGE;
	}
	if (verbose)
		cli_add_option("debug");
	if (fake) {
		/* mount -f: check the account, the options and the config file, but do not
		 * mount: a misspelled account in fstab is a usage error here too. */
		const char *source = argc == 3 ? argv[1] : ALL_ACCOUNTS;
		struct options opts;
		options_init(&opts);
		if (strcmp(source, ALL_ACCOUNTS) == 0) {
			/* Each account logged in reads its own section. */
			g_autoptr(GError) err = NULL;
			r = cli_load_options("", &opts);
			if (r == EXIT_OK &&
			    options_check_config(g_getenv("SMARTHOMEFS_CONFIG"), &err) < 0) {
				cli_fail("%s", err->message);
				r = EXIT_USAGE;
			}
		} else {
			struct account account = {0};
			r = mount_account(source, &account, &opts);
			account_clear(&account);
		}
		options_clear(&opts);
		return r;
	}
	return run_mount(argc == 3 ? argv[1] : NULL, argv[argc - 1], foreground);
}
