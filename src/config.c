/* config: options from the config file and -o, through one table of keys. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "provider.h"
#include "trust.h"

static GQuark config_error_quark(void)
{
	return g_quark_from_static_string("smarthomefs-config-error-quark");
}
#define CONFIG_ERROR config_error_quark()

int account_parse(const char *s, struct account *out, GError **err)
{
	const char *colon = strchr(s, ':');
	g_autofree char *name = colon ? g_strndup(s, colon - s) : g_strdup(s);
	const struct provider *p = provider_find(name);

	if (!p) {
		g_autoptr(GString) known = g_string_new(NULL);
		for (const struct provider *const *it = provider_all(); *it; it++)
			g_string_append_printf(known, "%s%s", known->len ? ", " : "", (*it)->name);
		g_set_error(err, CONFIG_ERROR, EINVAL,
			    "unknown account '%s': an account is PROVIDER or PROVIDER:LABEL, and the "
			    "providers are %s",
			    s, known->str);
		return -EINVAL;
	}
	/* The label goes into fsname= of the mount options and into metric labels: only
	 * characters that mean nothing in either. */
	if (colon && (colon[1] == '\0' || strlen(colon + 1) > 64 ||
		      strspn(colon + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789-_.") != strlen(colon + 1))) {
		g_set_error(err, CONFIG_ERROR, EINVAL,
			    "bad account label in '%s': use up to 64 letters, digits, '-', '_' or '.'",
			    s);
		return -EINVAL;
	}
	out->id = g_strdup(s);
	out->provider = p;
	return 0;
}

void account_clear(struct account *a)
{
	g_clear_pointer(&a->id, g_free);
	a->provider = NULL;
}

void options_init(struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->ttl = -1;
	o->timeout = 20;
	o->token_store = TOKEN_STORE_KEYRING;
	o->max_threads = 64;
	o->prefetch = 8;
	o->prefetch_max = 1000;
	o->max_entries = 50000;
	o->cache_memory_mib = 64;
	o->cache_disk_mib = 512;
	o->history_days = 31;
	o->history_budget = 20;
	o->render_memory_mib = 64;
	o->fuse_opts = g_ptr_array_new_with_free_func(g_free);
}

void options_clear(struct options *o)
{
	g_free(o->api_url);
	g_free(o->hops_url);
	g_free(o->auth_url);
	g_free(o->cafile);
	g_free(o->cache_dir);
	g_free(o->state_dir);
	if (o->fuse_opts)
		g_ptr_array_unref(o->fuse_opts);
	memset(o, 0, sizeof(*o));
}

enum opt_type { OPT_INT, OPT_BOOL, OPT_URL, OPT_PATH, OPT_STORE };

struct opt_desc {
	const char *name;
	enum opt_type type;
	size_t offset;
	int min, max; /* OPT_INT */
};

#define OPT(n, t, field, lo, hi) {n, t, offsetof(struct options, field), lo, hi}
static const struct opt_desc opt_table[] = {
	OPT("ttl", OPT_INT, ttl, 0, 30 * 86400),
	OPT("timeout", OPT_INT, timeout, 1, 600),
	OPT("api_url", OPT_URL, api_url, 0, 0),
	OPT("hops_url", OPT_URL, hops_url, 0, 0),
	OPT("auth_url", OPT_URL, auth_url, 0, 0),
	OPT("cafile", OPT_PATH, cafile, 0, 0),
	OPT("cache_dir", OPT_PATH, cache_dir, 0, 0),
	OPT("state_dir", OPT_PATH, state_dir, 0, 0),
	OPT("token_store", OPT_STORE, token_store, 0, 0),
	OPT("offline", OPT_BOOL, offline, 0, 0),
	OPT("debug", OPT_BOOL, debug, 0, 0),
	OPT("allow_other", OPT_BOOL, allow_other, 0, 0),
	OPT("max_threads", OPT_INT, max_threads, 2, 1024),
	OPT("prefetch", OPT_INT, prefetch, 0, 64),
	OPT("prefetch_max", OPT_INT, prefetch_max, 0, 1000000),
	OPT("max_entries", OPT_INT, max_entries, 1, 10000000),
	OPT("cache_memory_mib", OPT_INT, cache_memory_mib, 1, 1024 * 1024),
	OPT("cache_disk_mib", OPT_INT, cache_disk_mib, 1, 1024 * 1024),
	OPT("history_days", OPT_INT, history_days, 0, 1830),
	OPT("history_budget", OPT_INT, history_budget, 0, 100),
	OPT("render_memory_mib", OPT_INT, render_memory_mib, 1, 1024 * 1024),
};

/* mount(8) and systemd put these in the option string; they mean nothing to us. */
static const char *const mount_only_opts[] = {
	"noauto", "auto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail",
	"defaults", "rw", "ro", "loud", "silent", "nofail", NULL,
};
/* user=NAME: what mount(8) turns `user` into when a user mounts. */
static const char *const mount_only_prefixes[] = {"x-", "comment=", "helper=", "user=", NULL};

/* libfuse's own options, passed on. */
static const char *const fuse_flag_opts[] = {
	"allow_root", "auto_unmount", "default_permissions", "suid", "nosuid", "dev", "nodev",
	"exec", "noexec", "async", "sync", "dirsync", "atime", "noatime", "relatime",
	"norelatime", "strictatime", "nostrictatime", NULL,
};
static const char *const fuse_value_opts[] = {"fsname", "subtype", "max_read", "context",
					      "fscontext", "defcontext", "rootcontext", NULL};

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

static bool has_prefix_in(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (g_str_has_prefix(s, *list))
			return true;
	return false;
}

static const struct opt_desc *opt_find(const char *name)
{
	for (size_t i = 0; i < G_N_ELEMENTS(opt_table); i++)
		if (strcmp(opt_table[i].name, name) == 0)
			return &opt_table[i];
	return NULL;
}

/* Sets one option from text. Returns 0, or -EINVAL with a sentence in *why (g_free). */
static int opt_set(struct options *o, const struct opt_desc *d, const char *value, char **why)
{
	char *field = (char *)o + d->offset;

	switch (d->type) {
	case OPT_INT: {
		char *end = NULL;
		errno = 0;
		long v = value ? strtol(value, &end, 10) : 0;
		if (!value || !*value || *end || errno || v < d->min || v > d->max) {
			*why = g_strdup_printf("%s takes a whole number from %d to %d", d->name,
					       d->min, d->max);
			return -EINVAL;
		}
		*(int *)field = (int)v;
		return 0;
	}
	case OPT_BOOL:
		if (!value || !g_ascii_strcasecmp(value, "true") || !strcmp(value, "1") ||
		    !g_ascii_strcasecmp(value, "yes")) {
			*(bool *)field = true;
		} else if (!g_ascii_strcasecmp(value, "false") || !strcmp(value, "0") ||
			   !g_ascii_strcasecmp(value, "no")) {
			*(bool *)field = false;
		} else {
			*why = g_strdup_printf("%s takes true or false", d->name);
			return -EINVAL;
		}
		return 0;
	case OPT_URL:
		/* TLS is always verified: a plain http:// API would carry the tokens in clear. */
		if (!value || !g_str_has_prefix(value, "https://") || strlen(value) <= 8) {
			*why = g_strdup_printf("%s must be an https:// URL", d->name);
			return -EINVAL;
		}
		g_free(*(char **)field);
		*(char **)field = g_strdup(value);
		/* One form for joining paths: no trailing slash. */
		for (char *u = *(char **)field, *e = u + strlen(u) - 1; e > u + 8 && *e == '/'; e--)
			*e = '\0';
		return 0;
	case OPT_PATH:
		/* systemd mount units have no HOME and another working directory. */
		if (!value || !g_path_is_absolute(value)) {
			*why = g_strdup_printf("%s must be an absolute path", d->name);
			return -EINVAL;
		}
		g_free(*(char **)field);
		*(char **)field = g_strdup(value);
		return 0;
	case OPT_STORE:
		if (!value || token_store_parse(value, (enum token_store_kind *)field) < 0) {
			*why = g_strdup_printf("%s is keyring or file", d->name);
			return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

int options_parse(struct options *o, const char *list, GError **err)
{
	g_auto(GStrv) items = g_strsplit(list ? list : "", ",", -1);

	for (char **it = items; *it; it++) {
		if (!**it)
			continue;
		char *eq = strchr(*it, '=');
		g_autofree char *name = eq ? g_strndup(*it, eq - *it) : g_strdup(*it);
		const char *value = eq ? eq + 1 : NULL;
		const struct opt_desc *d = opt_find(name);

		if (d) {
			g_autofree char *why = NULL;
			if (d->type != OPT_BOOL && !value) {
				g_set_error(err, CONFIG_ERROR, EINVAL, "option %s needs a value", name);
				return -EINVAL;
			}
			if (opt_set(o, d, value, &why) < 0) {
				g_set_error(err, CONFIG_ERROR, EINVAL, "option -o %s: %s", *it, why);
				return -EINVAL;
			}
			continue;
		}
		if (in_list(mount_only_opts, *it) || has_prefix_in(mount_only_prefixes, *it))
			continue;
		if (strcmp(name, "fuse_debug") == 0) {
			g_ptr_array_add(o->fuse_opts, g_strdup("debug"));
			continue;
		}
		if ((!value && in_list(fuse_flag_opts, name)) ||
		    (value && in_list(fuse_value_opts, name))) {
			g_ptr_array_add(o->fuse_opts, g_strdup(*it));
			continue;
		}
		g_set_error(err, CONFIG_ERROR, EINVAL,
			    "unknown option -o %s (see `man smarthomefs` for the options)", *it);
		return -EINVAL;
	}
	return 0;
}

/* The line of @key in [@group] of the file text, for messages; 0 when not found. */
static int config_key_line(const char *text, const char *group, const char *key)
{
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	g_autofree char *header = g_strdup_printf("[%s]", group);
	bool in_group = false;

	for (int i = 0; lines[i]; i++) {
		const char *l = g_strstrip(lines[i]);
		if (l[0] == '[') {
			in_group = strcmp(l, header) == 0;
			continue;
		}
		if (in_group && g_str_has_prefix(l, key)) {
			const char *rest = l + strlen(key);
			while (*rest == ' ' || *rest == '\t')
				rest++;
			if (*rest == '=')
				return i + 1;
		}
	}
	return 0;
}

char *config_default_path(void)
{
	return g_build_filename(g_get_user_config_dir(), "smarthomefs", "config", NULL);
}

bool config_error(const GError *err)
{
	return err && err->domain == CONFIG_ERROR;
}

/* The config file @path (NULL: the default one) read into *@text and *@kf; 1 when the
 * default file is absent, 0 when read, or -errno with @err naming the file. */
static int config_read(const char *path, char **file, char **text, GKeyFile **kf,
		       GError **err)
{
	g_autofree char *default_path = path ? NULL : config_default_path();
	g_autoptr(GError) local = NULL;
	gsize len = 0;

	*file = g_strdup(path ? path : default_path);
	*text = NULL;
	*kf = NULL;
	if (!g_file_get_contents(*file, text, &len, &local)) {
		if (!path && g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
			return 1;
		g_set_error(err, CONFIG_ERROR, EIO, "cannot read the config file %s: %s", *file,
			    local->message);
		return -EIO;
	}
	*kf = g_key_file_new();
	if (!g_key_file_load_from_data(*kf, *text, len, G_KEY_FILE_NONE, &local)) {
		g_set_error(err, CONFIG_ERROR, EINVAL, "%s: %s", *file, local->message);
		return -EINVAL;
	}
	return 0;
}

/* Applies section @account of the config file read into @kf (@file, @text) to @o. */
static int load_section(struct options *o, const char *file, const char *text, GKeyFile *kf,
			const char *account, GError **err)
{
	if (!g_key_file_has_group(kf, account))
		return 0;

	g_auto(GStrv) keys = g_key_file_get_keys(kf, account, NULL, NULL);
	for (char **k = keys; k && *k; k++) {
		const struct opt_desc *d = opt_find(*k);
		g_autofree char *value = g_key_file_get_string(kf, account, *k, NULL);
		g_autofree char *why = NULL;
		int line = config_key_line(text, account, *k);

		if (!d) {
			g_set_error(err, CONFIG_ERROR, EINVAL, "%s:%d: unknown key '%s' in [%s]",
				    file, line, *k, account);
			return -EINVAL;
		}
		if (opt_set(o, d, value ? g_strstrip(value) : NULL, &why) < 0) {
			g_set_error(err, CONFIG_ERROR, EINVAL, "%s:%d: key '%s': %s", file, line,
				    *k, why);
			return -EINVAL;
		}
	}
	return 0;
}

int options_check_config(const char *path, GError **err)
{
	g_autofree char *file = NULL;
	g_autofree char *text = NULL;
	g_autoptr(GKeyFile) kf = NULL;
	int r = config_read(path, &file, &text, &kf, err);

	if (r != 0)
		return r < 0 ? r : 0;
	g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
	for (char **g = groups; r == 0 && *g; g++) {
		struct options o;
		options_init(&o);
		r = load_section(&o, file, text, kf, *g, err);
		options_clear(&o);
	}
	return r;
}

int options_load_config(struct options *o, const char *path, const char *account, GError **err)
{
	g_autofree char *file = NULL;
	g_autofree char *text = NULL;
	g_autoptr(GKeyFile) kf = NULL;
	int r = config_read(path, &file, &text, &kf, err);

	return r != 0 ? (r < 0 ? r : 0) : load_section(o, file, text, kf, account, err);
}

/* $XDG_*_HOME/smarthomefs when a home is known, else the system directory. */
static char *xdg_dir(const char *env, const char *home_rel, const char *system_dir)
{
	const char *v = g_getenv(env);
	const char *home = g_getenv("HOME");

	if (v && g_path_is_absolute(v))
		return g_build_filename(v, "smarthomefs", NULL);
	if (home && g_path_is_absolute(home))
		return g_build_filename(home, home_rel, "smarthomefs", NULL);
	return g_strdup(system_dir);
}

char *options_cache_dir(const struct options *o, const char *account)
{
	if (o->cache_dir)
		return g_strdup(o->cache_dir);
	g_autofree char *base = xdg_dir("XDG_CACHE_HOME", ".cache", "/var/cache/smarthomefs");
	return g_build_filename(base, account, NULL);
}

char *options_state_dir(const struct options *o)
{
	if (o->state_dir)
		return g_strdup(o->state_dir);
	return xdg_dir("XDG_STATE_HOME", ".local/state", "/var/lib/smarthomefs");
}

int options_check_trust(const struct options *o, const char *account, GError **err)
{
	g_autofree char *cache = account ? options_cache_dir(o, account) : NULL;
	g_autofree char *state = options_state_dir(o);
	g_autofree char *locks = options_lock_dir(o);
	const char *dirs[] = {state, locks, cache};
	for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
		int r = dirs[i] ? trust_check_dir(dirs[i], err) : 0;
		if (r < 0)
			return r;
	}
	return o->cafile ? trust_check_readable(o->cafile, err) : 0;
}

void options_token_store(const struct options *o, struct token_store *out)
{
	out->kind = o->token_store;
	out->state_dir = options_state_dir(o);
}

char *options_lock_dir(const struct options *o)
{
	const char *run = g_getenv("XDG_RUNTIME_DIR");

	if (run && g_path_is_absolute(run) && !o->state_dir)
		return g_build_filename(run, "smarthomefs", NULL);
	g_autofree char *state = options_state_dir(o);
	return g_build_filename(state, "locks", NULL);
}
