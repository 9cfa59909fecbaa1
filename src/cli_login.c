/* cli_login: `smarthomefs login PROVIDER`: runs the provider's login flow and stores the
 * token set it got. */
#include <errno.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "http.h"
#include "keyring.h"
#include "oauth.h"
#include "provider.h"
#include "token.h"
#include "version.h"

static struct http_client *login_http_client(const struct options *opts)
{
	return http_client_new(opts->cafile, opts->timeout, 1024 * 1024, NULL);
}

/* Reads the client secret: from stdin when it is not a terminal, else prompted without
 * echo on the terminal. An empty answer means none. */
static char *read_client_secret(void)
{
	char buf[4096];
	bool tty = isatty(STDIN_FILENO);
	struct termios old, quiet;

	if (tty) {
		if (tcgetattr(STDIN_FILENO, &old) != 0) {
			/* Without it the secret would be echoed, and echo could not be
			 * restored afterwards. */
			cli_fail("cannot turn off echo on this terminal (%s); give the secret on "
				 "stdin instead",
				 g_strerror(errno));
			exit(EXIT_FAIL);
		}
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		/* The prompt only once echo is off: TCSAFLUSH drops what was typed before
		 * it, so a secret typed (or pasted) as soon as the prompt shows is kept. */
		fprintf(stderr, "Client secret (input hidden, empty for none): ");
		fflush(stderr);
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

/* What the command line asked of the login. */
struct login_args {
	char *label, *client_id, *scope, *redirect_uri;
	int port, timeout_s;
	gboolean no_browser;
};

/* Checks the arguments that need no network: EXIT_OK or EXIT_USAGE after saying why. */
static int check_args(const struct login_args *a)
{
	if (!a->redirect_uri)
		return EXIT_OK;
	if (a->port) {
		cli_fail("--port and --redirect-uri both name the port; give only --redirect-uri");
		return EXIT_USAGE;
	}
	/* Checked before the secret is asked for or a browser opens. */
	struct loopback_redirect where;
	g_autoptr(GError) e = NULL;
	if (oauth_redirect_parse(a->redirect_uri, &where, &e) < 0) {
		cli_fail("%s", e->message);
		return EXIT_USAGE;
	}
	oauth_redirect_clear(&where);
	return EXIT_OK;
}

/* Runs @p's login flow, filling @ts. An exit status, after saying why when not EXIT_OK. */
static int run_flow(const struct login_args *a, const struct provider *p,
		    const struct options *opts, struct token_set *ts)
{
	if (p->login != LOGIN_DEVICE_CODE && !a->client_id) {
		cli_fail("logging in to %s needs the client id you registered there: "
			 "smarthomefs login %s --client-id ID",
			 p->title, p->name);
		return EXIT_USAGE;
	}
	const char *auth_url = opts->auth_url ? opts->auth_url : p->auth_url;
	struct http_client *http = login_http_client(opts);
	g_autoptr(GError) err = NULL;
	int r;
	if (p->login == LOGIN_DEVICE_CODE) {
		r = oauth_device_login(http, p, auth_url, ts, &err);
	} else {
		g_auto(secret_str) secret = read_client_secret();
		struct pkce_login pl = {
		    .client_id = a->client_id,
		    .client_secret = secret,
		    .scope = a->scope ? a->scope : p->scope,
		    .redirect_uri = a->redirect_uri,
		    .port = a->port,
		    .open_browser = !a->no_browser,
		    .timeout_s = a->timeout_s,
		};
		r = oauth_pkce_login(http, p, auth_url, &pl, ts, &err);
	}
	http_client_free(http);
	if (r < 0) {
		cli_fail("login failed: %s", err ? err->message : g_strerror(-r));
		return EXIT_FAIL;
	}
	g_free(ts->provider);
	ts->provider = g_strdup(p->name);
	return EXIT_OK;
}

int cli_login(int argc, char **argv)
{
	struct login_args a = {.timeout_s = 300};
	GOptionEntry entries[] = {
	    {"account", 'a', 0, G_OPTION_ARG_STRING, &a.label,
	     "Name this login PROVIDER:NAME, to keep several accounts", "NAME"},
	    {"client-id", 0, 0, G_OPTION_ARG_STRING, &a.client_id,
	     "The OAuth client id you registered (Tibber); the secret is read from stdin "
	     "or prompted",
	     "ID"},
	    {"port", 'p', 0, G_OPTION_ARG_INT, &a.port,
	     "Loopback port for the redirect http://127.0.0.1:N/callback (for clients "
	     "registered with a fixed one)",
	     "N"},
	    {"redirect-uri", 0, 0, G_OPTION_ARG_STRING, &a.redirect_uri,
	     "The client's registered redirect URI, copied exactly: http://localhost:PORT/PATH, "
	     "http://127.0.0.1:PORT/PATH or http://[::1]:PORT/PATH",
	     "URI"},
	    {"no-browser", 0, 0, G_OPTION_ARG_NONE, &a.no_browser,
	     "Do not open a browser; only print the link", NULL},
	    {"scope", 0, 0, G_OPTION_ARG_STRING, &a.scope, "Scopes to ask for (space-separated)",
	     "SCOPES"},
	    {"timeout", 0, 0, G_OPTION_ARG_INT, &a.timeout_s,
	     "Seconds to wait for the browser (default 300)", "SECONDS"},
	    G_OPTION_ENTRY_NULL,
	};
	struct account account = {0};
	struct options opts;
	struct token_store store = {0};
	struct token_set ts = {0};
	g_autoptr(GError) err = NULL;
	g_autoptr(GPtrArray) known = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *id = NULL;

	options_init(&opts);
	int r = cli_parse_args("PROVIDER[:NAME] - log in and store the tokens",
			       "Logs in to a cloud account and stores its tokens in the keyring.",
			       entries, &argc, &argv);
	if (r != EXIT_OK)
		goto out;
	r = EXIT_USAGE;
	if (argc != 2) {
		cli_fail("login takes one PROVIDER (try --help)");
		goto out;
	}
	if (check_args(&a) != EXIT_OK)
		goto out;
	id = a.label ? g_strdup_printf("%s:%s", argv[1], a.label) : g_strdup(argv[1]);
	if (account_parse(id, &account, &err) < 0) {
		cli_fail("%s", err->message);
		goto out;
	}
	r = cli_load_options(account.id, &opts);
	if (r != EXIT_OK)
		goto out;

	if (options_check_trust(&opts, NULL, &err) < 0) {
		cli_fail("%s", err->message);
		r = EXIT_FAIL;
		goto out;
	}
	options_token_store(&opts, &store);
	/* Fail before the user spends minutes in a browser if the tokens cannot be kept. */
	if (token_store_list(&store, known, &err) < 0) {
		cli_fail("%s", err->message);
		r = EXIT_FAIL;
		goto out;
	}
	r = run_flow(&a, account.provider, &opts, &ts);
	if (r != EXIT_OK)
		goto out;
	if (token_set_save(&store, account.id, &ts, &err) < 0) {
		cli_fail("logged in, but the tokens could not be stored: %s", err->message);
		r = EXIT_FAIL;
		goto out;
	}
	printf("Logged in to %s as account '%s'; tokens stored in the %s.\n",
	       account.provider->title, account.id,
	       store.kind == TOKEN_STORE_KEYRING ? "keyring" : "token file");
out:
	token_set_clear(&ts);
	token_store_clear(&store);
	options_clear(&opts);
	account_clear(&account);
	g_free(a.label);
	g_free(a.client_id);
	g_free(a.scope);
	g_free(a.redirect_uri);
	return r;
}
