/* cli_status: `smarthomefs status [ACCOUNT]`: each logged-in account, its token's expiry,
 * the caller's mounts of it and their API budget (read from each mount's status file).
 * Never shows a token. */
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "cli.h"
#include "config.h"
#include "internal_files.h"
#include "keyring.h"
#include "log.h"
#include "provider.h"
#include "token.h"

/* Whether the mount options @opts (from /proc/self/mounts) carry user_id=@uid: FUSE
 * records there who mounted. */
static bool mounted_by(const char *opts, uid_t uid)
{
	g_auto(GStrv) o = g_strsplit(opts, ",", -1);
	for (char **i = o; *i; i++) {
		guint64 v;
		if (g_str_has_prefix(*i, "user_id=") &&
		    g_ascii_string_to_unsigned(*i + strlen("user_id="), 10, 0, G_MAXUINT32, &v,
					       NULL))
			return v == uid;
	}
	return false;
}

/* The mount points of @account made by the calling user, from /proc/self/mounts
 * (fsname is the account, or ALL_ACCOUNTS for a mount of all). Another user's mount of an account with the same name is
 * their login, from their keyring, not ours: it is left out, for root too (`findmnt
 * -t fuse.smarthomefs` lists every mount). */
static GPtrArray *mounts_of(const char *account)
{
	GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *text = NULL;

	if (!g_file_get_contents("/proc/self/mounts", &text, NULL, NULL))
		return out;
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		g_auto(GStrv) f = g_strsplit(*l, " ", 5);
		if (g_strv_length(f) < 4 || strcmp(f[2], "fuse.smarthomefs") != 0)
			continue;
		if ((strcmp(f[0], account) == 0 || strcmp(f[0], ALL_ACCOUNTS) == 0) &&
		    mounted_by(f[3], getuid()))
			g_ptr_array_add(out, g_strcompress(f[1]));
	}
	return out;
}

/* A login this close to its end is warned about. */
#define LOGIN_WARN_S (3 * 24 * 3600)

static json_t *iso_time(gint64 unix_s)
{
	g_autofree char *when = iso_time_utc(unix_s);
	return when ? json_string(when) : json_null();
}

/* Adds when the login of @ts ends: "login_expires" (time), "login_expires_in_s",
 * "login_expired" when that time has passed. */
static void login_end(json_t *o, const struct token_set *ts)
{
	const struct provider *p = ts->provider ? provider_find(ts->provider) : NULL;
	gint64 end_s = p ? token_set_login_expires_at_s(ts, p) : 0;
	if (end_s <= 0)
		return;
	gint64 left_s = end_s - g_get_real_time() / G_USEC_PER_SEC;
	json_object_set_new(o, "login_expires", iso_time(end_s));
	json_object_set_new(o, "login_expires_in_s", json_integer(MAX(left_s, 0)));
	if (left_s <= 0)
		json_object_set_new(o, "login_expired", json_true());
}

/* One account's status as JSON (never a token). */
static json_t *account_status(const struct token_store *store, const char *id)
{
	g_autoptr(GError) err = NULL;
	struct token_set ts = {0};
	json_t *o = json_object();

	json_object_set_new(o, "account", json_string(id));
	json_object_set_new(o, "store", json_string(token_store_name(store->kind)));
	if (token_set_load(store, id, &ts, &err) == 0) {
		json_object_set_new(o, "provider", json_string(ts.provider ? ts.provider : "?"));
		if (ts.expires_at_s > 0)
			json_object_set_new(o, "access_token_expires", iso_time(ts.expires_at_s));
		json_object_set_new(o, "refresh_token", json_boolean(ts.refresh_token != NULL));
		login_end(o, &ts);
	}
	token_set_clear(&ts);

	g_autoptr(GPtrArray) mounts = mounts_of(id);
	json_t *ma = json_array();
	for (guint i = 0; i < mounts->len; i++) {
		const char *mp = mounts->pdata[i];
		g_autofree char *status_path =
		    g_build_filename(mp, INTERNAL_DIR, INTERNAL_STATUS, NULL);
		json_t *file = json_load_file(status_path, 0, NULL);
		json_t *all = json_object_get(file, "accounts");
		/* A mount of all accounts has one object per account it serves. */
		json_t *st = all ? json_incref(json_object_get(all, id)) : json_incref(file);
		json_decref(file);
		if (all && !st)
			continue; /* a mount of all that does not serve this account (yet) */
		json_t *m = json_pack("{s:s}", "mountpoint", mp);
		json_t *rl = st ? json_object_get(st, "rate_limit") : NULL;
		if (rl)
			json_object_set(m, "rate_limit", rl);
		if (st)
			json_object_set(m, "api_calls", json_object_get(st, "api_calls"));
		/* The mount's refresh was refused: the login is over, whatever its age. */
		json_t *login = st ? json_object_get(st, "login") : NULL;
		if (json_is_true(json_object_get(login, "expired")))
			json_object_set_new(o, "login_expired", json_true());
		json_decref(st);
		json_array_append_new(ma, m);
	}
	json_object_set_new(o, "mounts", ma);
	return o;
}

/* "3 days" or "5 hours": how long is left, for a person. */
static char *time_left(gint64 left_s)
{
	if (left_s >= 2 * 24 * 3600)
		return g_strdup_printf("%lld days", (long long)(left_s / (24 * 3600)));
	if (left_s >= 2 * 3600)
		return g_strdup_printf("%lld hours", (long long)(left_s / 3600));
	return g_strdup_printf("%lld minutes", (long long)MAX(left_s / 60, 1));
}

/* The human form of one account_status(). */
static void print_account(json_t *a)
{
	const char *id = json_string_value(json_object_get(a, "account"));
	printf("%s\n", id);
	printf("  provider:      %s\n", json_string_value(json_object_get(a, "provider")) ?: "?");
	printf("  store:         %s\n", json_string_value(json_object_get(a, "store")));
	printf("  token expires: %s\n",
	       json_string_value(json_object_get(a, "access_token_expires")) ?: "unknown");
	const char *login_end = json_string_value(json_object_get(a, "login_expires"));
	json_t *left = json_object_get(a, "login_expires_in_s");
	if (json_is_true(json_object_get(a, "login_expired"))) {
		printf("  login:         expired; run `smarthomefs login %s`\n", id);
	} else if (login_end && json_integer_value(left) <= LOGIN_WARN_S) {
		g_autofree char *in = time_left(json_integer_value(left));
		printf("  login expires: %s, in %s (warning: unless a mount uses it by then, run "
		       "`smarthomefs login %s` again)\n",
		       login_end, in, id);
	} else if (login_end) {
		printf("  login expires: %s unless used (a mount keeps it alive)\n", login_end);
	}
	size_t j;
	json_t *m;
	json_array_foreach (json_object_get(a, "mounts"), j, m) {
		json_t *rl = json_object_get(m, "rate_limit");
		json_t *calls = rl ? json_object_get(rl, "remaining") : NULL;
		printf("  mounted at:    %s", json_string_value(json_object_get(m, "mountpoint")));
		if (json_is_integer(calls))
			printf(" (API calls left: %lld)", (long long)json_integer_value(calls));
		printf("\n");
	}
}

int cli_status(int argc, char **argv)
{
	gboolean as_json = FALSE;
	GOptionEntry entries[] = {
	    {"json", 'j', 0, G_OPTION_ARG_NONE, &as_json, "Print JSON for scripts", NULL},
	    G_OPTION_ENTRY_NULL,
	};
	int r = cli_parse_args("[ACCOUNT] - show accounts, token expiry, mounts, quota",
			       "Shows each logged-in account: provider, token store, token expiry, "
			       "when an unused login ends, your mounts of it and their API budget. "
			       "Never shows a token. Exits 1 when a login has expired.",
			       entries, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc > 2) {
		cli_fail("status takes at most one ACCOUNT (try --help)");
		return EXIT_USAGE;
	}
	struct options opts;
	options_init(&opts);
	r = cli_load_options(argc == 2 ? argv[1] : "", &opts);
	if (r != EXIT_OK) {
		options_clear(&opts);
		return r;
	}
	struct token_store store;
	options_token_store(&opts, &store);
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GError) err = NULL;
	if (token_store_list(&store, ids, &err) < 0) {
		cli_fail("%s", err->message);
		r = EXIT_FAIL;
		goto out;
	}
	json_t *all = json_array();
	for (guint i = 0; i < ids->len; i++)
		if (argc < 2 || strcmp(ids->pdata[i], argv[1]) == 0)
			json_array_append_new(all, account_status(&store, ids->pdata[i]));
	if (argc == 2 && json_array_size(all) == 0) {
		g_autofree char *in = cli_logged_in(&store);
		cli_fail("no login is stored for '%s' in the %s%s%s%s", argv[1],
			 token_store_name(store.kind), in ? " (logged in: " : "", in ?: "",
			 in ? ")" : "");
		r = EXIT_FAIL;
	} else if (as_json) {
		g_autoptr(GString) out = g_string_new(NULL);
		provider_render_json(all, out);
		fputs(out->str, stdout);
	} else if (json_array_size(all) == 0) {
		printf("No account is logged in (store: %s). Log in with `smarthomefs login "
		       "PROVIDER`.\n",
		       token_store_name(store.kind));
	} else {
		size_t i;
		json_t *a;
		json_array_foreach (all, i, a)
			print_account(a);
	}
	size_t i;
	json_t *a;
	json_array_foreach (all, i, a) {
		if (!json_is_true(json_object_get(a, "login_expired")))
			continue;
		const char *id = json_string_value(json_object_get(a, "account"));
		cli_fail("the login of %s has expired; run `smarthomefs login %s` to log in again",
			 id, id);
		r = EXIT_FAIL;
	}
	json_decref(all);
out:
	token_store_clear(&store);
	options_clear(&opts);
	return r;
}
