/* tree: nodes, inode numbers and name escaping. See tree.h for the rules. */
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "fnv.h"
#include "tree.h"

/* A freed piece is poisoned under ASan, so that a node used after its section ended is
 * reported as malloc's blocks are. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define PIECE_POISON(p, size)	ASAN_POISON_MEMORY_REGION((p), (size))
#define PIECE_UNPOISON(p, size) ASAN_UNPOISON_MEMORY_REGION((p), (size))
#else
#define PIECE_POISON(p, size)	((void)(p), (void)(size))
#define PIECE_UNPOISON(p, size) ((void)(p), (void)(size))
#endif

#define ROOT_INO	    1
#define NAME_MAX_LEN	    255		/* NAME_MAX of Linux */
#define CUT_AT		    200		/* bytes of escaped name kept before "%~<hash>" */
#define SLAB_SHIFT	    16
#define SLAB_SIZE	    ((size_t)1 << SLAB_SHIFT) /* nodes are carved from blocks of this size */
#define SLAB_HEADER	    sizeof(struct slab_header)
#define PIECE_MAX	    (SLAB_SIZE / 4) /* larger pieces are blocks of their own */
#define PIECE_ALIGN	    _Alignof(struct node)
#define PIECE_BITS	    (SLAB_SHIFT - 3) /* a ref's low bits: the offset in its slab, in 8ths */
#define SLAB_MAX	    ((size_t)1 << (32 - PIECE_BITS)) /* slabs a ref can name: 32 GiB */
#define SLAB_ROW_BITS	    10 /* tree.slab keeps the slabs' addresses in rows of 1 << this */
#define MARK_TICK	    0x80	/* node.marks: tick is set (it outlives listings) */
#define INDEX_SHIFT	    6		/* the index starts with 1 << INDEX_SHIFT slots */

_Static_assert(PIECE_ALIGN == 8, "a node ref counts a slab's offset in eighths");

/* The first bytes of a slab. */
struct slab_header {
	uint32_t number; /* in tree.slab: what a ref names it by */
	uint32_t size;	 /* in SLAB_SIZE: 1 but for a large node's */
};

struct tree {
	GMutex lock; /* guards every node's (lock) fields and all of the below */
	/* Every linked node, by inode number: open addressing with linear probing, at most
	 * 13/16 full. A node ref a slot (0: free), where a GHashTable kept a hash and a
	 * key besides, and a second table by (parent, name). */
	uint32_t *index;
	unsigned index_shift; /* 1 << index_shift slots */
	size_t n_nodes;
	uint64_t hash_mask; /* the bits of a path hash an inode number keeps */
	struct node *root;
	/* Nodes and listing orders are carved from slabs (no malloc header and rounding per
	 * node); a freed piece waits in its size's list for the next one of that size, so
	 * the slabs weigh what the most nodes alive at once did. Slab number i is at
	 * slab[i >> SLAB_ROW_BITS][i & row mask]: a row is made when its first number is
	 * handed out and never moves, so that tree_parent needs no lock. A node too large
	 * for a slab's pieces has a slab of its own, whose number is reused once it is
	 * freed. */
	void **slab[SLAB_MAX >> SLAB_ROW_BITS];
	uint32_t n_slabs;	   /* slab numbers handed out: 0 .. n_slabs - 1 */
	size_t slab_bytes;	   /* mapped by the slabs there are */
	GArray *free_slab_numbers; /* of uint32_t: a large node's slab, unmapped */
	char *slab_now;		   /* the slab pieces are carved from */
	size_t slab_used;
	void *free_pieces[PIECE_MAX / PIECE_ALIGN + 1];
	/* Freeing waits until no thread may hold the node (tree_hold): nodes unlinked since
	 * the last flip wait in limbo_new, those before it in limbo_old, and a section counts
	 * in active[cur] (the old bucket, !cur, drains). */
	unsigned active[2];
	unsigned cur;
	GPtrArray *limbo_new;
	GPtrArray *limbo_old;
	/* Gone children the kernel still holds of a directory that became a file (no
	 * listing order keeps them any more). */
	GPtrArray *orphans;
};

/* The node @ref names, or NULL for 0. */
static struct node *node_at(const struct tree *t, uint32_t ref)
{
	if (!ref)
		return NULL;
	uint32_t number = ref >> PIECE_BITS;
	char *slab = t->slab[number >> SLAB_ROW_BITS][number & ((1u << SLAB_ROW_BITS) - 1)];

	return (struct node *)(slab + ((size_t)(ref & ((1u << PIECE_BITS) - 1)) << 3));
}

/* The ref of node @n (NULL: 0): its slab's number, read from the slab's start, and its
 * offset there. */
static uint32_t ref_of(const struct node *n)
{
	if (!n)
		return 0;
	uintptr_t base = (uintptr_t)n & ~(uintptr_t)(SLAB_SIZE - 1);
	const struct slab_header *h = (const struct slab_header *)base;
	return h->number << PIECE_BITS | (uint32_t)(((uintptr_t)n - base) >> 3);
}

/* @size bytes (a multiple of SLAB_SIZE), zeroed and aligned to SLAB_SIZE, numbered in
 * t->slab: a mapping of its own (malloc would round the alignment up in bytes it
 * touches). Caller holds the lock. */
static char *slab_new(struct tree *t, size_t size)
{
	uint32_t number;
	size_t span = size + SLAB_SIZE;
	char *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (map == MAP_FAILED)
		g_error("tree: no memory for %zu bytes of nodes", size);
	char *slab = (char *)(((uintptr_t)map + SLAB_SIZE - 1) & ~(uintptr_t)(SLAB_SIZE - 1));
	if (slab > map)
		munmap(map, (size_t)(slab - map));
	if (map + span > slab + size)
		munmap(slab + size, (size_t)(map + span - (slab + size)));
	if (t->free_slab_numbers->len) {
		number =
		    g_array_index(t->free_slab_numbers, uint32_t, t->free_slab_numbers->len - 1);
		g_array_set_size(t->free_slab_numbers, t->free_slab_numbers->len - 1);
	} else if (t->n_slabs < SLAB_MAX) {
		number = t->n_slabs++;
	} else {
		g_error("tree: more than %zu slabs of nodes", SLAB_MAX);
	}
	*(struct slab_header *)slab = (struct slab_header){number, (uint32_t)(size / SLAB_SIZE)};
	if (!t->slab[number >> SLAB_ROW_BITS])
		t->slab[number >> SLAB_ROW_BITS] = g_new0(void *, (size_t)1 << SLAB_ROW_BITS);
	t->slab[number >> SLAB_ROW_BITS][number & ((1u << SLAB_ROW_BITS) - 1)] = slab;
	t->slab_bytes += size;
	return slab;
}

/* Unmaps @slab; its number may be reused. Caller holds the lock. */
static void slab_free(struct tree *t, char *slab)
{
	const struct slab_header *h = (const struct slab_header *)slab;
	uint32_t number = h->number;

	t->slab[number >> SLAB_ROW_BITS][number & ((1u << SLAB_ROW_BITS) - 1)] = NULL;
	t->slab_bytes -= (size_t)h->size * SLAB_SIZE;
	g_array_append_val(t->free_slab_numbers, number);
	PIECE_UNPOISON(slab, (size_t)h->size * SLAB_SIZE); /* a later mapping may reuse it */
	munmap(slab, (size_t)h->size * SLAB_SIZE);
}

/* The bytes a piece of @size takes. */
static size_t piece_round(size_t size)
{
	return (size + PIECE_ALIGN - 1) & ~(PIECE_ALIGN - 1);
}

/* The bytes of the slab of its own that a node of @size bytes takes (size > PIECE_MAX). */
static size_t large_slab_size(size_t size)
{
	return (SLAB_HEADER + size + SLAB_SIZE - 1) & ~(SLAB_SIZE - 1);
}

/* @size bytes, zeroed, aligned for a struct node, given back by piece_free (or freed by
 * tree_free); caller holds the lock (or owns the tree alone). A piece over PIECE_MAX is
 * a block of its own: a slab for a node (@node: it needs a ref), else malloc's. */
static void *piece_alloc(struct tree *t, size_t size, bool node)
{
	void *p;

	size = piece_round(size);
	if (size > PIECE_MAX) /* a rare long id or listing */
		return node ? slab_new(t, large_slab_size(size)) + SLAB_HEADER : g_malloc0(size);
	if ((p = t->free_pieces[size / PIECE_ALIGN])) {
		PIECE_UNPOISON(p, size);
		t->free_pieces[size / PIECE_ALIGN] = *(void **)p;
		return memset(p, 0, size);
	}
	if (!t->slab_now || t->slab_used + size > SLAB_SIZE) {
		t->slab_now = slab_new(t, SLAB_SIZE);
		t->slab_used = SLAB_HEADER;
	}
	p = t->slab_now + t->slab_used;
	t->slab_used += size;
	return p;
}

/* Gives back piece @p of @size bytes (as it was asked of piece_alloc, with @node). */
static void piece_free(struct tree *t, void *p, size_t size, bool node)
{
	if (!p)
		return;
	size = piece_round(size);
	if (size > PIECE_MAX) {
		if (node)
			slab_free(t, (char *)p - SLAB_HEADER);
		else
			g_free(p);
		return;
	}
	*(void **)p = t->free_pieces[size / PIECE_ALIGN];
	t->free_pieces[size / PIECE_ALIGN] = p;
	PIECE_POISON(p, size);
}

struct node *tree_parent(struct tree *t, const struct node *node)
{
	return node_at(t, node->parent_ref);
}

struct node *tree_order_at(struct tree *t, const struct node *dir, uint32_t i)
{
	return node_at(t, dir->order[i]);
}

/* The bytes of @n's piece: the node and its names. */
static size_t node_size(const struct node *n)
{
	size_t size = offsetof(struct node, name) + strlen(n->name) + 1;

	if (n->raw_follows)
		size += strlen(n->name + strlen(n->name) + 1) + 1;
	return size;
}

/* One piece of a slab: the node, its escaped name, and its raw name only when it differs
 * (most ids need no escaping, so most nodes hold one copy). */
static struct node *node_new(struct tree *t, const char *name, const char *raw, bool is_dir)
{
	size_t name_size = strlen(name) + 1;
	bool same = strcmp(name, raw) == 0;
	size_t raw_size = same ? 0 : strlen(raw) + 1;
	struct node *n = piece_alloc(t, offsetof(struct node, name) + name_size + raw_size, true);

	memcpy(n->name, name, name_size);
	if (!same) {
		memcpy(n->name + name_size, raw, raw_size);
		n->raw_follows = true;
	}
	n->is_dir = is_dir;
	return n;
}

const char *tree_node_raw(const struct node *node)
{
	return node->raw_follows ? node->name + strlen(node->name) + 1 : node->name;
}

/* The index slot where the search for @ino starts: the top bits of a multiplicative
 * hash, so that the neighbouring numbers a collision gives land apart. */
static size_t index_start(const struct tree *t, uint64_t ino)
{
	return (size_t)((ino * 0x9e3779b97f4a7c15ULL) >> (64 - t->index_shift));
}

/* The node with inode @ino, or NULL; caller holds the lock. */
static struct node *index_find(const struct tree *t, uint64_t ino)
{
	size_t mask = ((size_t)1 << t->index_shift) - 1;

	for (size_t i = index_start(t, ino);; i = (i + 1) & mask) {
		struct node *n = node_at(t, t->index[i]);

		if (!n || n->ino == ino)
			return n;
	}
}

/* Puts @n in the first free slot from where its search starts. */
static void index_place(uint32_t *index, unsigned shift, const struct node *n)
{
	size_t mask = ((size_t)1 << shift) - 1;
	size_t i = (size_t)((n->ino * 0x9e3779b97f4a7c15ULL) >> (64 - shift));

	while (index[i])
		i = (i + 1) & mask;
	index[i] = ref_of(n);
}

/* Adds @n (whose inode number no other node has); caller holds the lock. */
static void index_add(struct tree *t, struct node *n)
{
	size_t slots = (size_t)1 << t->index_shift;

	if ((t->n_nodes + 1) * 16 > slots * 13) {
		uint32_t *bigger = g_new0(uint32_t, slots * 2);

		for (size_t i = 0; i < slots; i++)
			if (t->index[i])
				index_place(bigger, t->index_shift + 1, node_at(t, t->index[i]));
		g_free(t->index);
		t->index = bigger;
		t->index_shift++;
	}
	index_place(t->index, t->index_shift, n);
	t->n_nodes++;
}

/* Takes @n out of the index, moving back the nodes after it whose search would now stop
 * short of them (deletion under linear probing); caller holds the lock. */
static void index_remove(struct tree *t, struct node *n)
{
	size_t mask = ((size_t)1 << t->index_shift) - 1;
	size_t hole = index_start(t, n->ino);
	uint32_t ref = ref_of(n);

	while (t->index[hole] != ref)
		hole = (hole + 1) & mask;
	t->index[hole] = 0;
	for (size_t i = (hole + 1) & mask; t->index[i]; i = (i + 1) & mask) {
		size_t home = index_start(t, node_at(t, t->index[i])->ino);
		/* It stays when its home lies cyclically in (hole, i]. */
		bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
		if (stays)
			continue;
		t->index[hole] = t->index[i];
		t->index[i] = 0;
		hole = i;
	}
	t->n_nodes--;
}

struct tree *tree_new_hash_bits(unsigned bits)
{
	struct tree *t = g_new0(struct tree, 1);

	g_mutex_init(&t->lock);
	t->hash_mask = bits >= 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1;
	t->index_shift = INDEX_SHIFT;
	t->index = g_new0(uint32_t, (size_t)1 << INDEX_SHIFT);
	t->free_slab_numbers = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	t->limbo_new = g_ptr_array_new();
	t->limbo_old = g_ptr_array_new();
	t->orphans = g_ptr_array_new();
	t->root = node_new(t, "", "", true);
	t->root->ino = ROOT_INO;
	index_add(t, t->root);
	return t;
}

struct tree *tree_new(void)
{
	return tree_new_hash_bits(64);
}

/* Frees the pieces of @n (unlinked, or the tree ends): its order and itself. */
static void node_free(struct tree *t, struct node *n)
{
	if (n->is_dir)
		piece_free(t, n->order, n->n_order * sizeof(*n->order), false);
	piece_free(t, n, node_size(n), true);
}

static void limbo_free(struct tree *t, GPtrArray *limbo)
{
	for (guint i = 0; i < limbo->len; i++)
		node_free(t, limbo->pdata[i]);
	g_ptr_array_set_size(limbo, 0);
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < (size_t)1 << t->index_shift; i++)
		if (t->index[i])
			node_free(t, node_at(t, t->index[i]));
	limbo_free(t, t->limbo_old);
	limbo_free(t, t->limbo_new);
	g_ptr_array_free(t->limbo_old, TRUE);
	g_ptr_array_free(t->limbo_new, TRUE);
	g_ptr_array_free(t->orphans, TRUE);
	g_free(t->index);
	for (uint32_t i = 0; i < t->n_slabs; i++) {
		void *slab = t->slab[i >> SLAB_ROW_BITS][i & ((1u << SLAB_ROW_BITS) - 1)];
		if (slab)
			slab_free(t, slab);
	}
	for (size_t row = 0; row < G_N_ELEMENTS(t->slab); row++)
		g_free(t->slab[row]);
	g_array_free(t->free_slab_numbers, TRUE);
	g_mutex_clear(&t->lock);
	g_free(t);
}

void tree_lock(struct tree *t)
{
	g_mutex_lock(&t->lock);
}

void tree_unlock(struct tree *t)
{
	g_mutex_unlock(&t->lock);
}

/* Frees what waited long enough: the nodes unlinked before the last flip once no section
 * of that time is left, then flips if more wait. Caller holds the lock. */
static void reclaim(struct tree *t)
{
	for (;;) {
		unsigned old = !t->cur;
		if (t->active[old])
			return;
		limbo_free(t, t->limbo_old);
		if (!t->limbo_new->len)
			return;
		GPtrArray *swap = t->limbo_old;
		t->limbo_old = t->limbo_new;
		t->limbo_new = swap;
		t->cur = old;
	}
}

unsigned tree_hold(struct tree *t)
{
	tree_lock(t);
	unsigned bucket = t->cur;
	t->active[bucket]++;
	tree_unlock(t);
	return bucket;
}

void tree_release(struct tree *t, unsigned bucket)
{
	tree_lock(t);
	t->active[bucket]--;
	reclaim(t);
	tree_unlock(t);
}

struct node *tree_root(struct tree *t)
{
	return t->root;
}

struct node *tree_get(struct tree *t, uint64_t ino)
{
	struct node *n;

	tree_lock(t);
	n = index_find(t, ino);
	tree_unlock(t);
	return n;
}

/* 0 is no inode and 1 the root: fold both onto other numbers. */
static uint64_t ino_of_hash(uint64_t h)
{
	return h <= ROOT_INO ? h + 2 : h;
}

/* The number after @ino that a collision tries next. */
static uint64_t ino_next(uint64_t ino)
{
	do
		ino++;
	while (ino <= ROOT_INO);
	return ino;
}

/* The number before @ino in that order. */
static uint64_t ino_prev(uint64_t ino)
{
	do
		ino--;
	while (ino <= ROOT_INO);
	return ino;
}

uint64_t tree_path_ino(const char *path)
{
	return ino_of_hash(fnv1a_64(FNV1A_64_OFFSET, path, strlen(path)));
}

/* The FNV-1a state after @n's path ("" for the root, "/homes/1001" ...): a child's path
 * hash continues from it. */
static uint64_t path_hash(const struct tree *t, const struct node *n)
{
	uint64_t h;

	if (!n->parent_ref)
		return FNV1A_64_OFFSET;
	h = fnv1a_64(path_hash(t, node_at(t, n->parent_ref)), "/", 1);
	return fnv1a_64(h, n->name, strlen(n->name));
}

/* The child of @dir named @name (escaped), or NULL; @dir_hash is path_hash(@dir).
 * A child has the number its path hashes to, or the first free one after it when it was
 * made; a node is only unlinked when the number after it is free (can_unlink), so the
 * numbers it skipped are still taken, and the search for it ends at the first free
 * number, in *free_ino. Caller holds the lock. */
static struct node *child_find(struct tree *t, struct node *dir, uint64_t dir_hash,
			       const char *name, uint64_t *free_ino)
{
	uint64_t h = fnv1a_64(fnv1a_64(dir_hash, "/", 1), name, strlen(name));
	uint32_t dir_ref = ref_of(dir);

	for (uint64_t ino = ino_of_hash(h & t->hash_mask);; ino = ino_next(ino)) {
		struct node *n = index_find(t, ino);

		if (!n) {
			if (free_ino)
				*free_ino = ino;
			return NULL;
		}
		if (n->parent_ref == dir_ref && strcmp(n->name, name) == 0)
			return n;
	}
}

struct node *tree_child(struct tree *t, struct node *dir, const char *name)
{
	struct node *n = NULL;

	tree_lock(t);
	if (dir && dir->is_dir)
		n = child_find(t, dir, path_hash(t, dir), name, NULL);
	tree_unlock(t);
	return n;
}

/* Creates child @raw of @dir with inode @ino (free, from child_find) and indexes it;
 * caller holds the lock. */
static struct node *child_create(struct tree *t, struct node *dir, uint64_t ino, const char *name,
				 const char *raw, bool is_dir)
{
	struct node *n = node_new(t, name, raw, is_dir);

	n->parent_ref = ref_of(dir);
	n->internal = dir->internal;
	n->ino = ino;
	index_add(t, n);
	return n;
}

/* Whether some orphan (tree.orphans) is a child of @n. */
static bool has_orphans(struct tree *t, const struct node *n)
{
	uint32_t ref = ref_of(n);

	for (guint i = 0; i < t->orphans->len; i++)
		if (((struct node *)t->orphans->pdata[i])->parent_ref == ref)
			return true;
	return false;
}

/* Whether gone node @n may leave the tree now: the kernel holds no lookup of it, it has
 * no child left, and the number after its own is free (else a search for a collision
 * that took that number would stop at the hole). */
static bool can_unlink(struct tree *t, struct node *n)
{
	return n->gone && !n->nlookup && n != t->root && !n->internal &&
	       index_find(t, n->ino) == n &&
	       !(n->is_dir && n->n_order) && !has_orphans(t, n) &&
	       !index_find(t, ino_next(n->ino));
}

/* Takes @n (can_unlink) out of the index, to be freed when no thread may hold it; its
 * parent's order is the caller's to mend. */
static void unlink_node(struct tree *t, struct node *n)
{
	index_remove(t, n);
	g_ptr_array_remove_fast(t->orphans, n); /* a directory that was a file keeps none */
	g_ptr_array_add(t->limbo_new, n);
}

/* Sets @dir's listing order to the @len node refs of @refs (a new piece: the old one
 * goes). */
static void order_replace(struct tree *t, struct node *dir, const uint32_t *refs, uint32_t len)
{
	uint32_t *order = len ? piece_alloc(t, len * sizeof(*order), false) : NULL;

	if (len)
		memcpy(order, refs, len * sizeof(*order));
	piece_free(t, dir->order, dir->n_order * sizeof(*dir->order), false);
	dir->order = order;
	dir->n_order = len;
}

static void mark_gone(struct tree *t, struct node *n);

/* Marks every child of directory @dir gone (its listing no longer holds); those that may
 * leave the tree do, the others stay in its order (the kernel holds them). */
static void children_gone(struct tree *t, struct node *dir)
{
	uint32_t kept = 0;

	for (uint32_t i = 0; i < dir->n_order; i++) {
		struct node *c = node_at(t, dir->order[i]);
		mark_gone(t, c);
		if (can_unlink(t, c))
			unlink_node(t, c);
		else
			dir->order[kept++] = dir->order[i];
	}
	if (kept != dir->n_order)
		order_replace(t, dir, dir->order, kept);
}

/* @n left its listing (or its directory did): it and all below it are gone; a directory
 * is listed anew if it comes back. Caller holds the lock. */
static void mark_gone(struct tree *t, struct node *n)
{
	if (n->internal)
		return;
	n->gone = true;
	if (n->is_dir) {
		n->listed_gen = 0;
		n->marks &= MARK_TICK;
		children_gone(t, n);
	}
}

/* Makes @n the kind @is_dir (a resource may turn a file into a directory), with nothing
 * listed or rendered yet: a former directory's children are gone (a path's inode number
 * stays the same, should they come back); caller holds the lock. */
static void node_set_kind(struct tree *t, struct node *n, bool is_dir)
{
	if (n->is_dir) {
		children_gone(t, n);
		/* Those the kernel still holds wait as orphans. */
		for (uint32_t i = 0; i < n->n_order; i++)
			g_ptr_array_add(t->orphans, node_at(t, n->order[i]));
		order_replace(t, n, NULL, 0);
	}
	n->is_dir = is_dir;
	n->marks = 0;
	if (is_dir) {
		n->listed_gen = 0;
		n->order = NULL;
		n->n_order = 0;
	} else {
		n->memo = (struct file_memo){0};
	}
}

/* Gone node @n is listed again (an orphan no more). */
static void revive(struct tree *t, struct node *n)
{
	n->gone = false;
	g_ptr_array_remove_fast(t->orphans, n);
}

/* Appends @n to the listing order of @dir; caller holds the lock. */
static void order_append(struct tree *t, struct node *dir, struct node *n)
{
	uint32_t *order = piece_alloc(t, (dir->n_order + 1) * sizeof(*order), false);

	if (dir->n_order)
		memcpy(order, dir->order, dir->n_order * sizeof(*order));
	order[dir->n_order] = ref_of(n);
	piece_free(t, dir->order, dir->n_order * sizeof(*dir->order), false);
	dir->order = order;
	dir->n_order++;
}

/* Takes @n out of its parent's order (or the orphans: unlink_node), then frees upwards
 * what that lets go: the parent, if gone and now empty, and the node before @n's number,
 * if it waited for @n's. Caller holds the lock. */
static void unlink_up(struct tree *t, struct node *n)
{
	while (n && can_unlink(t, n)) {
		struct node *p = node_at(t, n->parent_ref);
		uint32_t ref = ref_of(n);
		for (uint32_t i = 0; p->is_dir && i < p->n_order; i++) {
			if (p->order[i] != ref)
				continue;
			memmove(p->order + i, p->order + i + 1,
				(p->n_order - i - 1) * sizeof(*p->order));
			order_replace(t, p, p->order, p->n_order - 1);
			break;
		}
		uint64_t ino = n->ino;
		unlink_node(t, n);
		struct node *before = index_find(t, ino_prev(ino));
		if (before && before != p)
			unlink_up(t, before);
		n = p;
	}
}

void tree_set_children(struct tree *t, struct node *dir, GPtrArray *entries, uint64_t gen)
{
	tree_set_children_gone(t, dir, entries, gen, NULL);
}

bool tree_set_children_gone(struct tree *t, struct node *dir, GPtrArray *entries, uint64_t gen,
			    GPtrArray *ret_gone)
{
	g_autoptr(GHashTable) seen = g_hash_table_new(g_direct_hash, g_direct_equal);
	g_autoptr(GPtrArray) order = NULL;
	uint64_t dir_hash;
	bool changed = false;

	tree_lock(t);
	/* What the last caller's gone nodes were is read by now (callers hold a section). */
	reclaim(t);
	if (!dir->is_dir) {
		tree_unlock(t);
		return false;
	}
	dir_hash = path_hash(t, dir);
	order = g_ptr_array_sized_new((entries ? entries->len : 0) + dir->n_order);
	for (guint i = 0; entries && i < entries->len; i++) {
		struct provider_entry *e = g_ptr_array_index(entries, i);
		g_autofree char *name = NULL;
		uint64_t free_ino;
		struct node *n;
		bool is_dir;

		if (!e || !e->name)
			continue;
		is_dir = e->type == ENTRY_DIR;
		name = tree_escape_name(e->name, strlen(e->name));
		n = child_find(t, dir, dir_hash, name, &free_ino);
		/* The session's own nodes are not the provider's to replace; and a second
		 * entry with the same name loses to the first. */
		if (n && (n->internal || g_hash_table_contains(seen, n)))
			continue;
		if (!n) {
			n = child_create(t, dir, free_ino, name, e->name, is_dir);
		} else if (n->is_dir != is_dir) {
			node_set_kind(t, n, is_dir);
			changed = true;
		}
		if (n->gone)
			revive(t, n);
		g_hash_table_add(seen, n);
		g_ptr_array_add(order, n);
	}
	guint listed = order->len;
	for (guint i = 0; i < dir->n_order; i++) {
		struct node *n = node_at(t, dir->order[i]);

		if (n->internal || g_hash_table_contains(seen, n)) {
			if (n->internal)
				g_ptr_array_add(order, n);
			continue;
		}
		if (!n->gone) {
			mark_gone(t, n);
			if (ret_gone)
				g_ptr_array_add(ret_gone, n);
		}
		if (can_unlink(t, n))
			unlink_node(t, n);
		else
			g_ptr_array_add(order, n); /* gone, but the kernel holds it */
	}
	/* The live children in listing order first, then the internal ones, then the gone
	 * ones the kernel holds: the same order as before unless a name came, went or moved. */
	for (guint i = listed, live = listed; i < order->len; i++) {
		struct node *n = order->pdata[i];
		if (!n->gone) {
			memmove(order->pdata + live + 1, order->pdata + live,
				(i - live) * sizeof(gpointer));
			order->pdata[live++] = n;
		}
	}
	g_autofree uint32_t *refs = g_new(uint32_t, order->len + 1);
	for (guint i = 0; i < order->len; i++)
		refs[i] = ref_of(order->pdata[i]);
	if (order->len != dir->n_order ||
	    (order->len && memcmp(dir->order, refs, order->len * sizeof(*refs)) != 0)) {
		order_replace(t, dir, refs, order->len);
		changed = true;
	}
	if (dir->listed_gen != gen)
		dir->marks &= MARK_TICK;
	dir->listed_gen = gen;
	tree_unlock(t);
	return changed;
}

/* tree_add_child, and a new child is internal (with all below it) when @internal. */
static struct node *add_child(struct tree *t, struct node *dir, const char *raw, bool is_dir,
			      bool internal)
{
	g_autofree char *name = tree_escape_name(raw, strlen(raw));
	uint64_t free_ino;
	struct node *n;

	tree_lock(t);
	if (!dir->is_dir) {
		tree_unlock(t);
		return NULL;
	}
	n = child_find(t, dir, path_hash(t, dir), name, &free_ino);
	if (!n) {
		n = child_create(t, dir, free_ino, name, raw, is_dir);
		n->internal = n->internal || internal;
		order_append(t, dir, n);
	} else if (n->gone) {
		/* Back at the end of the order (where the kernel's hold may have kept it). */
		uint32_t i = 0, ref = ref_of(n);
		while (i < dir->n_order && dir->order[i] != ref)
			i++;
		if (i < dir->n_order) {
			memmove(dir->order + i, dir->order + i + 1,
				(dir->n_order - i - 1) * sizeof(*dir->order));
			dir->order[dir->n_order - 1] = ref;
		} else {
			order_append(t, dir, n);
		}
		revive(t, n);
		if (n->is_dir != is_dir)
			node_set_kind(t, n, is_dir);
	}
	tree_unlock(t);
	return n;
}

struct node *tree_add_child(struct tree *t, struct node *dir, const char *raw, bool is_dir)
{
	return add_child(t, dir, raw, is_dir, false);
}

struct node *tree_add_internal_dir(struct tree *t, const char *raw)
{
	return add_child(t, t->root, raw, true, true);
}

bool tree_ref(struct tree *t, struct node *node)
{
	bool linked;

	tree_lock(t);
	linked = index_find(t, node->ino) == node;
	if (linked && node->nlookup < UINT32_MAX)
		node->nlookup++;
	tree_unlock(t);
	return linked;
}

void tree_forget(struct tree *t, uint64_t ino, uint64_t n)
{
	tree_lock(t);
	struct node *node = index_find(t, ino);
	/* A count that reached UINT32_MAX stays: such a node is never freed. */
	if (node && node->nlookup < UINT32_MAX) {
		node->nlookup -= (uint32_t)MIN(n, node->nlookup);
		if (!node->nlookup)
			unlink_up(t, node);
	}
	reclaim(t);
	tree_unlock(t);
}

/* tree_held_below, with the lock held. */
static void held_below(struct tree *t, struct node *n, GArray *out)
{
	if (n->is_dir)
		for (uint32_t i = 0; i < n->n_order; i++)
			held_below(t, node_at(t, n->order[i]), out);
	if (n->nlookup && n->gone && n->parent_ref) {
		struct tree_held h = {node_at(t, n->parent_ref)->ino, n->ino, g_strdup(n->name)};
		g_array_append_val(out, h);
	}
}

void tree_held_below(struct tree *t, struct node *node, GArray *out)
{
	tree_lock(t);
	held_below(t, node, out);
	tree_unlock(t);
}

size_t tree_memory_bytes(struct tree *t)
{
	tree_lock(t);
	size_t bytes = t->slab_bytes + ((size_t)sizeof(*t->index) << t->index_shift);
	tree_unlock(t);
	return bytes;
}

size_t tree_count(struct tree *t)
{
	tree_lock(t);
	size_t n = t->n_nodes;
	tree_unlock(t);
	return n;
}

void tree_for_each(struct tree *t, void (*fn)(struct node *n, void *data), void *data)
{
	tree_lock(t);
	for (size_t i = 0; i < (size_t)1 << t->index_shift; i++)
		if (t->index[i])
			fn(node_at(t, t->index[i]), data);
	tree_unlock(t);
}

bool tree_mark(struct tree *t, struct node *dir, unsigned mark, uint64_t gen)
{
	bool fresh = true;

	tree_lock(t);
	if (dir->is_dir && dir->listed_gen == gen && gen) {
		fresh = (dir->marks & mark) != mark;
		dir->marks |= (uint8_t)mark;
	}
	tree_unlock(t);
	return fresh;
}

void tree_tick_set(struct tree *t, struct node *dir, uint8_t now)
{
	tree_lock(t);
	dir->tick = now;
	dir->marks |= MARK_TICK;
	tree_unlock(t);
}

bool tree_tick_get(struct tree *t, struct node *dir, uint8_t *ret_tick)
{
	tree_lock(t);
	bool set = dir->marks & MARK_TICK;
	*ret_tick = dir->tick;
	tree_unlock(t);
	return set;
}

bool tree_node_is_dir(struct tree *t, struct node *node)
{
	bool is_dir;

	tree_lock(t);
	is_dir = node->is_dir;
	tree_unlock(t);
	return is_dir;
}

bool tree_node_gone(struct tree *t, struct node *node)
{
	bool gone;

	tree_lock(t);
	gone = node->gone;
	tree_unlock(t);
	return gone;
}

size_t tree_next_siblings(struct tree *t, struct node *node, struct node **out, size_t max)
{
	struct node *dir = node_at(t, node->parent_ref);
	uint32_t ref = ref_of(node);
	size_t n = 0;
	guint i = 0;

	tree_lock(t);
	if (dir && dir->is_dir) {
		while (i < dir->n_order && dir->order[i] != ref)
			i++;
		for (i++; i < dir->n_order && n < max; i++) {
			struct node *next = node_at(t, dir->order[i]);
			if (!next->gone)
				out[n++] = next;
		}
	}
	tree_unlock(t);
	return n;
}

GArray *tree_list(struct tree *t, struct node *dir)
{
	GArray *list = g_array_new(FALSE, TRUE, sizeof(struct tree_dirent));

	tree_lock(t);
	for (guint i = 0; dir->is_dir && i < dir->n_order; i++) {
		struct node *n = node_at(t, dir->order[i]);
		struct tree_dirent d = {.ino = n->ino, .is_dir = n->is_dir, .pos = i};

		if (n->gone)
			continue;
		d.name = g_strdup(n->name);
		g_array_append_val(list, d);
	}
	tree_unlock(t);
	return list;
}

size_t tree_list_window(struct tree *t, struct node *dir, size_t from, size_t max,
			struct tree_dirent *out)
{
	size_t n = 0, i = from;

	tree_lock(t);
	for (; dir->is_dir && i < dir->n_order && n < max; i++) {
		struct node *c = node_at(t, dir->order[i]);

		if (c->gone)
			continue;
		out[n++] = (struct tree_dirent){.ino = c->ino,
						.is_dir = c->is_dir,
						.pos = (uint32_t)i,
						.name = g_strdup(c->name)};
	}
	tree_unlock(t);
	return n;
}

void tree_dirents_free(GArray *entries)
{
	if (!entries)
		return;
	for (guint i = 0; i < entries->len; i++)
		g_free(g_array_index(entries, struct tree_dirent, i).name);
	g_array_free(entries, TRUE);
}

char **tree_raw_path(struct tree *t, struct node *node, size_t *n)
{
	size_t depth = 0;
	char **path;

	tree_lock(t);
	for (struct node *p = node; p && p->parent_ref; p = node_at(t, p->parent_ref))
		depth++;
	path = g_new0(char *, depth + 1);
	for (struct node *p = node; p && p->parent_ref; p = node_at(t, p->parent_ref))
		path[--depth] = g_strdup(tree_node_raw(p));
	tree_unlock(t);
	if (n)
		*n = g_strv_length(path);
	return path;
}

static bool must_escape(unsigned char c)
{
	return c == '/' || c == '%' || c < 0x20 || c == 0x7f;
}

/* How many bytes from @s (@left of them) are the UTF-8 of a character that must not
 * reach a file name whole, or 0: a C1 control (U+0080..U+009F, NEL among them), a line
 * or paragraph separator (U+2028, U+2029), or a bidi control (U+200E, U+200F,
 * U+202A..U+202E, U+2066..U+2069), which make a name print as another or break a
 * terminal's or log's line. */
static size_t unsafe_char_len(const unsigned char *s, size_t left)
{
	if (left >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
		return 2;
	if (left >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
	    (s[2] == 0x8e || s[2] == 0x8f || (s[2] >= 0xa8 && s[2] <= 0xae)))
		return 3;
	if (left >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)
		return 3;
	return 0;
}

char *tree_escape_name(const char *raw, size_t len)
{
	GString *out;
	bool dots = (len == 1 && raw[0] == '.') || (len == 2 && raw[0] == '.' && raw[1] == '.');
	size_t cut = 0;
	size_t unsafe_left = 0; /* bytes of an unsafe character still to escape */

	if (len == 0)
		return g_strdup("%");
	out = g_string_sized_new(len + 8);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)raw[i];

		/* Remember where the name may be cut: never inside a %XX or a UTF-8
		 * sequence (a continuation byte 10xxxxxx ends no character). */
		if (out->len <= CUT_AT && (c & 0xc0) != 0x80)
			cut = out->len;
		if (!unsafe_left)
			unsafe_left = unsafe_char_len((const unsigned char *)raw + i, len - i);
		if (dots || must_escape(c) || unsafe_left)
			g_string_append_printf(out, "%%%02X", c);
		else
			g_string_append_c(out, (char)c);
		if (unsafe_left)
			unsafe_left--;
	}
	if (out->len <= CUT_AT)
		cut = out->len;
	if (out->len > NAME_MAX_LEN) {
		g_autofree char *hash =
		    g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)raw, len);

		g_string_truncate(out, cut);
		g_string_append(out, "%~");
		g_string_append_len(out, hash, 16);
	}
	return g_string_free(out, FALSE);
}

char *tree_unescape_name(const char *name, size_t *len)
{
	g_autoptr(GString) raw = g_string_new(NULL);
	g_autofree char *again = NULL;

	if (strcmp(name, "%") == 0) {
		if (len)
			*len = 0;
		return g_strdup("");
	}
	for (const char *s = name; *s; s++) {
		if (*s != '%') {
			g_string_append_c(raw, *s);
			continue;
		}
		if (!g_ascii_isxdigit(s[1]) || !g_ascii_isxdigit(s[2]))
			return NULL; /* "%~": a cut name; anything else is no escape of ours */
		g_string_append_c(
		    raw, (char)(g_ascii_xdigit_value(s[1]) << 4 | g_ascii_xdigit_value(s[2])));
		s += 2;
	}
	/* Only the one spelling tree_escape_name makes ("%2F", never "%2f" or "%41"),
	 * so that two names never reach the same id. */
	again = tree_escape_name(raw->str, raw->len);
	if (strcmp(again, name) != 0)
		return NULL;
	if (len)
		*len = raw->len;
	return g_string_free(g_steal_pointer(&raw), FALSE);
}
