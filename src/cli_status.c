/* cli_status: `smarthomefs status [ACCOUNT]`: each logged-in account, its token's expiry,
 * the caller's mounts of it and their API budget (read from each mount's status file).
 * Never shows a token. */
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "cli.h"
#include "config.h"
#include "fs.h"
#include "keyring.h"
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
 * (fsname is the account). Another user's mount of an account with the same name is
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
		if (strcmp(f[0], account) == 0 && mounted_by(f[3], getuid()))
			g_ptr_array_add(out, g_strcompress(f[1]));
	}
	return out;
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
		if (ts.expires_at_s > 0) {
			g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(ts.expires_at_s);
			g_autofree char *when = g_date_time_format(dt, "%Y-%m-%dT%H:%M:%SZ");
			json_object_set_new(o, "access_token_expires", json_string(when));
		}
		json_object_set_new(o, "refresh_token", json_boolean(ts.refresh_token != NULL));
	}
	token_set_clear(&ts);

	g_autoptr(GPtrArray) mounts = mounts_of(id);
	json_t *ma = json_array();
	for (guint i = 0; i < mounts->len; i++) {
		const char *mp = mounts->pdata[i];
		json_t *m = json_pack("{s:s}", "mountpoint", mp);
		g_autofree char *status_path =
		    g_build_filename(mp, FS_INTERNAL_DIR, FS_STATUS_FILE, NULL);
		json_t *st = json_load_file(status_path, 0, NULL);
		json_t *rl = st ? json_object_get(st, "rate_limit") : NULL;
		if (rl)
			json_object_set(m, "rate_limit", rl);
		if (st)
			json_object_set(m, "api_calls", json_object_get(st, "api_calls"));
		json_decref(st);
		json_array_append_new(ma, m);
	}
	json_object_set_new(o, "mounts", ma);
	return o;
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
			       "your mounts of it and their API budget. Never shows a token.",
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
		cli_fail("no login is stored for '%s' in the %s", argv[1],
			 token_store_name(store.kind));
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
		json_array_foreach (all, i, a) {
			printf("%s\n", json_string_value(json_object_get(a, "account")));
			printf("  provider:      %s\n",
			       json_string_value(json_object_get(a, "provider")) ?: "?");
			printf("  store:         %s\n",
			       json_string_value(json_object_get(a, "store")));
			printf("  token expires: %s\n",
			       json_string_value(json_object_get(a, "access_token_expires"))
				   ?: "unknown");
			size_t j;
			json_t *m;
			json_array_foreach (json_object_get(a, "mounts"), j, m) {
				json_t *rl = json_object_get(m, "rate_limit");
				json_t *left = rl ? json_object_get(rl, "remaining") : NULL;
				printf("  mounted at:    %s",
				       json_string_value(json_object_get(m, "mountpoint")));
				if (json_is_integer(left))
					printf(" (API calls left: %lld)",
					       (long long)json_integer_value(left));
				printf("\n");
			}
		}
	}
	json_decref(all);
out:
	token_store_clear(&store);
	options_clear(&opts);
	return r;
}
