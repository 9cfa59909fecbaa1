/* accounts: the accounts one mount serves, and which account's session serves a path.
 *
 * A mount of one named account: every path is that session's, as its provider lists it.
 *
 * A mount of all accounts: the root and its directories (homes/) are this module's own.
 * Each directory of the root merges what every account lists there, in account name
 * order; an id that several accounts list (a home shared by two tado logins) is listed
 * once and served by the first account in name order whose listing answered, and every
 * path below it (homes/<id>/...) goes to that account's session. An account whose
 * listing fails (login expired, quota spent, cloud down, no copy) keeps its ids of the
 * last listing that worked, served by its session (cached copies, or the errno that says
 * why), unless another account lists them now; the others' ids are never touched by it.
 * An id that the last listing of its directory did not show (no account lists it any
 * more) is served by no account: only the ids listed now are remembered.
 * Which account serves which id, and which others list it, is in status.json.
 *
 * Logins are looked for again every ACCOUNTS_RESCAN_S by a thread of this module: an
 * account logged in since is opened and its ids appear at the next listing; one logged
 * out is logged out of at once (session_log_out: its tokens dropped, no request sent),
 * and its ids leave the listing. A session lives until accounts_free, so a session
 * pointer handed out stays valid for as long as the mount.
 *
 * Thread-safe. The accounts lock is a leaf: nothing is called while it is held (the
 * sessions, the keyring and the open function are called without it). */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "config.h"
#include "provider.h"
#include "session.h"

/* How often a mount of all accounts looks for logins and logouts. */
#define ACCOUNTS_RESCAN_S 5

struct accounts;

/* Makes and starts the session of @account_id for a mount of all accounts (after the
 * fork: it may call the keyring). 0 with *ret, or a negative errno with @err. */
typedef int (*accounts_open_fn)(void *data, const char *account_id, struct session **ret,
				GError **err);

/* A mount of @session's account alone (taken over). */
struct accounts *accounts_new_one(struct session *session);
/* A mount of every account logged in to @store, each opened by @open(@data); @opts are
 * the mount's own options (-o: threads, timeout, allow_other, ...), taken over. No
 * account is opened before accounts_start. */
struct accounts *accounts_new_all(struct options *opts, const struct token_store *store,
				  accounts_open_fn open, void *data);
/* Frees every session too. Call accounts_stop first. */
void accounts_free(struct accounts *a);
/* A mount of all accounts opens the accounts logged in now: -ENOENT with @err when
 * there is none, or the first error when none could be opened (an account that cannot be
 * opened is logged, but for that first error, which the caller says, and is tried again
 * at the next look). Then @watch: the thread that looks
 * for logins and logouts starts. A mount of one account: 0. */
int accounts_start(struct accounts *a, bool watch, GError **err);
/* Logs again why each account that is not served could not be opened (as
 * accounts_start and the looks for logins said once): for the journal, once the daemon
 * has left the terminal that heard it first. */
void accounts_say_unopened(struct accounts *a);
/* Ends the thread that looks for logins. */
void accounts_stop(struct accounts *a);
/* Looks for logins and logouts once now (what the thread does every ACCOUNTS_RESCAN_S). */
void accounts_rescan(struct accounts *a);

/* Whether this is a mount of all accounts. */
bool accounts_all(struct accounts *a);
/* The session of a mount of one account; NULL for a mount of all. */
struct session *accounts_one(struct accounts *a);
/* The mount's options: the one account's, or the -o of a mount of all accounts. */
const struct options *accounts_options(struct accounts *a);
/* Where the mount keeps what is its own (the mtimes shown, stamps.h): the one account's
 * cache directory, or for all accounts the cache directory "all" (g_free). */
char *accounts_cache_dir(struct accounts *a);
/* What status.json and metrics show of the filesystem above. */
struct accounts_gauges {
	size_t nodes;  /* files and directories its tree holds */
	size_t bytes;  /* the memory they take (tree_memory_bytes) */
	size_t stamps; /* mtimes its stamps file keeps for the next mount */
};
/* @fn fills them in; set once, before any read. */
typedef void (*accounts_gauges_fn)(void *data, struct accounts_gauges *ret);
void accounts_set_gauges(struct accounts *a, accounts_gauges_fn fn, void *data);
/* The session that serves @path, or NULL when no account does: then the path is the
 * module's own directory (the root and its directories, accounts_owns) or nothing. */
struct session *accounts_route(struct accounts *a, const struct provider_path *path);
/* Whether @path is one of the directories this module lists itself. */
bool accounts_owns(struct accounts *a, const struct provider_path *path);
/* The entries of directory @path (accounts_owns) as they are now, in @entries, and in
 * @listing its generation (changed when the names do), change time and freshness (no
 * bytes). Without @may_fetch, -EINPROGRESS when an account's listing needs a fetch.
 * 0 when any account answered or kept ids; else the first account's error (-EACCES ...). */
int accounts_list(struct accounts *a, const struct provider_path *path, bool may_fetch,
		  struct resource *listing, GPtrArray *entries);
/* The sessions serving now, in account name order (g_ptr_array_unref; the sessions are
 * not the array's). */
GPtrArray *accounts_sessions(struct accounts *a);

/* .smarthomefs/status.json: one account's as session_render_status; for all accounts
 * {"accounts": {ID: that object, ...}, "<dir>": {ID: {"account", "listed_by"}}, ...}. */
void accounts_render_status(struct accounts *a, GString *out);
/* .smarthomefs/metrics of every account serving now. */
void accounts_render_metrics(struct accounts *a, GString *out);
