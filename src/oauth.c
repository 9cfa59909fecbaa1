/* oauth: the login flows. Codes, verifiers, secrets and tokens
 * pass through here; none of them is ever printed or logged, and the strings that held
 * them are wiped before they are freed. */
#include "oauth.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <gio/gio.h>
#include <jansson.h>

#include "http.h"
#include "loopback.h"
#include "log.h"
#include "provider.h"
#include "terminal.h"
#include "token.h"

/* RFC 8628 section 3.5: a server that says nothing means 5 seconds. */
#define DEVICE_DEFAULT_INTERVAL_S 5
#define DEVICE_DEFAULT_EXPIRES_S  300
/* Between polls even when the server asks for 0 s, so a test server or a confused
 * one never makes us spin. */
#define POLL_MIN_US (50 * 1000)
/* The loopback page xdg-open is given, which sends the browser on to the authorize
 * link. */
#define START_PATH "/smarthomefs-login"

/* Registers @s, and its form-encoded spelling, with the log scrubber: a server that
 * echoes what it was sent (in an error) must not get a secret onto the terminal, the
 * log or the browser's page. */
static void hide_secret(const char *s)
{
	if (!s || !*s)
		return;
	log_add_secret(s);
	g_autofree char *encoded = g_uri_escape_string(s, NULL, FALSE);
	if (strcmp(encoded, s) != 0)
		log_add_secret(encoded);
}

/* A page whose text may hold what a server sent: scrubbed of secrets and control
 * characters first. */
static void send_safe_page(int fd, int status, const char *reason, const char *title,
			   const char *sentence)
{
	g_autofree char *scrubbed = log_scrub(sentence);
	g_autofree char *clean = terminal_text(scrubbed);
	loopback_send_page(fd, status, reason, title, clean);
}

/* ---- Device authorization grant (RFC 8628) ---- */

/* The link shown to the user, with client_id added when the provider's page needs it
 * and the server did not put it there. */
static char *device_link(const struct provider *p, const char *uri)
{
	if (!p->verification_uri_needs_client_id || !p->client_id)
		return g_strdup(uri);
	const char *query = strchr(uri, '?');
	if (query) {
		g_autofree char *present = http_form_get(query + 1, "client_id");
		if (present)
			return g_strdup(uri);
	}
	g_autofree char *id = g_uri_escape_string(p->client_id, NULL, FALSE);
	const char *sep = !query ? "?" : (query[1] && !g_str_has_suffix(uri, "&")) ? "&" : "";
	return g_strconcat(uri, sep, "client_id=", id, NULL);
}

int oauth_device_login(struct http_client *http, const struct provider *p, const char *auth_url,
		       struct token_set *ts, GError **err)
{
	g_autofree char *authorize_url = token_endpoint_url(p, auth_url, p->device_authorize_path);
	g_autofree char *token_url = token_endpoint_url(p, auth_url, p->token_path);
	g_autofree char *form = http_form("client_id", p->client_id, "scope", p->scope, NULL);

	struct http_request req = {
	    .method = "POST",
	    .url = authorize_url,
	    .form = form,
	    .tries = 3,
	    .log_path = "device authorization endpoint",
	};
	struct http_response resp;
	int r = http_request(http, &req, &resp);
	if (r < 0) {
		g_set_error(err, G_IO_ERROR, g_io_error_from_errno(-r),
			    "Could not reach %s's login server: %s.", p->title, g_strerror(-r));
		return r;
	}
	json_t *j = token_answer_json(&resp);
	long status = resp.status;
	http_response_clear(&resp);
	const char *device_code = j ? json_string_value(json_object_get(j, "device_code")) : NULL;
	const char *user_code = j ? json_string_value(json_object_get(j, "user_code")) : NULL;
	const char *uri =
	    j ? json_string_value(json_object_get(j, "verification_uri_complete")) : NULL;
	if (!uri && j)
		uri = json_string_value(json_object_get(j, "verification_uri"));
	/* Before anything is said: a message below may echo it. */
	hide_secret(device_code);
	if (status != 200 || !device_code || !user_code || !uri) {
		const char *code = j ? json_string_value(json_object_get(j, "error")) : NULL;
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_FAILED,
			    "%s's login server did not start a login (HTTP %ld%s%s).", p->title,
			    status, code ? ", " : "", code ? code : "");
		json_decref(j);
		return status == 429 || status >= 500 ? -EAGAIN : -EIO;
	}
	gint64 interval_s = DEVICE_DEFAULT_INTERVAL_S;
	gint64 expires_s = DEVICE_DEFAULT_EXPIRES_S;
	token_json_seconds(json_object_get(j, "interval"), &interval_s);
	token_json_seconds(json_object_get(j, "expires_in"), &expires_s);
	g_auto(secret_str) device = g_strdup(device_code);
	g_autofree char *link = device_link(p, uri);
	/* The server's words on the user's terminal: printable text only. */
	g_autofree char *shown_link = terminal_text(link);
	g_autofree char *shown_code = terminal_text(user_code);
	printf("To log in, open this link in a browser:\n  %s\nand check that it shows the code "
	       "%s.\n",
	       shown_link, shown_code);
	fflush(stdout);
	json_decref(j);

	g_auto(secret_str) poll_form =
	    http_form("client_id", p->client_id, "device_code", device, "grant_type",
		      "urn:ietf:params:oauth:grant-type:device_code", NULL);
	gint64 deadline = g_get_monotonic_time() + expires_s * G_USEC_PER_SEC;
	struct token_set got = {0};
	for (;;) {
		g_usleep((gulong)MAX(MAX(interval_s, 0) * G_USEC_PER_SEC, POLL_MIN_US));
		if (g_get_monotonic_time() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		g_autofree char *error = NULL;
		r = token_request(http, token_url, poll_form, &got, &error);
		if (r == 0)
			break;
		if (error && strcmp(error, "authorization_pending") == 0)
			continue;
		if (error && strcmp(error, "slow_down") == 0) {
			interval_s += 5;
			continue;
		}
		if (error && strcmp(error, "access_denied") == 0) {
			g_set_error(err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
				    "The login was denied in the browser.");
			r = -EACCES;
			break;
		}
		if (error && strcmp(error, "expired_token") == 0) {
			r = -ETIMEDOUT;
			break;
		}
		if (r == -EACCES || r == -EIO) {
			g_set_error(err, G_IO_ERROR, G_IO_ERROR_FAILED,
				    "%s refused the login (%s); run the command again.", p->title,
				    error ? error : "no reason given");
			break;
		}
		/* A 429, a 5xx or a network hiccup while the user is still in the
		 * browser: the code stays valid, so keep polling until it expires. */
		log_warn("Waiting for the login: %s; trying again.",
			 r == -EAGAIN ? "the login server is busy or failing (HTTP 429 or 5xx)"
				      : g_strerror(-r));
	}
	if (r == -ETIMEDOUT)
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
			    "The code expired before the login was approved; run the command "
			    "again.");
	if (r < 0) {
		token_set_clear(&got);
		return r;
	}
	got.provider = g_strdup(p->name);
	if (!got.scope)
		got.scope = g_strdup(p->scope);
	token_set_clear(ts);
	*ts = got;
	return 0;
}

/* ---- Authorization code + PKCE with a loopback redirect (RFC 7636, RFC 8252) ---- */

static char *base64url(const guchar *data, gsize len)
{
	char *s = g_base64_encode(data, len);
	char *w = s;
	for (char *c = s; *c; c++) {
		if (*c == '=')
			continue;
		*w++ = *c == '+' ? '-' : *c == '/' ? '_' : *c;
	}
	*w = '\0';
	return s;
}

static void random_bytes(guchar *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = getrandom(buf + got, len - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		got += (size_t)n;
	}
	/* getrandom only fails on kernels older than 3.17; GLib's generator is seeded
	 * from /dev/urandom, good enough as a last resort. */
	for (; got < len; got++)
		buf[got] = (guchar)g_random_int_range(0, 256);
}

static char *random_token(size_t bytes)
{
	guchar buf[64];
	bytes = MIN(bytes, sizeof(buf));
	random_bytes(buf, bytes);
	char *s = base64url(buf, bytes);
	explicit_bzero(buf, sizeof(buf));
	return s;
}

char *oauth_pkce_challenge(const char *verifier)
{
	guint8 digest[32];
	gsize len = sizeof(digest);
	g_autoptr(GChecksum) sha = g_checksum_new(G_CHECKSUM_SHA256);
	g_checksum_update(sha, (const guchar *)verifier, (gssize)strlen(verifier));
	g_checksum_get_digest(sha, digest, &len);
	return base64url(digest, len);
}

void oauth_pkce_pair(char **verifier, char **challenge)
{
	/* 32 bytes: 43 characters, RFC 7636's recommended length and entropy. */
	*verifier = random_token(32);
	*challenge = oauth_pkce_challenge(*verifier);
}

int oauth_parse_callback(const char *target, const char *path, char **code, char **state,
			 char **error, char **error_description)
{
	char **outs[] = {code, state, error, error_description};
	static const char *const keys[] = {"code", "state", "error", "error_description"};
	for (size_t i = 0; i < G_N_ELEMENTS(outs); i++)
		if (outs[i])
			*outs[i] = NULL;
	if (!target || !path)
		return -EINVAL;
	size_t path_len = strcspn(target, "?#");
	if (path_len != strlen(path) || memcmp(target, path, path_len) != 0)
		return -EINVAL;
	if (target[path_len] != '?')
		return 0;
	const char *query = target + path_len + 1;
	size_t query_len = strcspn(query, "#");
	g_autofree char *q = g_strndup(query, query_len);

	/* A parameter given twice is refused rather than guessed at: a crafted link must
	 * not smuggle a second state or code past the check. */
	char *found[G_N_ELEMENTS(keys)] = {0};
	g_auto(GStrv) pairs = g_strsplit(q, "&", -1);
	int r = 0;
	for (size_t p = 0; pairs[p] && r == 0; p++) {
		for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
			char *v = http_form_get(pairs[p], keys[i]);
			if (!v)
				continue;
			if (found[i]) {
				g_free(v);
				r = -EINVAL;
				break;
			}
			found[i] = v;
		}
	}
	for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
		if (r == 0 && outs[i] && found[i] && *found[i])
			*outs[i] = g_steal_pointer(&found[i]);
		secret_free(found[i]);
	}
	if (r < 0)
		for (size_t i = 0; i < G_N_ELEMENTS(outs); i++)
			if (outs[i])
				g_clear_pointer(outs[i], secret_free);
	return r;
}

static int redirect_refused(GError **err, const char *uri, const char *why)
{
	g_set_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "The redirect URI %s %s.", uri,
		    why);
	return -EINVAL;
}

int oauth_redirect_parse(const char *uri, struct loopback_redirect *out, GError **err)
{
	static const char *const hosts[] = {"127.0.0.1", "[::1]", "localhost"};
	*out = (struct loopback_redirect){0};
	if (!uri)
		return -EINVAL;
	for (const char *c = uri; *c; c++)
		if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '\\')
			return redirect_refused(err, uri,
						"is not a URI (a space or another "
						"character that must be %-encoded)");
	/* Plain http: the browser comes back to this machine, where no certificate
	 * could make https trusted. RFC 8252 section 8.3 allows it for loopback only. */
	if (g_ascii_strncasecmp(uri, "http://", strlen("http://")) != 0)
		return redirect_refused(err, uri, "must start with http://");
	const char *host = uri + strlen("http://");
	size_t host_len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/?#");
	if (host_len > strlen(host))
		host_len = strlen(host);
	size_t h = 0;
	while (h < G_N_ELEMENTS(hosts) &&
	       (strlen(hosts[h]) != host_len || g_ascii_strncasecmp(host, hosts[h], host_len) != 0))
		h++;
	/* Anything else could resolve to, or be, another machine: the code would leave
	 * this one. */
	if (h == G_N_ELEMENTS(hosts))
		return redirect_refused(err, uri,
					"must name this machine's loopback address: localhost, "
					"127.0.0.1 or [::1]");
	const char *port = host + host_len;
	size_t digits = port[0] == ':' ? strspn(port + 1, "0123456789") : 0;
	long n = digits > 0 && digits <= 5 ? strtol(port + 1, NULL, 10) : 0;
	const char *path = port + 1 + digits;
	if (n < 1 || n > 65535 || (*path && *path != '/'))
		return redirect_refused(err, uri,
					"must name its port, as registered: http://localhost:8123/"
					"callback");
	if (strpbrk(path, "?#"))
		return redirect_refused(err, uri, "must not have a query or a fragment");
	out->host = g_strdup(hosts[h]);
	out->port = (int)n;
	out->path = g_strdup(*path ? path : "/");
	return 0;
}

void oauth_redirect_clear(struct loopback_redirect *r)
{
	g_clear_pointer(&r->host, g_free);
	g_clear_pointer(&r->path, g_free);
	r->port = 0;
}

struct pkce_state {
	struct http_client *http;
	const struct provider *p;
	const char *token_url;
	const char *redirect_uri;
	const char *callback_path;
	const char *start_path; /* what xdg-open is given: redirects to authorize_url */
	const char *authorize_url;
	const struct pkce_login *opts;
	const char *state;
	const char *verifier;
	struct token_set *got;
	GError **err;
	int result; /* how the login ended, once the handler says it has */
};

static void exchange_failure(const struct pkce_state *ps, int r, const char *error)
{
	if (error && strcmp(error, "invalid_client") == 0)
		g_set_error(ps->err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
			    "The client secret was refused; check it in %s's client management "
			    "and log in again.",
			    ps->p->title);
	else if (error && strcmp(error, "invalid_grant") == 0)
		g_set_error(ps->err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
			    "%s refused the login code (invalid_grant); check that the redirect "
			    "URI %s is registered for the client and run the command again.",
			    ps->p->title, ps->redirect_uri);
	else if (error)
		g_set_error(ps->err, G_IO_ERROR, G_IO_ERROR_FAILED,
			    "%s refused the login (%s); run the command again.", ps->p->title,
			    error);
	else
		g_set_error(ps->err, G_IO_ERROR, g_io_error_from_errno(-r),
			    "Could not finish the login with %s: %s; run the command again.",
			    ps->p->title, g_strerror(-r));
}

/* Answers one request on the loopback listener (loopback_handler). Anything but the
 * callback of this login — a favicon, junk, an answer with another state — is answered
 * and ignored: the login waits on for its own answer until its timeout. */
static bool handle_callback(void *ctx, int fd, const char *request)
{
	struct pkce_state *ps = ctx;
	/* "GET /callback?... HTTP/1.1" */
	const char *sp1 = strchr(request, ' ');
	const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || (size_t)(sp1 - request) != 3 || memcmp(request, "GET", 3) != 0) {
		loopback_send_page(fd, 400, "Bad Request", "smarthomefs", "Not a login answer.");
		return false;
	}
	g_autofree char *target = g_strndup(sp1 + 1, (gsize)(sp2 - sp1 - 1));
	if (strcmp(target, ps->start_path) == 0) {
		loopback_send_redirect(fd, ps->authorize_url);
		return false;
	}
	g_auto(secret_str) code = NULL;
	g_autofree char *state = NULL;
	g_autofree char *error = NULL;
	g_autofree char *description = NULL;
	if (oauth_parse_callback(target, ps->callback_path, &code, &state, &error, &description) <
	    0) {
		loopback_send_page(fd, 404, "Not Found", "smarthomefs", "Not a login answer.");
		return false;
	}
	hide_secret(code);
	if (!code && !error) {
		loopback_send_page(fd, 400, "Bad Request", "smarthomefs", "Not a login answer.");
		return false;
	}
	if (!state || strcmp(state, ps->state) != 0) {
		/* Anyone may send us a link (with their own code, or an error): only the
		 * answer to our own request may end the login. */
		loopback_send_page(fd, 400, "Bad Request", "Not this login",
				   "This answer does not belong to the login that is waiting "
				   "(state mismatch); it was ignored.");
		return false;
	}
	if (error) {
		g_autofree char *msg = g_strdup_printf("%s refused the login: %s.", ps->p->title,
						       description ? description : error);
		send_safe_page(fd, 403, "Forbidden", "Login failed", msg);
		g_set_error_literal(ps->err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED, msg);
		ps->result = -EACCES;
		return true;
	}

	g_auto(secret_str) form =
	    http_form("grant_type", "authorization_code", "code", code, "redirect_uri",
		      ps->redirect_uri, "client_id", ps->opts->client_id, "client_secret",
		      ps->opts->client_secret, "code_verifier", ps->verifier, NULL);
	g_autofree char *oauth_error = NULL;
	int r = token_request(ps->http, ps->token_url, form, ps->got, &oauth_error);
	if (r < 0) {
		exchange_failure(ps, r, oauth_error);
		send_safe_page(fd, 403, "Forbidden", "Login failed", (*ps->err)->message);
		ps->result = r;
		return true;
	}
	g_autofree char *ok =
	    g_strdup_printf("Logged in to %s. You can close this tab.", ps->p->title);
	loopback_send_page(fd, 200, "OK", "Logged in", ok);
	ps->result = 0;
	return true;
}

/* Opens @url, our own loopback start page, which redirects the browser to the authorize
 * link: the argv of xdg-open and the browser, which every local user can read, never
 * holds the state or the challenge, and the start page answers our own uid only. */
static void open_browser(const char *url)
{
	if (!g_getenv("DISPLAY") && !g_getenv("WAYLAND_DISPLAY"))
		return;
	char *argv[] = {"xdg-open", (char *)url, NULL};
	g_autoptr(GError) e = NULL;
	if (!g_spawn_async(NULL, argv, NULL,
			   G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
			       G_SPAWN_STDERR_TO_DEV_NULL,
			   NULL, NULL, NULL, &e))
		log_warn("Could not open a browser (%s); open the link by hand.", e->message);
}

int oauth_pkce_login(struct http_client *http, const struct provider *p, const char *auth_url,
		     const struct pkce_login *opts, struct token_set *ts, GError **err)
{
	if (!opts->client_id || !*opts->client_id) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
			    "%s needs the id of a client you registered: use --client-id.",
			    p->title);
		return -EINVAL;
	}
	/* The default is RFC 8252's recommended loopback IP literal; a client registered
	 * with another URI (Tibber matches it exactly, "localhost" included) gives its. */
	struct loopback_redirect where = {0};
	int r = opts->redirect_uri ? oauth_redirect_parse(opts->redirect_uri, &where, err) : 0;
	if (r < 0)
		return r;
	struct loopback l;
	const char *host = where.host ? where.host : "127.0.0.1";
	r = loopback_listen(&l, host, where.host ? where.port : opts->port, err);
	if (r < 0) {
		oauth_redirect_clear(&where);
		return r;
	}
	g_autofree char *redirect_uri =
	    opts->redirect_uri ? g_strdup(opts->redirect_uri)
			       : g_strdup_printf("http://127.0.0.1:%d/callback", l.port);
	g_autofree char *callback_path = g_strdup(where.path ? where.path : "/callback");
	const char *start_path =
	    strcmp(callback_path, START_PATH) != 0 ? START_PATH : START_PATH "-page";
	g_autofree char *start_url = g_strdup_printf(
	    "http://%s:%d%s", strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, l.port,
	    start_path);
	oauth_redirect_clear(&where);
	g_auto(secret_str) verifier = NULL;
	g_autofree char *challenge = NULL;
	oauth_pkce_pair(&verifier, &challenge);
	hide_secret(verifier);
	hide_secret(opts->client_secret);
	g_autofree char *state = random_token(16);
	const char *scope = opts->scope ? opts->scope : p->scope;
	g_autofree char *query =
	    http_form("response_type", "code", "client_id", opts->client_id, "redirect_uri",
		      redirect_uri, "scope", scope, "state", state, "code_challenge", challenge,
		      "code_challenge_method", "S256", NULL);
	g_autofree char *authorize = token_endpoint_url(p, auth_url, p->authorize_path);
	g_autofree char *url =
	    g_strconcat(authorize, strchr(authorize, '?') ? "&" : "?", query, NULL);
	g_autofree char *token_url = token_endpoint_url(p, auth_url, p->token_path);

	g_autofree char *shown = terminal_text(url);
	printf("Open this link in a browser to log in:\n  %s\n", shown);
	fflush(stdout);
	if (opts->open_browser)
		open_browser(start_url);

	struct token_set got = {0};
	g_autoptr(GError) e = NULL;
	struct pkce_state ps = {
	    .http = http,
	    .p = p,
	    .token_url = token_url,
	    .redirect_uri = redirect_uri,
	    .callback_path = callback_path,
	    .start_path = start_path,
	    .authorize_url = url,
	    .opts = opts,
	    .state = state,
	    .verifier = verifier,
	    .got = &got,
	    .err = &e,
	};
	int timeout_s = opts->timeout_s > 0 ? opts->timeout_s : 300;
	r = loopback_serve(&l, g_get_monotonic_time() + (gint64)timeout_s * G_USEC_PER_SEC,
			   handle_callback, &ps);
	loopback_close(&l);
	if (r == 0)
		r = ps.result;

	if (r < 0) {
		token_set_clear(&got);
		if (e)
			g_propagate_error(err, g_steal_pointer(&e));
		else if (r == -ETIMEDOUT)
			g_set_error(err, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
				    "Nobody completed the login in %d seconds; run the command "
				    "again. If the browser showed an error instead of asking for "
				    "consent, check the client id and that %s is registered as "
				    "its redirect URI (--port or --redirect-uri for another one).",
				    timeout_s, redirect_uri);
		else
			g_set_error(err, G_IO_ERROR, g_io_error_from_errno(-r),
				    "The login failed: %s.", g_strerror(-r));
		return r;
	}
	got.provider = g_strdup(p->name);
	got.client_id = g_strdup(opts->client_id);
	got.client_secret = g_strdup(opts->client_secret);
	if (!got.scope)
		got.scope = g_strdup(scope);
	token_set_clear(ts);
	*ts = got;
	return 0;
}
