/* internal_files: .smarthomefs/status.json and metrics as snapshots. See the header. */
#include "internal_files.h"

#include <string.h>

#include "fnv.h"
#include "accounts.h"
#include "tree.h"

struct internal_files {
	struct accounts *accounts;
	GMutex lock;		  /* guards all of the below and each rendering's nlookup */
	GHashTable *renderings;	  /* FUSE node id -> struct rendering, the kernel's */
	GHashTable *latest;	  /* internal file inode -> its latest struct rendering */
	uint64_t renderings_made; /* the last generation given */
};

static void rendering_free(gpointer data)
{
	struct rendering *r = data;

	g_bytes_unref(r->bytes);
	g_free(r);
}

struct internal_files *internal_files_new(struct accounts *accounts)
{
	struct internal_files *f = g_new0(struct internal_files, 1);

	f->accounts = accounts;
	g_mutex_init(&f->lock);
	f->renderings = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, rendering_free);
	f->latest = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	return f;
}

void internal_files_free(struct internal_files *f)
{
	if (!f)
		return;
	g_hash_table_destroy(f->latest);
	g_hash_table_destroy(f->renderings);
	g_mutex_clear(&f->lock);
	g_free(f);
}

struct node *internal_files_add(struct tree *t)
{
	struct node *dir = tree_add_internal_dir(t, INTERNAL_DIR);

	tree_add_child(t, dir, INTERNAL_STATUS, false);
	tree_add_child(t, dir, INTERNAL_METRICS, false);
	return dir;
}

struct rendering *internal_files_lookup(struct internal_files *f, struct node *node)
{
	struct rendering *r = g_new0(struct rendering, 1);
	GString *out = g_string_new(NULL);
	gsize len = 0;

	if (strcmp(node->name, INTERNAL_STATUS) == 0)
		accounts_render_status(f->accounts, out);
	else
		accounts_render_metrics(f->accounts, out);
	r->bytes = g_string_free_to_bytes(out);
	r->node = node;
	const void *data = g_bytes_get_data(r->bytes, &len);
	r->hash = fnv1a_64(FNV1A_64_OFFSET, data, len);
	r->mtime_wall_us = g_get_real_time();
	g_mutex_lock(&f->lock);
	struct rendering *latest = g_hash_table_lookup(f->latest, &node->ino);
	if (latest && latest->hash == r->hash) {
		rendering_free(r);
		r = latest;
	} else {
		r->generation = ++f->renderings_made;
		g_hash_table_insert(f->renderings, r, r);
		g_hash_table_replace(f->latest, g_memdup2(&node->ino, sizeof(node->ino)), r);
	}
	r->nlookup++;
	g_mutex_unlock(&f->lock);
	return r;
}

struct rendering *internal_files_find(struct internal_files *f, uint64_t id)
{
	struct rendering *r;

	g_mutex_lock(&f->lock);
	r = g_hash_table_lookup(f->renderings, GSIZE_TO_POINTER((gsize)id));
	g_mutex_unlock(&f->lock);
	return r;
}

void internal_files_forget(struct internal_files *f, uint64_t id, uint64_t n)
{
	struct rendering *r;

	g_mutex_lock(&f->lock);
	r = g_hash_table_lookup(f->renderings, GSIZE_TO_POINTER((gsize)id));
	if (r && (r->nlookup -= MIN(n, r->nlookup)) == 0) {
		if (g_hash_table_lookup(f->latest, &r->node->ino) == r)
			g_hash_table_remove(f->latest, &r->node->ino);
		g_hash_table_remove(f->renderings, r);
	}
	g_mutex_unlock(&f->lock);
}
