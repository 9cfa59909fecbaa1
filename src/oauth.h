/* oauth: the login flows, used by `smarthomefs login` only (not in the daemon's core
 * library; the token endpoint and the refresh are token.h's).
 * - Device authorization grant (RFC 8628) for clouds with a public client (tado).
 * - Authorization code + PKCE (S256) with a loopback redirect (RFC 8252) for clouds
 *   where the user registers a client (Tibber).
 * Messages for the user go to stderr (instructions) and stdout (the link, the code). */
#pragma once

#include <stdbool.h>
#include <glib.h>

struct http_client;
struct provider;
struct token_set;

/* Runs the device code flow: prints the link (with client_id appended when the provider
 * needs it) and the code, polls at the server's interval (slow_down adds 5 s) until the
 * user approves, denies, or the code expires. Fills @ts. Errors: -EACCES (denied),
 * -ETIMEDOUT (expired), others with @err set to a sentence. */
int oauth_device_login(struct http_client *http, const struct provider *p, const char *auth_url,
		       struct token_set *ts, GError **err);

struct pkce_login {
	const char *client_id;
	const char *client_secret; /* may be NULL */
	const char *scope;
	const char *redirect_uri; /* the client's registered loopback URI; NULL: 127.0.0.1 */
	int port;		  /* without redirect_uri; 0: an ephemeral port */
	bool open_browser;	  /* run xdg-open when a desktop is there */
	int timeout_s;		  /* how long to wait for the browser */
};

/* Runs the authorization code flow with PKCE and a listener on the loopback address
 * of the redirect URI (http://127.0.0.1:PORT/callback unless one is given; both
 * 127.0.0.1 and ::1 for "localhost"). Fills @ts (including client id and secret).
 * Errors with @err set to a sentence: -EINVAL (a redirect URI that is not loopback),
 * -EACCES (denied, wrong client or secret), -EPROTO (state mismatch), -ETIMEDOUT. */
int oauth_pkce_login(struct http_client *http, const struct provider *p, const char *auth_url,
		     const struct pkce_login *opts, struct token_set *ts, GError **err);

/* A loopback redirect URI (RFC 8252 section 7.3), taken apart. */
struct loopback_redirect {
	char *host; /* "127.0.0.1", "[::1]" or "localhost", lower case */
	int port;   /* 1..65535 */
	char *path; /* "/callback"; "/" for a URI without a path */
};

/* Checks that @uri is http://HOST:PORT[/PATH] with HOST 127.0.0.1, [::1] or localhost,
 * an explicit port and no query or fragment, and fills @out (oauth_redirect_clear). -EINVAL
 * with @err set to a sentence otherwise. Pure. */
int oauth_redirect_parse(const char *uri, struct loopback_redirect *out, GError **err);
void oauth_redirect_clear(struct loopback_redirect *r);

/* Parses the target of the loopback callback ("/callback?code=..&state..") whose path
 * must be @path. Sets the fields present (g_free each). Returns 0, or -EINVAL when it
 * is not a callback request. Pure; fuzzable. */
int oauth_parse_callback(const char *target, const char *path, char **code, char **state,
			 char **error, char **error_description);

/* A fresh PKCE verifier (43..128 chars of [A-Za-z0-9-._~]) and its S256 challenge. */
void oauth_pkce_pair(char **verifier, char **challenge);
/* The S256 challenge of @verifier: base64url(SHA-256(verifier)), unpadded. g_free. */
char *oauth_pkce_challenge(const char *verifier);
