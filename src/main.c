/* main: the command line. `smarthomefs {login,logout,status,mount}`, and the mount
 * helper forms `mount.smarthomefs SOURCE DIR [-o OPTS]` (mount(8), fstab) and
 * `smarthomefs SOURCE DIR -o OPTS` (mount.fuse3 with type fuse.smarthomefs). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <curl/curl.h>
#include <gio/gio.h>
#include <fuse_lowlevel.h>

#include "auth.h"
#include "config.h"
#include "fs.h"
#include "http.h"
#include "keyring.h"
#include "log.h"
#include "oauth.h"
#include "provider.h"
#include "session.h"
#include "version.h"

/* Exit codes, as the man page documents them. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,  /* the command failed: the message says why */
	EXIT_USAGE = 2, /* the command line was wrong */
};

static const char *prog = "smarthomefs";

static void fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_autofree char *clean = log_scrub(msg);
	fprintf(stderr, "%s: %s\n", prog, clean);
}

/* Options every command shares. */
static char **opt_o;
static gboolean opt_version;

static GOptionEntry common_entries[] = {
	{"option", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &opt_o,
	 "Mount or account option, comma-separated (ttl=, timeout=, api_url=, hops_url=, auth_url=, "
	 "cafile=, token_store=, cache_dir=, state_dir=, offline, debug, ...)",
	 "OPT[,OPT...]"},
	{"version", 'V', 0, G_OPTION_ARG_NONE, &opt_version, "Print the version and exit", NULL},
	G_OPTION_ENTRY_NULL,
};

/* Parses argv with @entries plus the common ones. Returns EXIT_OK, or EXIT_USAGE after
 * printing why. */
static int parse_args(const char *usage, const char *summary, GOptionEntry *entries,
		      int *argc, char ***argv)
{
	g_autoptr(GOptionContext) ctx = g_option_context_new(usage);
	g_autoptr(GError) err = NULL;
	g_autofree char *base = g_path_get_basename((*argv)[0]);

	/* --help says "smarthomefs status", not "status" (a command's argv[0]). */
	if (!strchr((*argv)[0], '/') && strcmp(base, prog) != 0) {
		g_autofree char *name = g_strdup_printf("%s %s", prog, base);
		g_set_prgname(name);
	} else {
		g_set_prgname(base);
	}
	g_option_context_set_summary(ctx, summary);
	g_option_context_set_description(
		ctx, "Exit status: 0 success, 1 failure (the message says why), 2 usage error.\n"
		     "See smarthomefs(1) for the options and the config file.");
	if (entries)
		g_option_context_add_main_entries(ctx, entries, NULL);
	g_option_context_add_main_entries(ctx, common_entries, NULL);
	if (!g_option_context_parse(ctx, argc, argv, &err)) {
		fail("%s (try --help)", err->message);
		return EXIT_USAGE;
	}
	if (opt_version) {
		printf("smarthomefs %s\n", SMARTHOMEFS_VERSION);
		exit(EXIT_OK);
	}
	return EXIT_OK;
}

/* Options for @account: the config file's section, then every -o. */
static int load_options(const char *account, struct options *opts)
{
	g_autoptr(GError) err = NULL;
	const char *config = g_getenv("SMARTHOMEFS_CONFIG");

	if (options_load_config(opts, config, account, &err) < 0) {
		fail("%s", err->message);
		return EXIT_USAGE;
	}
	for (char **o = opt_o; o && *o; o++) {
		if (options_parse(opts, *o, &err) < 0) {
			fail("%s", err->message);
			return EXIT_USAGE;
		}
	}
	log_setup(prog, false, opts->debug);
	return EXIT_OK;
}

static struct http_client *new_http_client(const struct options *opts)
{
	g_autofree char *ua = g_strdup_printf("smarthomefs/%s", SMARTHOMEFS_VERSION);
	return http_client_new(opts->cafile, opts->timeout, 1024 * 1024, ua);
}

/* Reads the client secret: from stdin when it is not a terminal, else prompted without
 * echo on the terminal. An empty answer means none. */
static char *read_client_secret(void)
{
	char buf[4096];
	bool tty = isatty(STDIN_FILENO);
	struct termios old, quiet;

	if (tty) {
		fprintf(stderr, "Client secret (input hidden, empty for none): ");
		fflush(stderr);
		if (tcgetattr(STDIN_FILENO, &old) != 0) {
			/* Without it the secret would be echoed, and echo could not be
			 * restored afterwards. */
			fail("cannot turn off echo on this terminal (%s); give the secret on "
			     "stdin instead",
			     g_strerror(errno));
			exit(EXIT_FAIL);
		}
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *line = fgets(buf, sizeof(buf), stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (!line)
		return NULL;
	g_strstrip(buf);
	char *secret = buf[0] ? g_strdup(buf) : NULL;
	explicit_bzero(buf, sizeof(buf));
	return secret;
}

static int cmd_login(int argc, char **argv)
{
	g_autofree char *label = NULL, *client_id = NULL, *scope = NULL, *redirect_uri = NULL;
	int port = 0, timeout = 300;
	gboolean no_browser = FALSE;
	GOptionEntry entries[] = {
		{"account", 'a', 0, G_OPTION_ARG_STRING, &label,
		 "Name this login PROVIDER:NAME, to keep several accounts", "NAME"},
		{"client-id", 0, 0, G_OPTION_ARG_STRING, &client_id,
		 "The OAuth client id you registered (Tibber); the secret is read from stdin "
		 "or prompted",
		 "ID"},
		{"port", 'p', 0, G_OPTION_ARG_INT, &port,
		 "Loopback port for the redirect http://127.0.0.1:N/callback (for clients "
		 "registered with a fixed one)",
		 "N"},
		{"redirect-uri", 0, 0, G_OPTION_ARG_STRING, &redirect_uri,
		 "The client's registered redirect URI, copied exactly: http://localhost:PORT/PATH, "
		 "http://127.0.0.1:PORT/PATH or http://[::1]:PORT/PATH",
		 "URI"},
		{"no-browser", 0, 0, G_OPTION_ARG_NONE, &no_browser,
		 "Do not open a browser; only print the link", NULL},
		{"scope", 0, 0, G_OPTION_ARG_STRING, &scope, "Scopes to ask for (space-separated)",
		 "SCOPES"},
		{"timeout", 0, 0, G_OPTION_ARG_INT, &timeout,
		 "Seconds to wait for the browser (default 300)", "SECONDS"},
		G_OPTION_ENTRY_NULL,
	};
	int r = parse_args("PROVIDER[:NAME] - log in and store the tokens",
			   "Logs in to a cloud account and stores its tokens in the keyring.",
			   entries, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc != 2) {
		fail("login takes one PROVIDER (try --help)");
		return EXIT_USAGE;
	}
	if (redirect_uri) {
		if (port) {
			fail("--port and --redirect-uri both name the port; give only "
			     "--redirect-uri");
			return EXIT_USAGE;
		}
		/* Checked before the secret is asked for or a browser opens. */
		struct loopback_redirect where;
		g_autoptr(GError) e = NULL;
		if (oauth_redirect_parse(redirect_uri, &where, &e) < 0) {
			fail("%s", e->message);
			return EXIT_USAGE;
		}
		oauth_redirect_clear(&where);
	}

	g_autofree char *id = label ? g_strdup_printf("%s:%s", argv[1], label) : g_strdup(argv[1]);
	struct account account = {0};
	g_autoptr(GError) err = NULL;
	g_autoptr(GPtrArray) known = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *json = NULL;
	struct token_store store = {0};
	if (account_parse(id, &account, &err) < 0) {
		fail("%s", err->message);
		return EXIT_USAGE;
	}
	const struct provider *p = account.provider;
	struct options opts;
	options_init(&opts);
	r = load_options(account.id, &opts);
	if (r != EXIT_OK)
		goto out;

	store.kind = opts.token_store;
	store.state_dir = options_state_dir(&opts);
	/* Fail before the user spends minutes in a browser if the tokens cannot be kept. */
	if (token_store_list(&store, known, &err) < 0) {
		fail("%s", err->message);
		r = EXIT_FAIL;
		goto out_store;
	}

	const char *auth_url = opts.auth_url ? opts.auth_url : p->auth_url;
	struct http_client *http = new_http_client(&opts);
	struct token_set ts = {0};
	if (p->login == LOGIN_DEVICE_CODE) {
		r = oauth_device_login(http, p, auth_url, &ts, &err);
	} else {
		if (!client_id) {
			fail("logging in to %s needs the client id you registered there: "
			     "smarthomefs login %s --client-id ID",
			     p->title, p->name);
			r = EXIT_USAGE;
			http_client_free(http);
			goto out_store;
		}
		g_autofree char *secret = read_client_secret();
		struct pkce_login pl = {
			.client_id = client_id,
			.client_secret = secret,
			.scope = scope ? scope : p->scope,
			.redirect_uri = redirect_uri,
			.port = port,
			.open_browser = !no_browser,
			.timeout_s = timeout,
		};
		r = oauth_pkce_login(http, p, auth_url, &pl, &ts, &err);
		if (secret)
			explicit_bzero(secret, strlen(secret));
	}
	http_client_free(http);
	if (r < 0) {
		fail("login failed: %s", err ? err->message : g_strerror(-r));
		r = EXIT_FAIL;
		goto out_tokens;
	}
	g_free(ts.provider);
	ts.provider = g_strdup(p->name);
	json = token_set_to_json(&ts);
	if (token_store_save(&store, account.id, p->name, json, &err) < 0) {
		fail("logged in, but the tokens could not be stored: %s", err->message);
		r = EXIT_FAIL;
	} else {
		printf("Logged in to %s as account '%s'; tokens stored in the %s.\n", p->title,
		       account.id,
		       store.kind == TOKEN_STORE_KEYRING ? "keyring" : "token file");
		r = EXIT_OK;
	}
	explicit_bzero(json, strlen(json));
out_tokens:
	token_set_clear(&ts);
out_store:
	g_free(store.state_dir);
out:
	options_clear(&opts);
	account_clear(&account);
	return r;
}

static int cmd_logout(int argc, char **argv)
{
	int r = parse_args("ACCOUNT - forget an account's tokens",
			   "Removes the stored tokens of ACCOUNT (PROVIDER or PROVIDER:NAME).",
			   NULL, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc != 2) {
		fail("logout takes one ACCOUNT (try --help)");
		return EXIT_USAGE;
	}
	struct account account = {0};
	g_autoptr(GError) err = NULL;
	if (account_parse(argv[1], &account, &err) < 0) {
		fail("%s", err->message);
		return EXIT_USAGE;
	}
	struct options opts;
	options_init(&opts);
	r = load_options(account.id, &opts);
	if (r == EXIT_OK) {
		struct token_store store = {opts.token_store, options_state_dir(&opts)};
		int d = token_store_delete(&store, account.id, &err);
		if (d == -ENOENT) {
			fail("no login is stored for '%s' in the %s", account.id,
			     token_store_name(store.kind));
			r = EXIT_FAIL;
		} else if (d < 0) {
			fail("%s", err->message);
			r = EXIT_FAIL;
		} else {
			printf("Logged out of '%s'.\n", account.id);
		}
		g_free(store.state_dir);
	}
	options_clear(&opts);
	account_clear(&account);
	return r;
}

/* Whether the mount options @opts (from /proc/self/mounts) carry user_id=@uid: FUSE
 * records there who mounted. */
static bool mounted_by(const char *opts, uid_t uid)
{
	g_auto(GStrv) o = g_strsplit(opts, ",", -1);
	for (char **i = o; *i; i++) {
		guint64 v;
		if (g_str_has_prefix(*i, "user_id=") &&
		    g_ascii_string_to_unsigned(*i + strlen("user_id="), 10, 0, G_MAXUINT32, &v,
					       NULL))
			return v == uid;
	}
	return false;
}

/* The mount points of @account made by the calling user, from /proc/self/mounts
 * (fsname is the account). Another user's mount of an account with the same name is
 * their login, from their keyring, not ours: it is left out, for root too (`findmnt
 * -t fuse.smarthomefs` lists every mount). */
static GPtrArray *mounts_of(const char *account)
{
	GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *text = NULL;

	if (!g_file_get_contents("/proc/self/mounts", &text, NULL, NULL))
		return out;
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		g_auto(GStrv) f = g_strsplit(*l, " ", 5);
		if (g_strv_length(f) < 4 || strcmp(f[2], "fuse.smarthomefs") != 0)
			continue;
		if (strcmp(f[0], account) == 0 && mounted_by(f[3], getuid()))
			g_ptr_array_add(out, g_strcompress(f[1]));
	}
	return out;
}

/* One account's status as JSON (never a token). */
static json_t *account_status(const struct token_store *store, const char *id)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *secret = NULL;
	struct token_set ts = {0};
	json_t *o = json_object();

	json_object_set_new(o, "account", json_string(id));
	json_object_set_new(o, "store", json_string(token_store_name(store->kind)));
	if (token_store_load(store, id, &secret, &err) == 0 &&
	    token_set_from_json(secret, &ts) == 0) {
		json_object_set_new(o, "provider", json_string(ts.provider ? ts.provider : "?"));
		if (ts.expires_at > 0) {
			g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(ts.expires_at);
			g_autofree char *when = g_date_time_format(dt, "%Y-%m-%dT%H:%M:%SZ");
			json_object_set_new(o, "access_token_expires", json_string(when));
		}
		json_object_set_new(o, "refresh_token", json_boolean(ts.refresh_token != NULL));
	}
	if (secret)
		explicit_bzero(secret, strlen(secret));
	token_set_clear(&ts);

	g_autoptr(GPtrArray) mounts = mounts_of(id);
	json_t *ma = json_array();
	for (guint i = 0; i < mounts->len; i++) {
		const char *mp = mounts->pdata[i];
		json_t *m = json_pack("{s:s}", "mountpoint", mp);
		g_autofree char *status_path =
			g_build_filename(mp, "." "smarthomefs", "status.json", NULL);
		json_t *st = json_load_file(status_path, 0, NULL);
		json_t *rl = st ? json_object_get(st, "rate_limit") : NULL;
		if (rl)
			json_object_set(m, "rate_limit", rl);
		if (st)
			json_object_set(m, "api_calls", json_object_get(st, "api_calls"));
		json_decref(st);
		json_array_append_new(ma, m);
	}
	json_object_set_new(o, "mounts", ma);
	return o;
}

static int cmd_status(int argc, char **argv)
{
	gboolean as_json = FALSE;
	GOptionEntry entries[] = {
		{"json", 'j', 0, G_OPTION_ARG_NONE, &as_json, "Print JSON for scripts", NULL},
		G_OPTION_ENTRY_NULL,
	};
	int r = parse_args("[ACCOUNT] - show accounts, token expiry, mounts, quota",
			   "Shows each logged-in account: provider, token store, token expiry, "
			   "your mounts of it and their API budget. Never shows a token.",
			   entries, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc > 2) {
		fail("status takes at most one ACCOUNT (try --help)");
		return EXIT_USAGE;
	}
	struct options opts;
	options_init(&opts);
	r = load_options(argc == 2 ? argv[1] : "", &opts);
	if (r != EXIT_OK) {
		options_clear(&opts);
		return r;
	}
	struct token_store store = {opts.token_store, options_state_dir(&opts)};
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GError) err = NULL;
	if (token_store_list(&store, ids, &err) < 0) {
		fail("%s", err->message);
		r = EXIT_FAIL;
		goto out;
	}
	json_t *all = json_array();
	for (guint i = 0; i < ids->len; i++)
		if (argc < 2 || strcmp(ids->pdata[i], argv[1]) == 0)
			json_array_append_new(all, account_status(&store, ids->pdata[i]));
	if (argc == 2 && json_array_size(all) == 0) {
		fail("no login is stored for '%s' in the %s", argv[1],
		     token_store_name(store.kind));
		r = EXIT_FAIL;
	} else if (as_json) {
		g_autoptr(GString) out = g_string_new(NULL);
		provider_render_json(all, out);
		fputs(out->str, stdout);
	} else if (json_array_size(all) == 0) {
		printf("No account is logged in (store: %s). Log in with `smarthomefs login "
		       "PROVIDER`.\n",
		       token_store_name(store.kind));
	} else {
		size_t i;
		json_t *a;
		json_array_foreach(all, i, a)
		{
			printf("%s\n", json_string_value(json_object_get(a, "account")));
			printf("  provider:      %s\n",
			       json_string_value(json_object_get(a, "provider")) ?: "?");
			printf("  store:         %s\n",
			       json_string_value(json_object_get(a, "store")));
			printf("  token expires: %s\n",
			       json_string_value(json_object_get(a, "access_token_expires")) ?:
				       "unknown");
			size_t j;
			json_t *m;
			json_array_foreach(json_object_get(a, "mounts"), j, m)
			{
				json_t *rl = json_object_get(m, "rate_limit");
				json_t *left = rl ? json_object_get(rl, "remaining") : NULL;
				printf("  mounted at:    %s", json_string_value(json_object_get(
								     m, "mountpoint")));
				if (json_is_integer(left))
					printf(" (API calls left: %lld)",
					       (long long)json_integer_value(left));
				printf("\n");
			}
		}
	}
	json_decref(all);
out:
	g_free(store.state_dir);
	options_clear(&opts);
	return r;
}

/* With one account logged in, the ACCOUNT may be left out. */
static int pick_account(const struct options *opts, char **id, GError **err)
{
	struct token_store store = {opts->token_store, options_state_dir(opts)};
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	int r = token_store_list(&store, ids, err);

	g_free(store.state_dir);
	if (r < 0)
		return r;
	if (ids->len == 1) {
		*id = g_strdup(ids->pdata[0]);
		return 0;
	}
	g_set_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
		    ids->len ? "several accounts are logged in: name one (see `smarthomefs status`)"
			     : "no account is logged in: run `smarthomefs login PROVIDER` first");
	return -EINVAL;
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

static int run_mount(const char *account_arg, const char *mountpoint_arg, bool foreground)
{
	int status_fd = -1;
	int r = EXIT_FAIL;
	char mountpoint[PATH_MAX];

	if (!realpath(mountpoint_arg, mountpoint)) {
		fail("cannot mount on %s: %s", mountpoint_arg, g_strerror(errno));
		return EXIT_FAIL;
	}
	/* libsecret starts GDBus threads, which do not survive fork(): fork before anything
	 * touches the keyring, and let the parent wait until the mount is up or failed, so
	 * that `mount` reports failures (the way fuse_daemonize() cannot). */
	if (!foreground) {
		int pipefd[2];
		if (pipe(pipefd) < 0) {
			fail("pipe: %s", g_strerror(errno));
			return EXIT_FAIL;
		}
		pid_t pid = fork();
		if (pid < 0) {
			fail("fork: %s", g_strerror(errno));
			return EXIT_FAIL;
		}
		if (pid > 0) {
			unsigned char st = EXIT_FAIL;
			close(pipefd[1]);
			if (read(pipefd[0], &st, 1) != 1)
				st = EXIT_FAIL;
			_exit(st);
		}
		close(pipefd[0]);
		status_fd = pipefd[1];
		setsid();
	}
	struct options opts;
	options_init(&opts);
	g_autoptr(GError) err = NULL;
	g_autofree char *account_id = account_arg ? g_strdup(account_arg) : NULL;
	struct account account = {0};
	struct session *session = NULL;
	struct fs *fs = NULL;
	struct fuse_session *se = NULL;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	g_autofree char *fuse_opts = NULL;

	if (!account_id) {
		/* The store to look in may only be given by -o. */
		r = load_options("", &opts);
		if (r != EXIT_OK)
			goto out;
		if (pick_account(&opts, &account_id, &err) < 0) {
			fail("%s", err->message);
			r = EXIT_FAIL;
			goto out;
		}
		options_clear(&opts);
		options_init(&opts);
	}
	if (account_parse(account_id, &account, &err) < 0) {
		fail("%s", err->message);
		r = EXIT_USAGE;
		goto out;
	}
	r = load_options(account.id, &opts);
	if (r != EXIT_OK)
		goto out;
	r = EXIT_FAIL;

	{
		g_autoptr(GString) o = g_string_new("ro,default_permissions,subtype=smarthomefs");
		g_autofree char *fsname = g_strescape(account.id, NULL);
		g_string_append_printf(o, ",fsname=%s", fsname);
		if (opts.allow_other)
			g_string_append(o, ",allow_other");
		for (guint i = 0; i < opts.fuse_opts->len; i++)
			g_string_append_printf(o, ",%s", (char *)opts.fuse_opts->pdata[i]);
		fuse_opts = g_strdup(o->str);
	}
	fuse_opt_add_arg(&args, prog);
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, fuse_opts);
	int max_threads = opts.max_threads;
	bool debug = opts.debug;

	session = session_new(&account, &opts);
	if (session_start(session, &err) < 0) {
		fail("%s", err ? err->message : "cannot load the login");
		goto out;
	}
	fs = fs_new(session);
	se = fuse_session_new(&args, fs_operations(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se) {
		fail("cannot start a FUSE session (bad options?)");
		goto out;
	}
	fs_set_fuse_session(fs, se);
	if (fuse_set_signal_handlers(se) != 0) {
		fail("cannot set signal handlers");
		goto out;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		fail("cannot mount on %s (is it an empty directory you may use, and is "
		     "/dev/fuse there?)",
		     mountpoint);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	if (!foreground) {
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
		log_setup(prog, true, debug);
		report_start(status_fd, EXIT_OK);
		status_fd = -1;
	}
	log_info("mounted %s on %s", account.id, mountpoint);

	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_max_threads(cfg, (unsigned)max_threads);
	/* Workers beyond two end when a burst is over: each idle one keeps its stack, its
	 * request buffer and its curl handle, and a new one costs a thread start only. */
	fuse_loop_cfg_set_idle_threads(cfg, 2);
	int loop = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	log_info("unmounted %s", mountpoint);
	r = loop == 0 ? EXIT_OK : EXIT_FAIL;
out:
	if (se)
		fuse_session_destroy(se);
	fs_free(fs);
	session_free(session);
	fuse_opt_free_args(&args);
	options_clear(&opts);
	account_clear(&account);
	report_start(status_fd, (unsigned char)r);
	return r;
}

static int cmd_mount(int argc, char **argv, bool helper)
{
	gboolean foreground = FALSE, sloppy = FALSE, fake = FALSE, no_mtab = FALSE,
		 verbose = FALSE;
	GOptionEntry entries[] = {
		{"foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground,
		 "Stay in the foreground, log to stderr", NULL},
		G_OPTION_ENTRY_NULL,
	};
	/* mount(8)'s calling convention for helpers: -s sloppy, -f fake, -n no mtab,
	 * -v verbose. */
	GOptionEntry helper_entries[] = {
		{"sloppy", 's', 0, G_OPTION_ARG_NONE, &sloppy, "Ignored (mount(8) convention)",
		 NULL},
		{"fake", 'f', 0, G_OPTION_ARG_NONE, &fake,
		 "Check the options and the config file, do not mount (mount(8) convention)",
		 NULL},
		{"no-mtab", 'n', 0, G_OPTION_ARG_NONE, &no_mtab, "Ignored", NULL},
		{"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log request lines", NULL},
		G_OPTION_ENTRY_NULL,
	};
	int r = parse_args("[ACCOUNT] MOUNTPOINT - mount an account",
			   "Mounts a cloud account as files. ACCOUNT is PROVIDER or "
			   "PROVIDER:NAME; with one account logged in it may be left out.",
			   helper ? helper_entries : entries, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc < 2 || argc > 3) {
		fail("mount takes [ACCOUNT] MOUNTPOINT (try --help)");
		return EXIT_USAGE;
	}
	if (verbose) {
		char **o = g_new0(char *, g_strv_length(opt_o) + 2);
		for (guint i = 0; opt_o && opt_o[i]; i++)
			o[i] = g_strdup(opt_o[i]);
		o[g_strv_length(o)] = g_strdup("debug");
		g_strfreev(opt_o);
		opt_o = o;
	}
	if (fake) {
		/* mount -f: check the options and the config file, but do not mount. */
		struct options opts;
		options_init(&opts);
		r = load_options(argc == 3 ? argv[1] : "", &opts);
		options_clear(&opts);
		return r;
	}
	return run_mount(argc == 3 ? argv[1] : NULL, argv[argc - 1], foreground);
}

static void usage(FILE *to)
{
	fprintf(to,
		"Usage:\n"
		"  smarthomefs login PROVIDER [--account NAME] [--client-id ID]\n"
		"  smarthomefs logout ACCOUNT\n"
		"  smarthomefs status [ACCOUNT] [--json]\n"
		"  smarthomefs mount [ACCOUNT] MOUNTPOINT [-f] [-o OPT[,OPT...]]\n"
		"  mount.smarthomefs [ACCOUNT] MOUNTPOINT [-o OPT[,OPT...]]\n"
		"\n"
		"Mounts a smart-home cloud account (tado, tibber) as files.\n"
		"ACCOUNT is PROVIDER or PROVIDER:NAME. `smarthomefs COMMAND --help` for more;\n"
		"smarthomefs(1) for options, the config file and exit status.\n");
}

int main(int argc, char **argv)
{
	g_autofree char *base = g_path_get_basename(argv[0]);
	int r;

	/* One malloc arena for all threads, set before any starts: with one per FUSE
	 * worker and prefetch thread, each keeps its own freed memory; one arena takes
	 * some 5 MiB off bench/run's peak with 10 000 devices, no timing moved past noise. */
	mallopt(M_ARENA_MAX, 1);
	/* The terminal's character set for --help (GLib writes "…" as "?" in the C locale);
	 * only LC_CTYPE, so that numbers in logs and files keep their decimal point. */
	setlocale(LC_CTYPE, "");
	/* Every command holds a token, a client secret or an authorization code at some
	 * point: no core dumps, no ptrace by other users' processes. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_setup(prog, false, false);
	if (g_str_has_prefix(base, "mount.")) {
		prog = "mount.smarthomefs";
		r = cmd_mount(argc, argv, true);
	} else if (argc < 2) {
		usage(stderr);
		r = EXIT_USAGE;
	} else if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
		   !strcmp(argv[1], "help")) {
		usage(stdout);
		r = EXIT_OK;
	} else if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("smarthomefs %s\n", SMARTHOMEFS_VERSION);
		r = EXIT_OK;
	} else if (!strcmp(argv[1], "login")) {
		r = cmd_login(argc - 1, argv + 1);
	} else if (!strcmp(argv[1], "logout")) {
		r = cmd_logout(argc - 1, argv + 1);
	} else if (!strcmp(argv[1], "status")) {
		r = cmd_status(argc - 1, argv + 1);
	} else if (!strcmp(argv[1], "mount")) {
		r = cmd_mount(argc - 1, argv + 1, false);
	} else if (argc >= 3 && argv[1][0] != '-' && g_file_test(argv[2], G_FILE_TEST_IS_DIR)) {
		/* mount.fuse3 runs `smarthomefs SOURCE MOUNTPOINT -o OPTS` for the
		 * fuse.smarthomefs type. */
		r = cmd_mount(argc, argv, true);
	} else {
		fail("unknown command '%s'", argv[1]);
		usage(stderr);
		r = EXIT_USAGE;
	}
	g_strfreev(opt_o);
	curl_global_cleanup();
	return r;
}
