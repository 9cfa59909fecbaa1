/* config: what an account's mount is told, from the config file
 * ($XDG_CONFIG_HOME/smarthomefs/config, one GKeyFile section per account) and from -o
 * (which wins). mount(8)'s own options (noauto, user, _netdev, x-systemd.*, ...) are
 * ignored; libfuse's (allow_other, ...) are passed on. Not thread-safe: used at start. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "keyring.h"

struct provider;

/* "tado" or "tado:LABEL". */
struct account {
	char *id;
	const struct provider *provider;
};

/* Parses an ACCOUNT; -EINVAL with @err naming the providers when unknown. */
int account_parse(const char *s, struct account *out, GError **err);
void account_clear(struct account *a);

struct options {
	int ttl;       /* seconds; -1: the provider's default */
	int timeout;   /* seconds for one read, retries included */
	char *api_url; /* NULL: the provider's */
	char *hops_url; /* the provider's second host (tado X); NULL: the provider's */
	char *auth_url;
	char *cafile;
	char *cache_dir; /* NULL: $XDG_CACHE_HOME/smarthomefs/ACCOUNT */
	char *state_dir; /* NULL: $XDG_STATE_HOME/smarthomefs */
	enum token_store_kind token_store;
	bool offline;
	bool debug;
	bool allow_other;
	int max_threads;    /* libfuse worker threads */
	int prefetch;       /* parallel fetches when listing, 0 disables */
	int prefetch_max;   /* resources prefetched for one listing at most */
	int max_entries;    /* names one listing shows at most */
	int cache_memory_mib; /* bodies kept in memory, least recently used evicted */
	int cache_disk_mib;   /* bodies kept on disk (cache_dir), least recently used dropped */
	int history_days;     /* days of history listed (today included); 0: none */
	int history_budget;   /* percent of a scarce quota (tado) the history fill may spend */
	int render_memory_mib; /* files' renderings kept for the reads of large files */
	GPtrArray *fuse_opts; /* libfuse's own options, passed on as they are */
};

void options_init(struct options *o);
void options_clear(struct options *o);
/* Applies a comma-separated -o list. -EINVAL with @err naming the option. */
int options_parse(struct options *o, const char *list, GError **err);
/* Applies the config file's section for @account ([tado] or [tado:home]); @path NULL
 * means the default location, which may be absent. Errors name file, line and key. */
int options_load_config(struct options *o, const char *path, const char *account,
			GError **err);
/* Checks every section of the config file as options_load_config() applies it: a mount
 * of all accounts reads the section of each account logged in. */
int options_check_config(const char *path, GError **err);
/* Whether @err is a config file's or an option's error (exit status 2, not 1). */
bool config_error(const GError *err);
/* The default config file path (g_free). */
char *config_default_path(void);
/* Directories with the XDG defaults applied (g_free). Never NULL: without HOME and XDG
 * variables they fall back to /var/cache/smarthomefs, /var/lib/smarthomefs. */
char *options_cache_dir(const struct options *o, const char *account);
char *options_state_dir(const struct options *o);
/* Checks, before anything is created or read there, that the directories @account's
 * mount would use (cache, state, locks) are the caller's own and that cafile is a file
 * nobody else may change (trust.h); @account NULL: all but the cache. -errno with @err
 * naming the path and what to do. */
int options_check_trust(const struct options *o, const char *account, GError **err);
/* The token store the options choose (token_store_clear). */
void options_token_store(const struct options *o, struct token_store *out);
/* Where lock files live: $XDG_RUNTIME_DIR/smarthomefs, else the state dir. g_free. */
char *options_lock_dir(const struct options *o);
