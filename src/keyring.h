/* keyring: where tokens live. The default store is the Secret Service through
 * libsecret (schema io.smarthomefs.Token, attributes "provider" and "account"; the
 * secret is a small JSON blob, see auth.h). The file store, chosen explicitly with
 * token_store=file for headless machines, keeps one 0600 file per account in a 0700
 * directory (STATE_DIR/tokens/ACCOUNT.json), written atomically.
 *
 * libsecret starts GDBus threads: call these only after the daemon has forked.
 * Thread-safe (libsecret's sync calls are; the file store writes atomically). */
#pragma once

#include <glib.h>

enum token_store_kind { TOKEN_STORE_KEYRING, TOKEN_STORE_FILE };

/* "keyring" or "file". */
const char *token_store_name(enum token_store_kind kind);
/* Parses "keyring" or "file"; -EINVAL otherwise. */
int token_store_parse(const char *s, enum token_store_kind *kind);

struct token_store {
	enum token_store_kind kind;
	char *state_dir; /* file store: $XDG_STATE_HOME/smarthomefs unless configured */
};

/* Frees what a store holds (not @s itself). */
void token_store_clear(struct token_store *s);

/* Reads the secret of @account into *json (g_free, holds secrets). Returns 0, -ENOENT
 * when nothing is stored, or another negative errno with @err saying what went wrong
 * and what to do (no Secret Service: start one, or token_store=file). */
int token_store_load(const struct token_store *s, const char *account, char **json,
		     GError **err);
/* Stores @json for @account (replacing what was there). */
int token_store_save(const struct token_store *s, const char *account, const char *provider,
		     const char *json, GError **err);
/* Removes it; -ENOENT when nothing was stored. */
int token_store_delete(const struct token_store *s, const char *account, GError **err);
/* Appends the account names (g_free'd strings) stored to @accounts. */
int token_store_list(const struct token_store *s, GPtrArray *accounts, GError **err);
