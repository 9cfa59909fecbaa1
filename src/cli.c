/* cli: the pieces every command shares. */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "keyring.h"
#include "log.h"
#include "version.h"

const char *cli_prog = "smarthomefs";

void cli_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_autofree char *scrubbed = log_scrub(msg);
	/* A message may quote a server (an error code, a description): its control
	 * characters are written out. */
	g_autofree char *clean = log_escape(scrubbed);
	fprintf(stderr, "%s: %s\n", cli_prog, clean);
}

/* Options every command shares. */
static char **opt_o;
static gboolean opt_version;

static GOptionEntry common_entries[] = {
    {"option", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &opt_o,
     "Mount or account option, comma-separated (ttl=, timeout=, api_url=, hops_url=, auth_url=, "
     "cafile=, token_store=, cache_dir=, state_dir=, offline, debug, history_days=, "
     "history_budget=, ...)",
     "OPT[,OPT...]"},
    {"version", 'V', 0, G_OPTION_ARG_NONE, &opt_version, "Print the version and exit", NULL},
    G_OPTION_ENTRY_NULL,
};

int cli_parse_args(const char *usage, const char *summary, GOptionEntry *entries, int *argc,
		   char ***argv)
{
	g_autoptr(GOptionContext) ctx = g_option_context_new(usage);
	g_autoptr(GError) err = NULL;
	g_autofree char *base = g_path_get_basename((*argv)[0]);

	/* --help says "smarthomefs status", not "status" (a command's argv[0]). */
	if (!strchr((*argv)[0], '/') && strcmp(base, cli_prog) != 0) {
		g_autofree char *name = g_strdup_printf("%s %s", cli_prog, base);
		g_set_prgname(name);
	} else {
		g_set_prgname(base);
	}
	g_option_context_set_summary(ctx, summary);
	g_option_context_set_description(
	    ctx, "Exit status: 0 success, 1 failure (the message says why), 2 usage or config "
		 "error.\n"
		 "See smarthomefs(1) for the options and the config file.");
	if (entries)
		g_option_context_add_main_entries(ctx, entries, NULL);
	g_option_context_add_main_entries(ctx, common_entries, NULL);
	if (!g_option_context_parse(ctx, argc, argv, &err)) {
		cli_fail("%s (try --help)", err->message);
		return EXIT_USAGE;
	}
	if (opt_version) {
		printf("smarthomefs %s\n", SMARTHOMEFS_VERSION);
		exit(EXIT_OK);
	}
	return EXIT_OK;
}

void cli_add_option(const char *opt)
{
	guint n = opt_o ? g_strv_length(opt_o) : 0;
	opt_o = g_renew(char *, opt_o, n + 2);
	opt_o[n] = g_strdup(opt);
	opt_o[n + 1] = NULL;
}

void cli_cleanup(void)
{
	g_clear_pointer(&opt_o, g_strfreev);
}

int cli_read_options(const char *account, struct options *opts, GError **err)
{
	const char *config = g_getenv("SMARTHOMEFS_CONFIG");
	int r = options_load_config(opts, config, account, err);

	for (char **o = opt_o; r == 0 && o && *o; o++)
		r = options_parse(opts, *o, err);
	return r;
}

char *cli_logged_in(const struct token_store *store)
{
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);

	if (token_store_list(store, ids, NULL) < 0 || ids->len == 0)
		return NULL;
	g_ptr_array_add(ids, NULL);
	return g_strjoinv(", ", (char **)ids->pdata);
}

int cli_load_options(const char *account, struct options *opts)
{
	g_autoptr(GError) err = NULL;

	if (cli_read_options(account, opts, &err) < 0) {
		cli_fail("%s", err->message);
		return EXIT_USAGE;
	}
	log_setup(cli_prog, false, opts->debug);
	return EXIT_OK;
}
