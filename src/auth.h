/* auth: one account's tokens over their lifetime. Hands out a valid access token,
 * refreshing it when it is about to expire or was rejected (401): one refresh at a time
 * per account in this process, and across processes an flock on the account's lock file,
 * after which the store is read again (another process may have refreshed already).
 * A refreshed token set is saved to the store before the new access token is used.
 * A 429, 5xx or network error during a refresh never deletes or replaces tokens.
 * Thread-safe; no lock is held across a network or keyring call except the refresh
 * lock, which only serializes refreshes. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "keyring.h"

struct http_client;
struct provider;

/* What the store keeps for an account (as JSON). */
struct token_set {
	char *provider;
	char *access_token;
	gint64 expires_at; /* unix seconds */
	gint64 issued_at;  /* unix seconds the access token was received; 0: unknown */
	char *refresh_token;
	char *client_id;     /* a user-registered client (Tibber); NULL: the provider's own */
	char *client_secret;
	char *scope;
};

void token_set_clear(struct token_set *ts);
/* The JSON the store keeps (g_free; holds secrets). */
char *token_set_to_json(const struct token_set *ts);
/* Parses what token_set_to_json made; -EINVAL when it is not that. */
int token_set_from_json(const char *json, struct token_set *ts);
/* Registers every secret of @ts with the log scrubber. */
void token_set_hide(const struct token_set *ts);

struct auth;

struct auth *auth_new(const char *account, const struct provider *provider,
		      struct http_client *http, const char *auth_url,
		      const struct token_store *store, const char *lock_dir);
void auth_free(struct auth *a);
/* Reads the tokens from the store. -ENOENT (no login) or another errno, with @err
 * naming the command that fixes it. */
int auth_load(struct auth *a, GError **err);
/* A valid access token (g_free), refreshing first when needed. Errors: -EACCES (the
 * login is no longer valid: run `smarthomefs login`), -EAGAIN/-EIO/-ETIMEDOUT (could not
 * refresh now; tokens kept). */
int auth_bearer(struct auth *a, char **token);
/* The API answered 401 to @token: the next auth_bearer refreshes, unless another thread
 * has done so already. */
void auth_rejected(struct auth *a, const char *token);
/* When the access token expires (unix seconds), 0 if unknown. */
gint64 auth_expires_at(struct auth *a);
/* How many refreshes this process made. */
unsigned auth_refresh_count(struct auth *a);
/* Refreshes now, whatever the expiry (used by `smarthomefs status --refresh` and tests). */
int auth_refresh_now(struct auth *a, GError **err);
