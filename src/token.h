/* token: an account's token set — what the store keeps for it (as JSON), how it is read
 * from and written to a token store, and the token endpoint (RFC 6749 section 5) that
 * issues and refreshes it. Below both auth (the daemon's refresh) and oauth (the login
 * flows); it includes neither. Every secret that passes through here is registered with
 * the log scrubber before it is kept, and wiped before it is freed.
 * Thread-safe: no state of its own (a token_set belongs to its caller). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>
#include "keyring.h"

struct http_client;
struct http_response;
struct provider;

/* What the store keeps for an account. Times are wall clock, unix seconds. */
struct token_set {
	char *provider;
	char *access_token;
	gint64 expires_at_s; /* when the access token expires; 0: unknown */
	gint64 issued_at_s;  /* when the access token was received; 0: unknown */
	char *refresh_token;
	gint64 refresh_issued_at_s; /* when refresh_token was received; 0: unknown */
	char *client_id; /* a user-registered client (Tibber); NULL: the provider's own */
	char *client_secret;
	char *scope;
};

/* Frees and wipes every field. */
void token_set_clear(struct token_set *ts);
/* Fills @dst (empty) with copies of @src's fields. */
void token_set_copy(struct token_set *dst, const struct token_set *src);
/* The JSON the store keeps (g_free; holds secrets). */
char *token_set_to_json(const struct token_set *ts);
/* Parses what token_set_to_json made; -EINVAL when it is not that. */
int token_set_from_json(const char *json, struct token_set *ts);
/* Registers every secret of @ts with the log scrubber. */
void token_set_hide(const struct token_set *ts);
/* Unregisters the secrets of @old that @new no longer has. */
void token_set_unhide_rotated(const struct token_set *old, const struct token_set *new);

/* When the login of @ts ends if nothing refreshes it: the refresh token's issue time
 * plus @p's refresh_token_lifetime_s (a set saved before refresh tokens carried their
 * issue time counts from the access token's, which came with it). 0: unknown. */
gint64 token_set_login_expires_at_s(const struct token_set *ts, const struct provider *p);

/* Reads @account's set from @store. -ENOENT when none is stored; -EBADMSG (with @err)
 * when what is stored is not a token set; the store's errors otherwise. */
int token_set_load(const struct token_store *store, const char *account, struct token_set *ts,
		   GError **err);
/* Writes @ts as @account's set to @store, replacing what was there. */
int token_set_save(const struct token_store *store, const char *account, const struct token_set *ts,
		   GError **err);

/* POSTs @form to @token_url and fills @ts from a success answer (access_token,
 * expires_in, refresh_token — kept as it was when the answer has none). On an OAuth
 * error answer sets *error (g_free) to its "error" code and returns -EACCES (400/401)
 * or -EIO; -EAGAIN for 429/5xx; a transport errno otherwise. */
int token_request(struct http_client *http, const char *token_url, const char *form,
		  struct token_set *ts, char **error);

/* Refreshes @ts in place with its refresh token (client id and secret sent when the
 * token set has them) at @auth_url (NULL or "": the provider's) plus the provider's
 * token path. On failure @ts is untouched. */
int token_refresh(struct http_client *http, const struct provider *p, const char *auth_url,
		  struct token_set *ts, char **error);

/* @auth_url (NULL or "": the provider's) followed by @path (NULL: none). g_free. */
char *token_endpoint_url(const struct provider *p, const char *auth_url, const char *path);

/* A token endpoint's answer as a JSON object (json_decref), NULL when it is not one. */
json_t *token_answer_json(const struct http_response *resp);
/* A whole number of seconds, 0 up to ten years, from JSON, which some servers send as a
 * string or a real. false when @v is none of that. */
bool token_json_seconds(json_t *v, gint64 *out);

/* Frees @s after overwriting it: for strings that held a secret. */
void secret_free(char *s);
/* g_auto(secret_str): a string holding a secret, wiped when it goes out of scope. */
typedef char *secret_str;
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(secret_str, secret_free, NULL)
