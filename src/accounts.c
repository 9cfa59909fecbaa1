/* accounts: the sessions of one mount and the routing of paths to them. See the header. */
#include "accounts.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <gio/gio.h>

#include "fnv.h"
#include "keyring.h"
#include "log.h"

/* One account of the mount. */
struct member {
	struct session *session; /* owned */
	const char *id;		 /* the session's */
	bool retired;		 /* (lock) logged out while mounted: serves nothing new */
	GHashTable *last;	 /* (lock) root directory -> GPtrArray of char * ids: what
				  * its last listing that worked showed there */
};

/* What a directory of the root last showed, merged. */
struct merged {
	uint64_t hash;	/* of its names, in order */
	uint64_t gen;	/* changes when the names do */
	GPtrArray *ids; /* char *, the names shown */
};

struct accounts {
	bool all;
	struct options opts; /* a mount of all accounts: its own (-o) */
	struct token_store store;
	accounts_open_fn open;
	void *open_data;
	gint64 started_at_s; /* unix */
	accounts_gauges_fn gauges; /* set before any read, then read only */
	void *gauges_data;

	GMutex lock;
	GPtrArray *members;   /* (lock) struct member *, in account name order, retired kept */
	GHashTable *owner;    /* (lock) "dir/id" -> struct member *: who serves that id, for
			       * the ids its directory's last listing shows, no others */
	GHashTable *merged;   /* (lock) dir -> struct merged * */
	GHashTable *unopened; /* (lock) id -> why it could not be opened: said once */
	GCond wake;	      /* ends the watcher's wait */
	bool stopping;	      /* (lock) */
	GThread *watcher;
};

static void member_free(gpointer data)
{
	struct member *m = data;

	g_hash_table_destroy(m->last);
	session_free(m->session);
	g_free(m);
}

static void merged_free(gpointer data)
{
	struct merged *x = data;

	g_ptr_array_unref(x->ids);
	g_free(x);
}

static struct member *member_new(struct session *session)
{
	struct member *m = g_new0(struct member, 1);

	m->session = session;
	m->id = session_account_id(session);
	m->last = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
					(GDestroyNotify)g_ptr_array_unref);
	return m;
}

static struct accounts *accounts_alloc(void)
{
	struct accounts *a = g_new0(struct accounts, 1);

	g_mutex_init(&a->lock);
	g_cond_init(&a->wake);
	a->members = g_ptr_array_new_with_free_func(member_free);
	a->owner = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	a->merged = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, merged_free);
	a->unopened = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	a->started_at_s = g_get_real_time() / G_USEC_PER_SEC;
	return a;
}

struct accounts *accounts_new_one(struct session *session)
{
	struct accounts *a = accounts_alloc();

	g_ptr_array_add(a->members, member_new(session));
	return a;
}

struct accounts *accounts_new_all(struct options *opts, const struct token_store *store,
				  accounts_open_fn open, void *data)
{
	struct accounts *a = accounts_alloc();

	a->all = true;
	a->opts = *opts;
	memset(opts, 0, sizeof(*opts));
	a->store.kind = store->kind;
	a->store.state_dir = g_strdup(store->state_dir);
	a->open = open;
	a->open_data = data;
	return a;
}

void accounts_free(struct accounts *a)
{
	if (!a)
		return;
	accounts_stop(a);
	g_ptr_array_unref(a->members);
	g_hash_table_destroy(a->owner);
	g_hash_table_destroy(a->merged);
	g_hash_table_destroy(a->unopened);
	if (a->all)
		options_clear(&a->opts);
	token_store_clear(&a->store);
	g_cond_clear(&a->wake);
	g_mutex_clear(&a->lock);
	g_free(a);
}

bool accounts_all(struct accounts *a)
{
	return a->all;
}

static struct session *the_one(struct accounts *a)
{
	return ((struct member *)a->members->pdata[0])->session;
}

struct session *accounts_one(struct accounts *a)
{
	return a->all ? NULL : the_one(a);
}

const struct options *accounts_options(struct accounts *a)
{
	return a->all ? &a->opts : session_options(the_one(a));
}

char *accounts_cache_dir(struct accounts *a)
{
	return a->all ? options_cache_dir(&a->opts, "all") : session_cache_dir(the_one(a));
}

/* Adds @session as an account, in name order. (lock) */
static void add_member_locked(struct accounts *a, struct session *session)
{
	struct member *m = member_new(session);
	guint at = 0;

	while (at < a->members->len &&
	       strcmp(((struct member *)a->members->pdata[at])->id, m->id) <= 0)
		at++;
	g_ptr_array_insert(a->members, (gint)at, m);
}

/* The members serving now, in name order (their pointers; members live until the end). */
static GPtrArray *active_members(struct accounts *a)
{
	GPtrArray *out = g_ptr_array_new();

	g_mutex_lock(&a->lock);
	for (guint i = 0; i < a->members->len; i++) {
		struct member *m = a->members->pdata[i];
		if (!m->retired)
			g_ptr_array_add(out, m);
	}
	g_mutex_unlock(&a->lock);
	return out;
}

GPtrArray *accounts_sessions(struct accounts *a)
{
	g_autoptr(GPtrArray) members = active_members(a);
	GPtrArray *out = g_ptr_array_new();

	for (guint i = 0; i < members->len; i++)
		g_ptr_array_add(out, ((struct member *)members->pdata[i])->session);
	return out;
}

/* What is said of account @id that could not be opened (g_free). */
static char *unopened_reason(const char *id, int r, const GError *err)
{
	return g_strdup_printf("cannot serve the account %s: %s", id,
			       err ? err->message : g_strerror(-r));
}

static gint compare_strings(gconstpointer x, gconstpointer y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Opens @id; says once why it could not. */
static void open_account(struct accounts *a, const char *id)
{
	g_autoptr(GError) err = NULL;
	struct session *session = NULL;
	int r = a->open(a->open_data, id, &session, &err);
	g_autofree char *reason = r < 0 ? unopened_reason(id, r, err) : NULL;

	g_mutex_lock(&a->lock);
	bool said = g_hash_table_contains(a->unopened, id);
	if (r == 0) {
		add_member_locked(a, session);
		g_hash_table_remove(a->unopened, id);
	} else {
		g_hash_table_replace(a->unopened, g_strdup(id), g_strdup(reason));
	}
	g_mutex_unlock(&a->lock);
	if (r == 0)
		log_info("serving the account %s", id);
	else if (!said)
		log_warn("%s", reason);
}

void accounts_say_unopened(struct accounts *a)
{
	g_autoptr(GPtrArray) reasons = g_ptr_array_new_with_free_func(g_free);

	g_mutex_lock(&a->lock);
	GHashTableIter it;
	gpointer reason;
	g_hash_table_iter_init(&it, a->unopened);
	while (g_hash_table_iter_next(&it, NULL, &reason))
		g_ptr_array_add(reasons, g_strdup(reason));
	g_mutex_unlock(&a->lock);
	g_ptr_array_sort(reasons, compare_strings);
	for (guint i = 0; i < reasons->len; i++)
		log_warn("%s", (char *)reasons->pdata[i]);
}

static bool contains_id(GPtrArray *ids, const char *id)
{
	for (guint i = 0; i < ids->len; i++)
		if (strcmp(ids->pdata[i], id) == 0)
			return true;
	return false;
}

void accounts_rescan(struct accounts *a)
{
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GPtrArray) gone = g_ptr_array_new();
	g_autoptr(GPtrArray) added = g_ptr_array_new();
	g_autoptr(GError) err = NULL;

	if (!a->all)
		return;
	if (token_store_list(&a->store, ids, &err) < 0) {
		/* The keyring did not answer: nobody is logged out for that. */
		log_debug("cannot list the logins: %s", err->message);
		return;
	}
	g_mutex_lock(&a->lock);
	for (guint i = 0; i < a->members->len; i++) {
		struct member *m = a->members->pdata[i];
		if (!m->retired && !contains_id(ids, m->id)) {
			m->retired = true;
			g_ptr_array_add(gone, m);
		}
	}
	for (guint i = 0; i < ids->len; i++) {
		bool serving = false;
		for (guint k = 0; k < a->members->len && !serving; k++) {
			struct member *m = a->members->pdata[k];
			serving = !m->retired && strcmp(m->id, ids->pdata[i]) == 0;
		}
		if (!serving)
			g_ptr_array_add(added, ids->pdata[i]);
	}
	g_mutex_unlock(&a->lock);
	for (guint i = 0; i < gone->len; i++) {
		struct member *m = gone->pdata[i];
		session_log_out(m->session);
		log_info("the account %s was logged out: its homes leave the mount", m->id);
	}
	for (guint i = 0; i < added->len; i++)
		open_account(a, added->pdata[i]);
}

static gpointer watch_logins(gpointer data)
{
	struct accounts *a = data;

	g_mutex_lock(&a->lock);
	while (!a->stopping) {
		gint64 until = g_get_monotonic_time() + ACCOUNTS_RESCAN_S * G_USEC_PER_SEC;
		while (!a->stopping && g_cond_wait_until(&a->wake, &a->lock, until))
			;
		if (a->stopping)
			break;
		g_mutex_unlock(&a->lock);
		accounts_rescan(a);
		g_mutex_lock(&a->lock);
	}
	g_mutex_unlock(&a->lock);
	return NULL;
}

int accounts_start(struct accounts *a, bool watch, GError **err)
{
	g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GPtrArray) reasons = g_ptr_array_new_with_free_func(g_free);
	GError *first = NULL;
	int r, first_r = 0;

	if (!a->all)
		return 0;
	r = token_store_list(&a->store, ids, err);
	if (r < 0)
		return r;
	if (ids->len == 0) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
			    "no account is logged in (store: %s): run `smarthomefs login "
			    "PROVIDER` first",
			    token_store_name(a->store.kind));
		return -ENOENT;
	}
	for (guint i = 0; i < ids->len; i++) {
		struct session *session = NULL;
		GError *e = NULL;
		r = a->open(a->open_data, ids->pdata[i], &session, &e);
		if (r == 0) {
			g_mutex_lock(&a->lock);
			add_member_locked(a, session);
			g_mutex_unlock(&a->lock);
			g_clear_error(&e);
			continue;
		}
		/* Tried again at each look for logins. */
		char *reason = unopened_reason(ids->pdata[i], r, e);
		g_hash_table_replace(a->unopened, g_strdup(ids->pdata[i]), g_strdup(reason));
		g_ptr_array_add(reasons, reason);
		if (!first) {
			first = e ? e
				  : g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s",
						(char *)ids->pdata[i], g_strerror(-r));
			first_r = r;
		} else {
			g_clear_error(&e);
		}
	}
	/* Said on the terminal now; when no account is served, the first reason is the
	 * error the caller says, so it is not said here too. */
	for (guint i = a->members->len == 0 ? 1 : 0; i < reasons->len; i++)
		log_warn("%s", (char *)reasons->pdata[i]);
	if (a->members->len == 0) {
		g_propagate_error(err, first);
		return first_r;
	}
	g_clear_error(&first);
	if (watch)
		a->watcher = g_thread_new("logins", watch_logins, a);
	return 0;
}

void accounts_stop(struct accounts *a)
{
	g_mutex_lock(&a->lock);
	a->stopping = true;
	g_cond_broadcast(&a->wake);
	GThread *t = g_steal_pointer(&a->watcher);
	g_mutex_unlock(&a->lock);
	if (t)
		g_thread_join(t);
}

/* The names every provider's root lists without a resource (homes/), once each. */
static void root_entries(GPtrArray *entries)
{
	const struct provider_path root = {.comp = NULL, .n = 0};

	for (const struct provider *const *p = provider_all(); *p; p++) {
		g_autoptr(GPtrArray) some = provider_entries_new();
		if ((*p)->list(&root, NULL, some) < 0)
			continue;
		for (guint i = 0; i < some->len; i++) {
			struct provider_entry *e = some->pdata[i];
			bool known = false;
			for (guint k = 0; k < entries->len && !known; k++)
				known = strcmp(((struct provider_entry *)entries->pdata[k])->name,
					       e->name) == 0;
			if (!known)
				g_ptr_array_add(entries, provider_entry_new(e->name, e->type));
		}
	}
}

bool accounts_owns(struct accounts *a, const struct provider_path *path)
{
	if (!a->all || path->n > 1)
		return false;
	if (path->n == 0)
		return true;
	g_autoptr(GPtrArray) entries = provider_entries_new();
	root_entries(entries);
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = entries->pdata[i];
		if (e->type == ENTRY_DIR && strcmp(e->name, path->comp[0]) == 0)
			return true;
	}
	return false;
}

struct session *accounts_route(struct accounts *a, const struct provider_path *path)
{
	if (!a->all)
		return the_one(a);
	if (path->n < 2)
		return NULL;
	g_autofree char *key = g_strconcat(path->comp[0], "/", path->comp[1], NULL);
	g_mutex_lock(&a->lock);
	struct member *m = g_hash_table_lookup(a->owner, key);
	/* A logged-out account serves nothing, not even what the kernel still knows of it. */
	struct session *s = m && !m->retired ? m->session : NULL;
	g_mutex_unlock(&a->lock);
	return s;
}

/* @m's entries of root directory @path now, in @out, and its resource in @res. */
static int list_one(struct member *m, const struct provider_path *path, bool may_fetch,
		    struct resource *res, GPtrArray *out)
{
	const struct provider *p = session_provider(m->session);
	struct resource_ref ref = {0};
	int r = session_source(m->session, path, &ref, !may_fetch);

	if (r == -ENOENT) {
		/* A provider without this directory lists nothing in it. */
		resource_ref_clear(&ref);
		return 0;
	}
	if (r == 0 && !ref.path)
		r = p->list(path, NULL, out);
	else if (r == 0)
		r = may_fetch ? session_get(m->session, &ref, res)
			      : session_get_cached(m->session, &ref, res);
	if (r == 0 && ref.path) {
		json_t *body = resource_json(res);
		r = body ? p->list(path, body, out) : -EIO;
		json_decref(body);
	}
	guint max = (guint)session_options(m->session)->max_entries;
	/* No more ids kept than fs_core would show of the listing. */
	if (r == 0 && out->len > max)
		g_ptr_array_set_size(out, max);
	if (r < 0 && r != -EINPROGRESS)
		log_debug("%s: cannot list %s: %s", m->id, path->comp[0], g_strerror(-r));
	resource_ref_clear(&ref);
	return r;
}

/* Adds @name to the merged listing, served by @m, unless an account before it claimed
 * it. (lock) */
static void claim(struct accounts *a, const char *dir, const char *name, enum entry_type type,
		  struct member *m, GHashTable *seen, GPtrArray *entries)
{
	if (g_hash_table_contains(seen, name))
		return;
	g_hash_table_add(seen, (gpointer)name);
	g_ptr_array_add(entries, provider_entry_new(name, type));
	g_hash_table_replace(a->owner, g_strconcat(dir, "/", name, NULL), m);
}

/* Drops who served the ids of @dir that its listing no longer shows (@seen): a home no
 * account lists any more is gone, and the table stays as large as the listings. (lock) */
static void forget_unlisted_locked(struct accounts *a, const char *dir, GHashTable *seen)
{
	size_t len = strlen(dir);
	GHashTableIter it;
	gpointer key;

	g_hash_table_iter_init(&it, a->owner);
	while (g_hash_table_iter_next(&it, &key, NULL)) {
		const char *k = key;
		if (strncmp(k, dir, len) == 0 && k[len] == '/' &&
		    !g_hash_table_contains(seen, k + len + 1))
			g_hash_table_iter_remove(&it);
	}
}

/* One account's listing of a root directory: the ids, or NULL when it failed. */
struct account_listing {
	struct member *m;
	GPtrArray *entries; /* struct provider_entry *; NULL: failed */
};

static void listings_free(struct account_listing *got, guint n)
{
	for (guint i = 0; i < n; i++)
		if (got[i].entries)
			g_ptr_array_unref(got[i].entries);
	g_free(got);
}

int accounts_list(struct accounts *a, const struct provider_path *path, bool may_fetch,
		  struct resource *listing, GPtrArray *entries)
{
	memset(listing, 0, sizeof(*listing));
	if (path->n == 0) {
		root_entries(entries);
		listing->gen = 1;
		listing->fresh_for_s = ACCOUNTS_RESCAN_S;
		return 0;
	}
	const char *dir = path->comp[0];
	g_autoptr(GPtrArray) members = active_members(a);
	struct account_listing *got = g_new0(struct account_listing, members->len);
	int r = 0, first_error = 0;
	bool any = false;

	listing->fresh_for_s = ACCOUNTS_RESCAN_S;
	for (guint i = 0; i < members->len && r != -EINPROGRESS; i++) {
		struct resource res = {0};
		GPtrArray *some = provider_entries_new();
		got[i].m = members->pdata[i];
		r = list_one(got[i].m, path, may_fetch, &res, some);
		if (r == 0) {
			got[i].entries = some;
			any = true;
			listing->changed_at_us = MAX(listing->changed_at_us, res.changed_at_us);
			if (res.bytes)
				listing->fresh_for_s = MIN(listing->fresh_for_s, res.fresh_for_s);
		} else {
			g_ptr_array_unref(some);
			if (!first_error)
				first_error = r;
			/* Try again soon: its copies or its error stand until then. */
			listing->fresh_for_s = MIN(listing->fresh_for_s, 1);
		}
		resource_clear(&res);
	}
	if (r == -EINPROGRESS) {
		listings_free(got, members->len);
		return r;
	}

	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	uint64_t hash = FNV1A_64_OFFSET;
	g_mutex_lock(&a->lock);
	/* The accounts that answered claim their ids first, in name order; then those that
	 * did not keep the ids they last showed, where nobody else lists them now. */
	for (guint i = 0; i < members->len; i++) {
		if (!got[i].entries || got[i].m->retired)
			continue; /* retired: logged out while it was listing */
		GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
		for (guint k = 0; k < got[i].entries->len; k++) {
			struct provider_entry *e = got[i].entries->pdata[k];
			g_ptr_array_add(ids, g_strdup(e->name));
			claim(a, dir, e->name, e->type, got[i].m, seen, entries);
		}
		g_hash_table_replace(got[i].m->last, g_strdup(dir), ids);
	}
	for (guint i = 0; i < members->len; i++) {
		GPtrArray *ids = got[i].entries || got[i].m->retired
				     ? NULL
				     : g_hash_table_lookup(got[i].m->last, dir);
		for (guint k = 0; ids && k < ids->len; k++)
			claim(a, dir, ids->pdata[k], ENTRY_DIR, got[i].m, seen, entries);
	}
	forget_unlisted_locked(a, dir, seen);
	struct merged *x = g_hash_table_lookup(a->merged, dir);
	if (!x) {
		x = g_new0(struct merged, 1);
		x->ids = g_ptr_array_new_with_free_func(g_free);
		g_hash_table_insert(a->merged, g_strdup(dir), x);
	}
	g_ptr_array_set_size(x->ids, 0);
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = entries->pdata[i];
		hash = fnv1a_64(hash, e->name, strlen(e->name) + 1);
		g_ptr_array_add(x->ids, g_strdup(e->name));
	}
	if (!x->gen || x->hash != hash) {
		x->gen++;
		x->hash = hash;
	}
	listing->gen = x->gen;
	g_mutex_unlock(&a->lock);
	if (!any && entries->len == 0 && first_error)
		r = first_error; /* nothing to show: say why */
	else
		r = 0;
	if (!listing->changed_at_us)
		listing->changed_at_us = g_get_real_time();
	listings_free(got, members->len);
	return r;
}

void accounts_set_gauges(struct accounts *a, accounts_gauges_fn fn, void *data)
{
	a->gauges = fn;
	a->gauges_data = data;
}

/* status.json's "tree": the nodes the mount holds, their bytes, and the mtimes kept for
 * the next mount. */
static json_t *tree_json(struct accounts *a)
{
	struct accounts_gauges g = {0};

	if (a->gauges)
		a->gauges(a->gauges_data, &g);
	return json_pack("{s:I, s:I, s:I}", "nodes", (json_int_t)g.nodes, "bytes",
			 (json_int_t)g.bytes, "stamps", (json_int_t)g.stamps);
}

void accounts_render_status(struct accounts *a, GString *out)
{
	if (!a->all) {
		json_t *one = session_status_json(the_one(a));
		json_object_set_new(one, "tree", tree_json(a));
		provider_render_json(one, out);
		json_decref(one);
		return;
	}
	g_autoptr(GPtrArray) members = active_members(a);
	g_autofree char *since = iso_time_utc(a->started_at_s);
	json_t *root = json_object();
	json_t *accounts = json_object();

	for (guint i = 0; i < members->len; i++) {
		struct member *m = members->pdata[i];
		json_object_set_new(accounts, m->id, session_status_json(m->session));
	}
	json_object_set_new(root, "accounts", accounts);
	json_object_set_new(root, "tree", tree_json(a));
	/* Which account serves each id a directory of the root shows, and who lists it. */
	g_mutex_lock(&a->lock);
	GHashTableIter it;
	gpointer key, value;
	g_hash_table_iter_init(&it, a->merged);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		const struct merged *x = value;
		json_t *ids = json_object();
		for (guint i = 0; i < x->ids->len; i++) {
			const char *id = x->ids->pdata[i];
			g_autofree char *okey = g_strconcat(key, "/", id, NULL);
			struct member *owner = g_hash_table_lookup(a->owner, okey);
			json_t *listed_by = json_array();
			for (guint k = 0; k < members->len; k++) {
				struct member *m = members->pdata[k];
				GPtrArray *last = g_hash_table_lookup(m->last, key);
				if (last && contains_id(last, id))
					json_array_append_new(listed_by, json_string(m->id));
			}
			json_object_set_new(ids, id,
					    json_pack("{s:s?, s:o}", "account",
						      owner ? owner->id : NULL, "listed_by",
						      listed_by));
		}
		json_object_set_new(root, key, ids);
	}
	g_mutex_unlock(&a->lock);
	json_object_set_new(root, "mounted_since", since ? json_string(since) : json_null());
	json_object_set_new(root, "dumpable", json_boolean(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) > 0));
	provider_render_json(root, out);
	json_decref(root);
}

void accounts_render_metrics(struct accounts *a, GString *out)
{
	g_autoptr(GPtrArray) sessions = accounts_sessions(a);

	session_render_metrics((struct session *const *)sessions->pdata, sessions->len, out);
	struct accounts_gauges g = {0};
	if (a->gauges)
		a->gauges(a->gauges_data, &g);
	g_string_append_printf(out,
			       "# HELP smarthomefs_tree_nodes Files and directories the mount "
			       "holds in memory.\n# TYPE smarthomefs_tree_nodes gauge\n"
			       "smarthomefs_tree_nodes %zu\n"
			       "# HELP smarthomefs_tree_bytes Memory those files and directories "
			       "take.\n# TYPE smarthomefs_tree_bytes gauge\n"
			       "smarthomefs_tree_bytes %zu\n"
			       "# HELP smarthomefs_stamps Mtimes kept on disk for the next mount.\n"
			       "# TYPE smarthomefs_stamps gauge\nsmarthomefs_stamps %zu\n",
			       g.nodes, g.bytes, g.stamps);
}
