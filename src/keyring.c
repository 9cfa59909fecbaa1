/* keyring: the two token stores. The keyring is the default because a desktop user
 * already trusts it with secrets; the file store exists for headless machines and is
 * only ever used when asked for, so a token never lands on disk by surprise. */
#include "keyring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>
#include <libsecret/secret.h>

#include "log.h"
#include "trust.h"

/* A token file holds a few hundred bytes; anything far larger is not ours. */
#define TOKEN_FILE_MAX (64 * 1024)

static const SecretSchema token_schema = {
    .name = "io.smarthomefs.Token",
    .flags = SECRET_SCHEMA_NONE,
    .attributes =
	{
	    {"provider", SECRET_SCHEMA_ATTRIBUTE_STRING},
	    {"account", SECRET_SCHEMA_ATTRIBUTE_STRING},
	    {NULL, 0},
	},
};

const char *token_store_name(enum token_store_kind kind)
{
	return kind == TOKEN_STORE_FILE ? "file" : "keyring";
}

int token_store_parse(const char *s, enum token_store_kind *kind)
{
	if (!s)
		return -EINVAL;
	if (strcmp(s, "keyring") == 0)
		*kind = TOKEN_STORE_KEYRING;
	else if (strcmp(s, "file") == 0)
		*kind = TOKEN_STORE_FILE;
	else
		return -EINVAL;
	return 0;
}

/* An account becomes a file name: nothing that could climb out of the directory. */
static int account_check(const char *account, GError **err)
{
	if (!account || !*account || account[0] == '.' || strchr(account, '/') ||
	    strlen(account) > 200) {
		g_set_error(err, G_FILE_ERROR, G_FILE_ERROR_INVAL,
			    "\"%s\" is not a valid account name.", account ? account : "");
		return -EINVAL;
	}
	return 0;
}

/* ---- Secret Service ---- */

/* Every error that is not libsecret's own means the Secret Service did not answer:
 * GDBus reports a missing session bus, a bus without the service, or a failed
 * autolaunch (G_SPAWN_EXIT_ERROR from dbus-launch) in several domains. */
static bool error_is_no_service(const GError *e)
{
	return e->domain != SECRET_ERROR;
}

static int keyring_error(const char *what, GError *e, GError **err)
{
	/* The service runs but has no default keyring, and could not show the prompt that
	 * creates one (a headless session). */
	if (g_error_matches(e, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_OBJECT)) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_HOST_UNREACHABLE,
			    "The Secret Service has no default keyring, so the tokens cannot be "
			    "%s. Create and unlock one (in a desktop session, or with "
			    "`gnome-keyring-daemon --unlock`) or choose the file store with "
			    "-o token_store=file / token_store=file in the config file.",
			    what);
		return -EHOSTUNREACH;
	}
	if (error_is_no_service(e)) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_HOST_UNREACHABLE,
			    "No Secret Service is running (the desktop keyring). Start one "
			    "(gnome-keyring-daemon, KeePassXC) or choose the file store with "
			    "-o token_store=file / token_store=file in the config file. (D-Bus "
			    "said: %s)",
			    e->message);
		return -EHOSTUNREACH;
	}
	if (e->domain == SECRET_ERROR && e->code == SECRET_ERROR_IS_LOCKED) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
			    "The keyring is locked, so the tokens cannot be %s. Unlock it (log in "
			    "to the desktop) or choose token_store=file.",
			    what);
		return -EACCES;
	}
	g_set_error(err, G_IO_ERROR, G_IO_ERROR_FAILED, "The keyring failed, tokens not %s: %s",
		    what, e->message);
	return -EIO;
}

static int keyring_load(const char *account, char **json, GError **err)
{
	g_autoptr(GError) e = NULL;
	char *secret =
	    secret_password_lookup_sync(&token_schema, NULL, &e, "account", account, NULL);
	if (e)
		return keyring_error("read", e, err);
	if (!secret)
		return -ENOENT;
	*json = g_strdup(secret);
	secret_password_free(secret);
	return 0;
}

static int keyring_save(const char *account, const char *provider, const char *json, GError **err)
{
	g_autoptr(GError) e = NULL;
	g_autofree char *label = g_strdup_printf("smarthomefs token for %s", account);
	if (!secret_password_store_sync(&token_schema, SECRET_COLLECTION_DEFAULT, label, json, NULL,
					&e, "provider", provider ? provider : "", "account",
					account, NULL))
		return keyring_error("saved", e, err);
	return 0;
}

static int keyring_delete(const char *account, GError **err)
{
	g_autoptr(GError) e = NULL;
	gboolean removed =
	    secret_password_clear_sync(&token_schema, NULL, &e, "account", account, NULL);
	if (e)
		return keyring_error("removed", e, err);
	return removed ? 0 : -ENOENT;
}

#define SECRETS_NAME "org.freedesktop.secrets"

/* The account attribute of the item at @path (NULL: gone meanwhile, or not a string). */
static char *keyring_item_account(GDBusConnection *bus, const char *path)
{
	g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
	    bus, SECRETS_NAME, path, "org.freedesktop.DBus.Properties", "Get",
	    g_variant_new("(ss)", "org.freedesktop.Secret.Item", "Attributes"),
	    G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, -1, NULL, NULL);
	g_autoptr(GVariant) attrs = NULL;
	const char *account = NULL;

	if (!reply)
		return NULL;
	g_variant_get(reply, "(v)", &attrs);
	if (!g_variant_is_of_type(attrs, G_VARIANT_TYPE("a{ss}")) ||
	    !g_variant_lookup(attrs, "account", "&s", &account) || !*account)
		return NULL;
	return g_strdup(account);
}

/* The accounts of our schema's items, asked of the Secret Service's D-Bus interface
 * itself (SearchItems, then each item's Attributes), locked items included. Not through
 * libsecret's search: it makes a SecretItem proxy of every item found and, called from a
 * thread of its own as a mount of all accounts does every few seconds, leaves a few bytes
 * of each proxy's initialisation unreachable. */
static int keyring_list(GPtrArray *accounts, GError **err)
{
	g_autoptr(GError) e = NULL;
	g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, NULL, &e);
	if (!bus)
		return keyring_error("listed", e, err);
	GVariantBuilder match;
	g_variant_builder_init(&match, G_VARIANT_TYPE("a{ss}"));
	g_variant_builder_add(&match, "{ss}", "xdg:schema", token_schema.name);
	g_autoptr(GVariant) found = g_dbus_connection_call_sync(
	    bus, SECRETS_NAME, "/org/freedesktop/secrets", "org.freedesktop.Secret.Service",
	    "SearchItems", g_variant_new("(a{ss})", &match), G_VARIANT_TYPE("(aoao)"),
	    G_DBUS_CALL_FLAGS_NONE, -1, NULL, &e);
	if (!found)
		return keyring_error("listed", e, err);
	for (gsize half = 0; half < 2; half++) { /* the unlocked items, then the locked */
		g_autoptr(GVariant) paths = g_variant_get_child_value(found, half);
		GVariantIter it;
		const char *path;
		g_variant_iter_init(&it, paths);
		while (g_variant_iter_next(&it, "&o", &path)) {
			char *account = keyring_item_account(bus, path);
			bool known = false;
			for (guint i = 0; account && i < accounts->len && !known; i++)
				known = strcmp(accounts->pdata[i], account) == 0;
			if (account && !known)
				g_ptr_array_add(accounts, account);
			else
				g_free(account);
		}
	}
	return 0;
}

/* ---- File store ---- */

static char *file_store_dir(const struct token_store *s)
{
	if (s->state_dir && *s->state_dir)
		return g_build_filename(s->state_dir, "tokens", NULL);
	return g_build_filename(g_get_user_state_dir(), "smarthomefs", "tokens", NULL);
}

static char *file_store_path(const struct token_store *s, const char *account)
{
	g_autofree char *dir = file_store_dir(s);
	g_autofree char *name = g_strconcat(account, ".json", NULL);
	return g_build_filename(dir, name, NULL);
}

static int file_error(int r, const char *what, const char *path, GError **err)
{
	g_set_error(err, G_FILE_ERROR, g_file_error_from_errno(-r), "Could not %s %s: %s", what,
		    path, g_strerror(-r));
	return r;
}

static int file_load(const struct token_store *s, const char *account, char **json, GError **err)
{
	g_autofree char *dir = file_store_dir(s);
	g_autofree char *path = file_store_path(s, account);
	/* A token file another user could have planted would be sent as the bearer. */
	int r = trust_check_dir(dir, err);
	if (r < 0)
		return r;
	int fd = trust_open_private(path, O_RDONLY, 0, err);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size > TOKEN_FILE_MAX) {
		close(fd);
		g_set_error(err, G_FILE_ERROR, G_FILE_ERROR_INVAL,
			    "%s is not a token file; remove it and log in again.", path);
		return -EINVAL;
	}
	if (st.st_mode & 077)
		log_warn("%s can be read by other users; chmod 600 it.", path);

	GString *buf = g_string_sized_new((gsize)st.st_size + 1);
	char chunk[4096];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || buf->len + (size_t)n > TOKEN_FILE_MAX) {
			r = n < 0 ? -errno : -EFBIG;
			close(fd);
			explicit_bzero(buf->str, buf->len);
			g_string_free(buf, TRUE);
			explicit_bzero(chunk, sizeof(chunk));
			return file_error(r, "read", path, err);
		}
		g_string_append_len(buf, chunk, n);
	}
	explicit_bzero(chunk, sizeof(chunk));
	close(fd);
	*json = g_string_free(buf, FALSE);
	return 0;
}

/* GLib writes a new file beside the old one, fsyncs it and renames it over: a crash
 * leaves either the old tokens or the new ones, never half of each. Losing a rotated
 * refresh token would force the user to log in again. */
static int file_save(const struct token_store *s, const char *account, const char *json,
		     GError **err)
{
	g_autofree char *dir = file_store_dir(s);
	g_autofree char *path = file_store_path(s, account);
	if (g_mkdir_with_parents(dir, 0700) < 0)
		return file_error(-errno, "create", dir, err);
	/* An existing directory of ours may have come with looser rights. */
	struct stat st;
	if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
	    chmod(dir, 0700) < 0)
		return file_error(-errno, "protect", dir, err);
	int r = trust_private_dir(dir, err);
	if (r < 0)
		return r;

	g_autoptr(GError) e = NULL;
	if (!g_file_set_contents_full(path, json, -1,
				      G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
				      0600, &e)) {
		g_propagate_prefixed_error(err, g_steal_pointer(&e), "Could not save the tokens: ");
		return -EIO;
	}
	/* The rename itself must reach the disk too. */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int file_delete(const struct token_store *s, const char *account, GError **err)
{
	g_autofree char *path = file_store_path(s, account);
	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		return file_error(-errno, "remove", path, err);
	}
	return 0;
}

static int file_list(const struct token_store *s, GPtrArray *accounts, GError **err)
{
	g_autofree char *dir = file_store_dir(s);
	g_autoptr(GError) e = NULL;
	g_autoptr(GDir) d = g_dir_open(dir, 0, &e);
	if (!d) {
		if (g_error_matches(e, G_FILE_ERROR, G_FILE_ERROR_NOENT))
			return 0;
		g_propagate_error(err, g_steal_pointer(&e));
		return -EIO;
	}
	const char *name;
	while ((name = g_dir_read_name(d))) {
		if (name[0] == '.' || !g_str_has_suffix(name, ".json"))
			continue;
		g_ptr_array_add(accounts, g_strndup(name, strlen(name) - strlen(".json")));
	}
	return 0;
}

/* ---- The interface ---- */

void token_store_clear(struct token_store *s)
{
	g_clear_pointer(&s->state_dir, g_free);
}

int token_store_load(const struct token_store *s, const char *account, char **json, GError **err)
{
	*json = NULL;
	int r = account_check(account, err);
	if (r < 0)
		return r;
	if (s->kind == TOKEN_STORE_FILE)
		return file_load(s, account, json, err);
	return keyring_load(account, json, err);
}

int token_store_save(const struct token_store *s, const char *account, const char *provider,
		     const char *json, GError **err)
{
	int r = account_check(account, err);
	if (r < 0)
		return r;
	if (s->kind == TOKEN_STORE_FILE)
		return file_save(s, account, json, err);
	return keyring_save(account, provider, json, err);
}

int token_store_delete(const struct token_store *s, const char *account, GError **err)
{
	int r = account_check(account, err);
	if (r < 0)
		return r;
	if (s->kind == TOKEN_STORE_FILE)
		return file_delete(s, account, err);
	return keyring_delete(account, err);
}

int token_store_list(const struct token_store *s, GPtrArray *accounts, GError **err)
{
	if (s->kind == TOKEN_STORE_FILE)
		return file_list(s, accounts, err);
	return keyring_list(accounts, err);
}
