/* auth: one account's tokens over their lifetime. Hands out a valid access token,
 * refreshing it when it is about to expire or was rejected (401): one refresh at a time
 * per account in this process, and across processes an flock on the account's lock file,
 * after which the store is read again (another process may have refreshed already).
 * A refreshed token set is saved to the store before the new access token is used, and
 * only while the store still holds the login it was refreshed from (read again under
 * the flock just before the write): a login removed meanwhile (`smarthomefs logout`,
 * which takes the same flock) stays removed and the new set is dropped unused; a login
 * made meanwhile is used instead, never overwritten.
 * A 429, 5xx or network error during a refresh never deletes or replaces tokens. A
 * refused refresh token (the login expired) is said once in the log and never sent
 * again; a new login in the store is picked up at the next refresh.
 * Thread-safe; no lock is held across a network or keyring call except the refresh
 * lock, which only serializes refreshes. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "keyring.h"
#include "token.h"

struct http_client;
struct provider;

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
/* When the access token expires (wall clock, unix seconds), 0 if unknown. */
gint64 auth_expires_at_s(struct auth *a);
/* When the login ends unless refreshed before (wall clock, unix seconds); 0: unknown. */
gint64 auth_login_expires_at_s(struct auth *a);
/* How many refreshes this process made. */
unsigned auth_refresh_count(struct auth *a);
/* The account was logged out: the tokens held in memory go, and every later
 * auth_bearer answers -EACCES without reading the store or calling the cloud. */
void auth_forget(struct auth *a);
/* Takes @account's refresh lock (a file in @lock_dir, flock'ed by every smarthomefs
 * process that refreshes or removes its tokens), waiting at most @wait_us. The fd,
 * whose close releases it; -ETIMEDOUT when another process held it all that time, or
 * another negative errno with @err. */
int auth_lock_account(const char *lock_dir, const char *account, gint64 wait_us, GError **err);
/* Refreshes now, whatever the expiry (used by the tests). */
int auth_refresh_now(struct auth *a, GError **err);
