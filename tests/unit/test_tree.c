/* The node tree: inode numbers, names, listings. */
#include <glib.h>
#include <malloc.h>
#include <string.h>

#include "tree.h"

static GPtrArray *entries_of(const char *const *names) {
  GPtrArray *entries = provider_entries_new();

  for (; *names; names++)
    g_ptr_array_add(entries, provider_entry_new(*names, ENTRY_DIR));
  return entries;
}

static void set_children(struct tree *t, struct node *dir,
                         const char *const *names, uint64_t gen) {
  g_autoptr(GPtrArray) entries = entries_of(names);

  tree_set_children(t, dir, entries, gen);
}

/* The names tree_list shows, joined by " ". */
static char *listing(struct tree *t, struct node *dir) {
  GArray *list = tree_list(t, dir);
  GString *out = g_string_new(NULL);

  for (guint i = 0; i < list->len; i++)
    g_string_append_printf(out, "%s%s", i ? " " : "",
                           g_array_index(list, struct tree_dirent, i).name);
  tree_dirents_free(list);
  return g_string_free(out, FALSE);
}

static void test_root_is_inode_one_and_unnamed(void) {
  struct tree *t = tree_new();
  struct node *root = tree_root(t);

  g_assert_cmpuint(root->ino, ==, 1);
  g_assert_cmpstr(root->name, ==, "");
  g_assert_true(root->is_dir);
  g_assert_true(tree_get(t, 1) == root);
  g_assert_null(tree_get(t, 0));
  tree_free(t);
}

static void test_inode_numbers_are_stable_across_trees(void) {
  static const char *const homes[] = {"1001", "1002", NULL};
  struct tree *a = tree_new();
  struct tree *b = tree_new();
  struct node *ha = tree_add_child(a, tree_root(a), "homes", true);
  struct node *hb = tree_add_child(b, tree_root(b), "homes", true);

  set_children(a, ha, homes, 1);
  set_children(b, hb, homes, 7);
  g_assert_cmpuint(ha->ino, ==, tree_path_ino("/homes"));
  g_assert_cmpuint(ha->ino, ==, hb->ino);
  g_assert_cmpuint(tree_child(a, ha, "1001")->ino, ==,
                   tree_child(b, hb, "1001")->ino);
  g_assert_cmpuint(tree_child(a, ha, "1001")->ino, ==,
                   tree_path_ino("/homes/1001"));
  g_assert_cmpuint(tree_child(a, ha, "1001")->ino, !=,
                   tree_child(a, ha, "1002")->ino);
  g_assert_true(tree_get(a, tree_child(a, ha, "1002")->ino) ==
                tree_child(a, ha, "1002"));
  tree_free(a);
  tree_free(b);
}

static void test_inode_numbers_are_never_zero_or_one(void) {
  g_assert_cmpuint(tree_path_ino(""), >, 1);
  for (int i = 0; i < 10000; i++) {
    g_autofree char *path = g_strdup_printf("/homes/%d", i);

    g_assert_cmpuint(tree_path_ino(path), >, 1);
  }
}

static void test_many_nodes_get_distinct_inodes(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash, g_int64_equal);
  g_autoptr(GPtrArray) entries = provider_entries_new();

  for (int i = 0; i < 5000; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);

    g_ptr_array_add(entries, provider_entry_new(name, ENTRY_FILE));
  }
  tree_set_children(t, dir, entries, 1);
  for (int i = 0; i < 5000; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);
    struct node *n = tree_child(t, dir, name);

    g_assert_nonnull(n);
    g_assert_false(n->is_dir);
    g_assert_false(g_hash_table_contains(seen, &n->ino));
    g_hash_table_add(seen, &n->ino);
  }
  tree_free(t);
}

static void test_listing_keeps_the_providers_order_first_duplicate_wins(void) {
  static const char *const names[] = {"b", "a", "c", "a", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  g_autofree char *list = NULL;

  set_children(t, dir, names, 3);
  list = listing(t, dir);
  g_assert_cmpstr(list, ==, "b a c");
  g_assert_cmpuint(dir->listed_gen, ==, 3);
  tree_free(t);
}

/* Listing the same children again, adding one, listing fewer, listing them
 * again: each listing shows exactly what was last set or added. */
static void test_listings_follow_each_change(void) {
  static const char *const ab[] = {"a", "b", NULL};
  static const char *const ba[] = {"b", "a", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  struct node *c;
  const char *expected[] = {"a b", "a b", "a b c", "a b", "a b c", "b a", ""};
  char *got[G_N_ELEMENTS(expected)];

  set_children(t, dir, ab, 1);
  got[0] = listing(t, dir);
  set_children(t, dir, ab, 2);
  got[1] = listing(t, dir);
  c = tree_add_child(t, dir, "c", false);
  uint64_t c_ino = c->ino;
  got[2] = listing(t, dir);
  set_children(t, dir, ab, 3);
  got[3] = listing(t, dir);
  /* No kernel holds it: it left the tree, and comes back with its number. */
  g_assert_null(tree_child(t, dir, "c"));
  g_assert_cmpuint(tree_add_child(t, dir, "c", false)->ino, ==, c_ino);
  got[4] = listing(t, dir);
  set_children(t, dir, ba, 4);
  got[5] = listing(t, dir);
  set_children(t, dir, (const char *const[]){NULL}, 5);
  got[6] = listing(t, dir);
  for (guint i = 0; i < G_N_ELEMENTS(expected); i++) {
    g_assert_cmpstr(got[i], ==, expected[i]);
    g_free(got[i]);
  }
  g_assert_cmpuint(dir->listed_gen, ==, 5);
  tree_free(t);
}

static void
test_missing_children_are_gone_and_come_back_with_their_inode(void) {
  static const char *const both[] = {"1", "2", NULL};
  static const char *const one[] = {"2", NULL};
  static const char *const again[] = {"1", "2", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "zones", true);
  struct node *first;
  uint64_t ino;
  g_autofree char *l1 = NULL;
  g_autofree char *l2 = NULL;

  set_children(t, dir, both, 1);
  first = tree_child(t, dir, "1");
  ino = first->ino;
  g_assert_true(tree_ref(t, first)); /* the kernel looked it up */
  set_children(t, dir, one, 2);
  l1 = listing(t, dir);
  g_assert_cmpstr(l1, ==, "2");
  g_assert_true(tree_child(t, dir, "1") == first);
  g_assert_true(first->gone);
  g_assert_true(tree_get(t, ino) == first);

  set_children(t, dir, again, 3);
  l2 = listing(t, dir);
  g_assert_cmpstr(l2, ==, "1 2");
  g_assert_false(first->gone);
  g_assert_true(tree_child(t, dir, "1") == first);
  g_assert_cmpuint(first->ino, ==, ino);
  tree_free(t);
}

static void test_internal_nodes_survive_a_provider_listing(void) {
  static const char *const names[] = {"homes", ".smarthomefs", NULL};
  struct tree *t = tree_new();
  struct node *root = tree_root(t);
  struct node *internal = tree_add_internal_dir(t, ".smarthomefs");
  struct node *status = tree_add_child(t, internal, "status.json", false);
  g_autofree char *list = NULL;

  set_children(t, root, names, 1);
  list = listing(t, root);
  g_assert_cmpstr(list, ==, "homes .smarthomefs");
  g_assert_true(internal->internal);
  g_assert_true(status->internal);
  g_assert_false(status->is_dir);
  g_assert_false(tree_child(t, root, "homes")->internal);
  g_assert_true(tree_child(t, root, ".smarthomefs") == internal);
  g_assert_true(tree_add_child(t, internal, "status.json", false) == status);
  tree_free(t);
}

static void test_raw_path_gives_the_provider_its_ids(void) {
  struct tree *t = tree_new();
  struct node *homes = tree_add_child(t, tree_root(t), "homes", true);
  struct node *h = tree_add_child(t, homes, "a/b", true);
  struct node *f = tree_add_child(t, h, "..", false);
  size_t n = 0;
  g_auto(GStrv) path = tree_raw_path(t, f, &n);
  g_auto(GStrv) root = tree_raw_path(t, tree_root(t), &n);

  g_assert_cmpstr(h->name, ==, "a%2Fb");
  g_assert_cmpstr(f->name, ==, "%2E%2E");
  g_assert_cmpuint(g_strv_length(path), ==, 3);
  g_assert_cmpstr(path[0], ==, "homes");
  g_assert_cmpstr(path[1], ==, "a/b");
  g_assert_cmpstr(path[2], ==, "..");
  g_assert_cmpuint(n, ==, 0);
  g_assert_null(root[0]);
  g_assert_cmpuint(f->ino, ==, tree_path_ino("/homes/a%2Fb/%2E%2E"));
  tree_free(t);
}

static void assert_escape(const char *raw, size_t len, const char *expected) {
  g_autofree char *name = tree_escape_name(raw, len);
  g_autofree char *back = NULL;
  size_t back_len = 99;

  g_assert_cmpstr(name, ==, expected);
  back = tree_unescape_name(name, &back_len);
  g_assert_nonnull(back);
  g_assert_cmpmem(back, back_len, raw, len);
}

static void test_unsafe_names_are_escaped_reversibly(void) {
  assert_escape("1001", 4, "1001");
  assert_escape("", 0, "%");
  assert_escape(".", 1, "%2E");
  assert_escape("..", 2, "%2E%2E");
  assert_escape("...", 3, "...");
  assert_escape(".hidden", 7, ".hidden");
  assert_escape("a/b", 3, "a%2Fb");
  assert_escape("100%", 4, "100%25");
  assert_escape("%2F", 3, "%252F");
  assert_escape("tab\there", 8, "tab%09here");
  assert_escape("nl\n\x7f", 4, "nl%0A%7F");
  assert_escape("a\0b", 3, "a%00b");
  assert_escape("storage.stateOfCharge", 21, "storage.stateOfCharge");
  assert_escape("tado\xc2\xb0 \xe2\x82\xac", 10, "tado\xc2\xb0 \xe2\x82\xac");
  assert_escape("bad\xff\xfeutf8", 9, "bad\xff\xfeutf8");
  assert_escape("dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw", 38,
                "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw");
}

/* Bidi controls, C1 controls (NEL) and line separators never reach a file name: a
 * listing must not print as another name or break a line. */
static void test_bidi_and_c1_controls_are_escaped(void) {
  assert_escape("evil\xe2\x80\xaetxt.exe", 14, "evil%E2%80%AEtxt.exe"); /* U+202E */
  assert_escape("\xe2\x80\xaa\xe2\x80\xab\xe2\x80\xac\xe2\x80\xad", 12,
                "%E2%80%AA%E2%80%AB%E2%80%AC%E2%80%AD");
  assert_escape("a\xe2\x81\xa6" "b\xe2\x81\xa9", 8, "a%E2%81%A6b%E2%81%A9");
  assert_escape("\xe2\x80\x8e\xe2\x80\x8f", 6, "%E2%80%8E%E2%80%8F");
  assert_escape("line\xc2\x85next", 10, "line%C2%85next");  /* NEL */
  assert_escape("csi\xc2\x9b", 5, "csi%C2%9B");
  assert_escape("p\xe2\x80\xa8q\xe2\x80\xa9", 8, "p%E2%80%A8q%E2%80%A9");
  /* Their neighbours stay: an en dash, a dagger, U+2065, U+206A, a non-breaking space. */
  assert_escape("\xe2\x80\x93\xe2\x80\xa0", 6, "\xe2\x80\x93\xe2\x80\xa0");
  assert_escape("\xe2\x81\xa5\xe2\x81\xaa\xc2\xa0", 8, "\xe2\x81\xa5\xe2\x81\xaa\xc2\xa0");
  /* A lone lead byte at the end is no character. */
  assert_escape("x\xe2\x80", 3, "x\xe2\x80");
}

static void test_only_our_own_escapes_unescape(void) {
  size_t len;

  g_assert_null(tree_unescape_name("a%2fb", &len)); /* lower case is not ours */
  g_assert_null(tree_unescape_name("%41", &len));   /* 'A' needs no escape */
  g_assert_null(tree_unescape_name("a%", &len));
  g_assert_null(tree_unescape_name("a%4", &len));
  g_assert_null(tree_unescape_name("%%", &len));
  g_assert_null(tree_unescape_name(".", &len));
  g_assert_null(tree_unescape_name("%2E.", &len));
}

static void test_long_names_are_cut_with_a_hash_of_the_whole_id(void) {
  g_autofree char *raw = g_strnfill(300, 'x');
  g_autofree char *other = g_strnfill(300, 'x');
  g_autofree char *name = NULL;
  g_autofree char *name2 = NULL;
  g_autofree char *exact = g_strnfill(255, 'y');
  g_autofree char *exact_name = tree_escape_name(exact, 255);
  size_t len;

  other[299] = 'y';
  name = tree_escape_name(raw, 300);
  name2 = tree_escape_name(other, 300);
  g_assert_cmpuint(strlen(name), <=, 255);
  g_assert_cmpuint(strlen(name), ==, 200 + 2 + 16);
  g_assert_nonnull(strstr(name, "%~"));
  g_assert_cmpstr(name, !=, name2);
  g_assert_null(tree_unescape_name(name, &len));
  g_assert_cmpstr(exact_name, ==, exact);
}

static void test_long_names_are_cut_between_characters(void) {
  /* 100 two-byte characters and 100 escapes: no cut may split either. */
  GString *raw = g_string_new(NULL);
  g_autofree char *name = NULL;
  char *mark;

  for (int i = 0; i < 67; i++)
    g_string_append(raw, "\xc3\xa9");
  g_string_append_c(raw, 'z');
  for (int i = 0; i < 100; i++)
    g_string_append_c(raw, '/');
  name = tree_escape_name(raw->str, raw->len);
  g_assert_cmpuint(strlen(name), <=, 255);
  mark = strstr(name, "%~");
  g_assert_nonnull(mark);
  *mark = '\0';
  g_assert_true(g_utf8_validate(name, -1, NULL));
  /* What is left before the mark is whole %XX triples. */
  g_assert_true(g_str_has_suffix(name, "%2F"));
  g_assert_cmpuint((strlen(name) - 135) % 3, ==, 0);

  /* An odd start puts a two-byte character across byte 200. */
  g_string_assign(raw, "z");
  for (int i = 0; i < 150; i++)
    g_string_append(raw, "\xc3\xa9");
  g_free(name);
  name = tree_escape_name(raw->str, raw->len);
  mark = strstr(name, "%~");
  g_assert_nonnull(mark);
  g_assert_cmpint(mark - name, ==, 199);
  *mark = '\0';
  g_assert_true(g_utf8_validate(name, -1, NULL));
  g_string_free(raw, TRUE);
}

static void test_lookup_finds_escaped_names(void) {
  static const char *const names[] = {"a/b", "", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  g_autofree char *list = NULL;

  set_children(t, dir, names, 1);
  list = listing(t, dir);
  g_assert_cmpstr(list, ==, "a%2Fb %");
  g_assert_cmpstr(tree_node_raw(tree_child(t, dir, "a%2Fb")), ==, "a/b");
  g_assert_cmpstr(tree_node_raw(tree_child(t, dir, "%")), ==, "");
  g_assert_null(tree_child(t, dir, "a/b"));
  tree_free(t);
}

static void test_a_file_can_become_a_directory(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "values", true);
  g_autoptr(GPtrArray) files = provider_entries_new();
  g_autoptr(GPtrArray) dirs = provider_entries_new();
  g_autofree char *list = NULL;
  struct node *n;

  g_ptr_array_add(files, provider_entry_new("x", ENTRY_FILE));
  g_ptr_array_add(dirs, provider_entry_new("x", ENTRY_DIR));
  tree_set_children(t, dir, files, 1);
  n = tree_child(t, dir, "x");
  g_assert_false(n->is_dir);
  tree_set_children(t, dir, dirs, 2);
  g_assert_true(tree_child(t, dir, "x") == n);
  g_assert_true(n->is_dir);
  tree_add_child(t, n, "y", false);
  list = listing(t, n);
  g_assert_cmpstr(list, ==, "y");
  tree_free(t);
}

/* A directory that becomes a file lists nothing and its children are gone (freed,
 * as no kernel holds them); when it is a directory again, they come back with their
 * inode numbers. Each time,
 * the node starts with nothing listed or rendered. */
static void
test_a_directory_turned_file_and_back_keeps_its_childrens_inodes(void) {
  struct tree *t = tree_new();
  struct node *values = tree_add_child(t, tree_root(t), "values", true);
  g_autoptr(GPtrArray) as_dir = provider_entries_new();
  g_autoptr(GPtrArray) as_file = provider_entries_new();
  struct node *x, *y;
  uint64_t y_ino;
  g_autofree char *l1 = NULL;
  g_autofree char *l2 = NULL;

  g_ptr_array_add(as_dir, provider_entry_new("x", ENTRY_DIR));
  g_ptr_array_add(as_file, provider_entry_new("x", ENTRY_FILE));
  tree_set_children(t, values, as_dir, 1);
  x = tree_child(t, values, "x");
  y = tree_add_child(t, x, "y", false);
  y_ino = y->ino;
  set_children(t, x, (const char *const[]){"y", NULL}, 5);
  g_assert_cmpuint(x->listed_gen, ==, 5);

  tree_set_children(t, values, as_file, 2);
  g_assert_true(tree_child(t, values, "x") == x);
  g_assert_false(x->is_dir);
  g_assert_cmpuint(x->memo.gen, ==, 0);
  g_assert_null(tree_child(t, x, "y"));
  g_assert_null(tree_add_child(t, x, "z", false));
  l1 = listing(t, x);
  g_assert_cmpstr(l1, ==, "");
  x->memo.gen = 9; /* as fs_core's memo does */
  x->memo.size = 1234;

  tree_set_children(t, values, as_dir, 3);
  g_assert_true(x->is_dir);
  g_assert_cmpuint(x->listed_gen, ==, 0);
  set_children(t, x, (const char *const[]){"y", NULL}, 6);
  l2 = listing(t, x);
  g_assert_cmpstr(l2, ==, "y");
  y = tree_child(t, x, "y");
  g_assert_false(y->gone);
  g_assert_cmpuint(y->ino, ==, y_ino);
  tree_free(t);
}

static void test_the_same_name_in_two_directories_is_two_nodes(void) {
  static const char *const homes[] = {"a", "b", NULL};
  static const char *const values[] = {"x", "y", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  struct node *a, *b, *ax, *bx;

  set_children(t, dir, homes, 1);
  a = tree_child(t, dir, "a");
  b = tree_child(t, dir, "b");
  set_children(t, a, values, 1);
  g_assert_null(tree_child(t, b, "x"));
  set_children(t, b, values + 1, 1);
  g_assert_null(tree_child(t, b, "x"));
  set_children(t, b, values, 2);
  ax = tree_child(t, a, "x");
  bx = tree_child(t, b, "x");
  g_assert_nonnull(ax);
  g_assert_nonnull(bx);
  g_assert_true(ax != bx);
  g_assert_true(tree_parent(t, ax) == a && tree_parent(t, bx) == b);
  g_assert_true(tree_get(t, bx->ino) == bx);
  g_assert_null(tree_child(t, dir, "x"));
  g_assert_null(tree_child(t, tree_root(t), "a"));
  tree_free(t);
}

static void test_a_file_has_no_children(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  struct node *file = tree_add_child(t, dir, "status.json", false);
  g_autoptr(GPtrArray) entries = entries_of((const char *const[]){"x", NULL});
  g_autofree char *list = NULL;

  g_assert_null(tree_add_child(t, file, "x", false));
  tree_set_children(t, file, entries, 1);
  g_assert_null(tree_child(t, file, "x"));
  list = listing(t, file);
  g_assert_cmpstr(list, ==, "");
  tree_free(t);
}

/* Memory: most ids need no escaping, and their node keeps one copy of the name.
 */
static void test_raw_shares_the_name_when_they_are_equal(void) {
  static const char *const names[] = {"1001", "a/b", NULL};
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  struct node *plain, *escaped;

  set_children(t, dir, names, 1);
  plain = tree_child(t, dir, "1001");
  escaped = tree_child(t, dir, "a%2Fb");
  g_assert_true(tree_node_raw(plain) == plain->name);
  g_assert_cmpstr(escaped->name, ==, "a%2Fb");
  g_assert_cmpstr(tree_node_raw(escaped), ==, "a/b");
  tree_free(t);
}

/* An id far longer than a name: the node keeps all of it for the provider, and
 * the nodes made before and after it keep theirs. */
static void test_a_very_long_id_is_kept_whole(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  g_autofree char *id = g_strnfill(100000, '/');
  g_autoptr(GPtrArray) entries = provider_entries_new();
  struct node *before, *cut, *after;
  g_auto(GStrv) path = NULL;
  GArray *list;
  size_t n;

  g_ptr_array_add(entries, provider_entry_new("before", ENTRY_FILE));
  g_ptr_array_add(entries, provider_entry_new(id, ENTRY_FILE));
  g_ptr_array_add(entries, provider_entry_new("after", ENTRY_FILE));
  tree_set_children(t, dir, entries, 1);
  before = tree_child(t, dir, "before");
  after = tree_child(t, dir, "after");
  list = tree_list(t, dir);
  g_assert_cmpuint(list->len, ==, 3);
  cut = tree_get(t, g_array_index(list, struct tree_dirent, 1).ino);
  tree_dirents_free(list);
  g_assert_cmpuint(strlen(cut->name), <=, 255);
  g_assert_cmpstr(tree_node_raw(cut), ==, id);
  path = tree_raw_path(t, cut, &n);
  g_assert_cmpuint(n, ==, 2);
  g_assert_cmpstr(path[1], ==, id);
  g_assert_cmpstr(before->name, ==, "before");
  g_assert_cmpstr(after->name, ==, "after");
  g_assert_true(tree_parent(t, after) == dir && tree_parent(t, before) == dir);
  tree_free(t);
}

static GPtrArray *numbered_entries(int from, int to, enum entry_type type) {
  GPtrArray *entries = provider_entries_new();

  for (int i = from; i < to; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);

    g_ptr_array_add(entries, provider_entry_new(name, type));
  }
  return entries;
}

/* With 4 bits of hash, 200 names share 16 numbers: each collision takes the
 * next free number, every node keeps its own, and lookups still find each one.
 */
static void test_colliding_paths_get_distinct_inodes_and_are_found(void) {
  struct tree *t = tree_new_hash_bits(4);
  struct node *dir = tree_add_child(t, tree_root(t), "homes", true);
  g_autoptr(GPtrArray) entries = numbered_entries(0, 200, ENTRY_FILE);
  g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash, g_int64_equal);

  g_assert_cmpuint(dir->ino, <, 16 + 2);
  tree_set_children(t, dir, entries, 1);
  for (int i = 0; i < 200; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);
    struct node *n = tree_child(t, dir, name);

    g_assert_nonnull(n);
    g_assert_cmpstr(n->name, ==, name);
    g_assert_cmpuint(n->ino, >, 1);
    g_assert_false(g_hash_table_contains(seen, &n->ino));
    g_hash_table_add(seen, &n->ino);
    g_assert_true(tree_get(t, n->ino) == n);
  }
  g_assert_null(tree_child(t, dir, "200"));
  g_assert_null(tree_child(t, tree_root(t), "7"));
  tree_free(t);
}

/* Under collisions too: a gone node keeps its number, comes back with it, and a
 * new name made meanwhile takes another; the same listings in the same order
 * give the same numbers in another tree (a remount). */
static void test_colliding_paths_keep_their_inodes_when_gone_and_back(void) {
  struct tree *a = tree_new_hash_bits(4);
  struct tree *b = tree_new_hash_bits(4);
  struct node *da = tree_add_child(a, tree_root(a), "zones", true);
  struct node *db = tree_add_child(b, tree_root(b), "zones", true);
  g_autoptr(GPtrArray) all = numbered_entries(0, 50, ENTRY_DIR);
  g_autoptr(GPtrArray) half = numbered_entries(25, 50, ENTRY_DIR);
  g_autoptr(GPtrArray) more = numbered_entries(0, 80, ENTRY_DIR);
  uint64_t ino[80];
  g_autofree char *list = NULL;

  tree_set_children(a, da, all, 1);
  tree_set_children(b, db, all, 1);
  for (int i = 0; i < 50; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);

    ino[i] = tree_child(a, da, name)->ino;
    g_assert_cmpuint(tree_child(b, db, name)->ino, ==, ino[i]);
  }
  tree_set_children(a, da, half, 2);
  g_assert_true(tree_child(a, da, "3")->gone);
  tree_set_children(a, da, more, 3);
  tree_set_children(b, db, more, 3);
  for (int i = 0; i < 80; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);
    struct node *n = tree_child(a, da, name);

    g_assert_false(n->gone);
    if (i < 50)
      g_assert_cmpuint(n->ino, ==, ino[i]);
    for (int j = 0; j < 50 && i >= 50; j++)
      g_assert_cmpuint(n->ino, !=, ino[j]);
    g_assert_cmpuint(tree_child(b, db, name)->ino, ==, n->ino);
  }
  list = listing(a, da);
  g_assert_true(g_str_has_prefix(list, "0 1 2 3 4 "));
  g_assert_true(g_str_has_suffix(list, " 78 79"));
  tree_free(a);
  tree_free(b);
}

/* Under collisions, a name in one directory is never found in another, and a
 * child keeps its own internal mark. */
static void test_colliding_paths_in_two_directories_stay_apart(void) {
  struct tree *t = tree_new_hash_bits(3);
  struct node *root = tree_root(t);
  struct node *homes = tree_add_child(t, root, "homes", true);
  struct node *internal = tree_add_internal_dir(t, ".smarthomefs");
  g_autoptr(GPtrArray) entries = numbered_entries(0, 20, ENTRY_FILE);

  tree_set_children(t, homes, entries, 1);
  for (int i = 0; i < 20; i += 2) {
    g_autofree char *name = g_strdup_printf("%d", i);

    tree_add_child(t, internal, name, false);
  }
  for (int i = 0; i < 20; i++) {
    g_autofree char *name = g_strdup_printf("%d", i);
    struct node *h = tree_child(t, homes, name);
    struct node *s = tree_child(t, internal, name);

    g_assert_true(tree_parent(t, h) == homes);
    g_assert_false(h->internal);
    if (i % 2) {
      g_assert_null(s);
      continue;
    }
    g_assert_true(tree_parent(t, s) == internal);
    g_assert_true(s->internal);
    g_assert_cmpuint(s->ino, !=, h->ino);
  }
  tree_free(t);
}

/* Bytes the heap holds, small blocks and mmapped ones alike. */
static size_t heap_bytes(void) {
  struct mallinfo2 mi = mallinfo2();

  return mi.uordblks + mi.hblkhd;
}

/* Memory: the tree of 10 000 cached Tibber devices (10 homes of 1 000, each
 * device a directory with device.json, values/ and 4 values), built as the
 * filesystem builds it. Prints the heap bytes a node costs (`test_tree
 * --verbose`); asserts only that the tree holds them all, as malloc differs
 * between builds (a sanitizer's is not glibc's). */
static void test_memory_per_node_of_10000_devices(void) {
  static const char *const values[] = {"storage.stateOfCharge",
                                       "range.remaining", "connector.status",
                                       "charging.status", NULL};
  size_t before = heap_bytes();
  struct tree *t = tree_new();
  struct node *homes = tree_add_child(t, tree_root(t), "homes", true);
  g_autoptr(GPtrArray) home_ids = provider_entries_new();
  size_t nodes = 2; /* the root and homes */
  struct node *last = NULL;
  size_t bytes;

  for (int h = 0; h < 10; h++) {
    g_autofree char *id = g_strdup_printf("6b2a4c1e-5f3d-5e8a-9b7c-%012d", h);

    g_ptr_array_add(home_ids, provider_entry_new(id, ENTRY_DIR));
  }
  tree_set_children(t, homes, home_ids, 1);
  nodes += home_ids->len;
  for (guint h = 0; h < home_ids->len; h++) {
    const char *home_id = ((struct provider_entry *)home_ids->pdata[h])->name;
    struct node *home = tree_child(t, homes, home_id);
    struct node *devices;
    g_autoptr(GPtrArray) device_ids = provider_entries_new();

    set_children(t, home, (const char *const[]){"home.json", "devices", NULL},
                 1);
    devices = tree_child(t, home, "devices");
    for (int d = 0; d < 1000; d++) {
      g_autofree char *raw =
          g_strdup_printf("tesla enode vehicle:%d", h * 1000 + d);
      g_autofree char *id = g_base64_encode((const guchar *)raw, strlen(raw));

      g_ptr_array_add(device_ids, provider_entry_new(id, ENTRY_DIR));
    }
    tree_set_children(t, devices, device_ids, 1);
    nodes += 2 + device_ids->len;
    for (guint d = 0; d < device_ids->len; d++) {
      const char *device_id =
          ((struct provider_entry *)device_ids->pdata[d])->name;
      struct node *device = tree_child(t, devices, device_id);
      g_autoptr(GPtrArray) device_files = provider_entries_new();

      g_ptr_array_add(device_files,
                      provider_entry_new("device.json", ENTRY_FILE));
      g_ptr_array_add(device_files, provider_entry_new("values", ENTRY_DIR));
      tree_set_children(t, device, device_files, 1);
      last = tree_child(t, device, "values");
      set_children(t, last, values, 1);
      nodes += 2 + 4;
    }
  }
  bytes = heap_bytes() - before + tree_memory_bytes(t);
  g_test_message("%zu nodes, %zu bytes of heap and slabs, %.1f bytes a node", nodes,
                 bytes, (double)bytes / (double)nodes);
  last = tree_child(t, last, "charging.status");
  g_assert_nonnull(last);
  g_assert_true(tree_get(t, last->ino) == last);
  g_assert_cmpuint(
      last->ino, ==,
      tree_path_ino("/homes/6b2a4c1e-5f3d-5e8a-9b7c-000000000009/devices/"
                    "dGVzbGEgZW5vZGUgdmVoaWNsZTo5OTk5/values/charging.status"));
  tree_free(t);
}

/* The nodes after one in its directory's order, live ones only, at most max. */
static void test_next_siblings_follow_the_listing_and_skip_gone_ones(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "devices", true);
  struct node *out[3];

  set_children(t, dir, (const char *const[]){"a", "b", "c", "d", "e", NULL}, 1);
  struct node *a = tree_child(t, dir, "a");
  g_assert_cmpuint(tree_next_siblings(t, a, out, 3), ==, 3);
  g_assert_cmpstr(out[0]->name, ==, "b");
  g_assert_cmpstr(out[2]->name, ==, "d");

  set_children(t, dir, (const char *const[]){"a", "c", "e", NULL}, 2);
  g_assert_cmpuint(tree_next_siblings(t, a, out, 3), ==, 2);
  g_assert_cmpstr(out[0]->name, ==, "c");
  g_assert_cmpstr(out[1]->name, ==, "e");
  g_assert_cmpuint(tree_next_siblings(t, tree_child(t, dir, "e"), out, 3), ==, 0);
  g_assert_cmpuint(tree_next_siblings(t, tree_root(t), out, 3), ==, 0);
  tree_free(t);
}

/* A listing of @n devices whose ids all differ from the last one's (gen @gen). */
static GPtrArray *fresh_ids(int gen, int n) {
  GPtrArray *entries = provider_entries_new();

  for (int i = 0; i < n; i++) {
    g_autofree char *id = g_strdup_printf("device-%d-%d", gen, i);
    g_ptr_array_add(entries, provider_entry_new(id, ENTRY_DIR));
  }
  return entries;
}

/* Ids that change on every listing: the nodes no kernel holds leave with their
 * listing, so the tree holds what one listing does, and its slabs stop growing. */
static void test_ids_that_change_on_every_listing_keep_the_tree_bounded(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "devices", true);
  size_t heap_then = 0;

  for (int gen = 1; gen <= 300; gen++) {
    g_autoptr(GPtrArray) entries = fresh_ids(gen, 50);
    unsigned held = tree_hold(t);
    tree_set_children(t, dir, entries, (uint64_t)gen);
    /* Each device has a file below it, as a device.json. */
    for (guint i = 0; i < entries->len; i++) {
      const char *id = ((struct provider_entry *)entries->pdata[i])->name;
      tree_add_child(t, tree_child(t, dir, id), "device.json", false);
    }
    tree_release(t, held);
    g_assert_cmpuint(tree_count(t), ==, 2 + 2 * 50); /* root, devices, 50 x 2 */
    if (gen == 150) /* ids of as many digits from here on */
      heap_then = heap_bytes() + tree_memory_bytes(t);
  }
  /* Freed pieces are reused: 150 listings more took no more memory. */
  g_assert_cmpuint(heap_bytes() + tree_memory_bytes(t), <=, heap_then + 1024);
  tree_free(t);
}

/* Ids too long for a slab's pieces (a hostile cloud's 20 000-byte ids) each take a
 * block of their own: the files below them find their directory and their path, and
 * when the ids change on every listing the blocks go with them, so the tree stays the
 * size of one listing. */
static void test_ids_too_long_for_a_slab_come_and_go(void) {
  struct tree *t = tree_new();
  struct node *dir = tree_add_child(t, tree_root(t), "devices", true);
  size_t then = 0;

  for (int gen = 1; gen <= 40; gen++) {
    g_autoptr(GPtrArray) entries = provider_entries_new();
    for (int i = 0; i < 5; i++) {
      g_autofree char *id = g_strnfill(20000, (char)('a' + (gen + i) % 26));
      g_autofree char *tail = g_strdup_printf("%d-%d", gen, i);
      memcpy(id, tail, strlen(tail));
      g_ptr_array_add(entries, provider_entry_new(id, ENTRY_DIR));
    }
    unsigned held = tree_hold(t);
    tree_set_children(t, dir, entries, (uint64_t)gen);
    for (guint i = 0; i < entries->len; i++) {
      const char *id = ((struct provider_entry *)entries->pdata[i])->name;
      GArray *list = tree_list(t, dir);
      struct node *device =
          tree_get(t, g_array_index(list, struct tree_dirent, i).ino);
      tree_dirents_free(list);
      g_assert_cmpstr(tree_node_raw(device), ==, id);
      struct node *file = tree_add_child(t, device, "device.json", false);
      g_assert_true(tree_parent(t, file) == device);
      g_assert_true(tree_parent(t, device) == dir);
      size_t n;
      g_auto(GStrv) path = tree_raw_path(t, file, &n);
      g_assert_cmpuint(n, ==, 3);
      g_assert_cmpstr(path[1], ==, id);
      g_assert_cmpstr(path[2], ==, "device.json");
    }
    tree_release(t, held);
    g_assert_cmpuint(tree_count(t), ==, 2 + 2 * 5);
    if (gen == 20)
      then = tree_memory_bytes(t);
  }
  /* 20 listings more mapped no more: the old ids' blocks were given back. */
  g_assert_cmpuint(tree_memory_bytes(t), <=, then);
  tree_free(t);
}

/* A node the kernel holds stays, gone, until it forgets it; then it and the directory
 * that waited for it leave. Its number is its path's again when it comes back. */
static void test_a_gone_node_the_kernel_holds_stays_until_forgotten(void) {
  struct tree *t = tree_new();
  struct node *devices = tree_add_child(t, tree_root(t), "devices", true);
  set_children(t, devices, (const char *const[]){"a", "b", NULL}, 1);
  struct node *a = tree_child(t, devices, "a");
  struct node *file = tree_add_child(t, a, "device.json", false);
  uint64_t a_ino = a->ino, file_ino = file->ino;
  size_t all = tree_count(t);

  g_assert_true(tree_ref(t, a));
  g_assert_true(tree_ref(t, file));
  g_assert_true(tree_ref(t, file)); /* looked up twice */
  set_children(t, devices, (const char *const[]){"b", NULL}, 2);
  g_assert_true(tree_get(t, a_ino) == a);
  g_assert_true(a->gone && file->gone);
  g_assert_true(tree_child(t, devices, "a") == a); /* found, and gone */
  g_autofree char *l = listing(t, devices);
  g_assert_cmpstr(l, ==, "b");

  tree_forget(t, a_ino, 1); /* the directory waits for its file */
  g_assert_true(tree_get(t, a_ino) == a);
  tree_forget(t, file_ino, 1);
  g_assert_nonnull(tree_get(t, file_ino));
  tree_forget(t, file_ino, 1);
  g_assert_null(tree_get(t, file_ino));
  g_assert_null(tree_get(t, a_ino));
  g_assert_cmpuint(tree_count(t), ==, all - 2);

  set_children(t, devices, (const char *const[]){"a", "b", NULL}, 3);
  g_assert_cmpuint(tree_child(t, devices, "a")->ino, ==, a_ino);
  g_assert_cmpuint(tree_path_ino("/devices/a"), ==, a_ino);
  tree_free(t);
}

/* A node unlinked while a section that may hold it is open is freed only once every
 * such section has ended: its memory still reads as it was. */
static void test_a_node_is_freed_only_after_the_sections_that_may_hold_it(void) {
  struct tree *t = tree_new();
  struct node *devices = tree_add_child(t, tree_root(t), "devices", true);
  set_children(t, devices, (const char *const[]){"a", NULL}, 1);
  unsigned held = tree_hold(t);
  struct node *a = tree_child(t, devices, "a");

  set_children(t, devices, (const char *const[]){NULL}, 2);
  /* Another thread's sections come and go meanwhile, and listings reclaim. */
  for (int i = 0; i < 3; i++) {
    unsigned other = tree_hold(t);
    set_children(t, devices, (const char *const[]){NULL}, (uint64_t)(3 + i));
    tree_release(t, other);
  }
  g_assert_cmpstr(a->name, ==, "a"); /* not freed: ASan would see a reuse */
  g_assert_false(tree_ref(t, a));     /* it left the tree: no entry for it */
  g_assert_null(tree_child(t, devices, "a"));
  tree_release(t, held);
  tree_free(t);
}

/* A directory that turns into a file while the kernel holds a child of it: the child
 * waits (an orphan) until forgotten, and the former directory is not freed before. */
static void test_a_child_the_kernel_holds_outlives_its_directory_turned_file(void) {
  struct tree *t = tree_new();
  struct node *values = tree_add_child(t, tree_root(t), "values", true);
  g_autoptr(GPtrArray) as_dir = provider_entries_new();
  g_autoptr(GPtrArray) as_file = provider_entries_new();

  g_ptr_array_add(as_dir, provider_entry_new("x", ENTRY_DIR));
  g_ptr_array_add(as_file, provider_entry_new("x", ENTRY_FILE));
  tree_set_children(t, values, as_dir, 1);
  struct node *x = tree_child(t, values, "x");
  struct node *y = tree_add_child(t, x, "y", false);
  uint64_t x_ino = x->ino, y_ino = y->ino;
  g_assert_true(tree_ref(t, y));

  tree_set_children(t, values, as_file, 2); /* x is a file now; y waits */
  g_assert_true(tree_get(t, y_ino) == y);
  g_assert_true(y->gone);
  set_children(t, values, (const char *const[]){NULL}, 3); /* x leaves too */
  g_assert_true(tree_get(t, x_ino) == x); /* gone, but its child is held */
  tree_forget(t, y_ino, 1);
  g_assert_null(tree_get(t, y_ino));
  g_assert_null(tree_get(t, x_ino)); /* it waited for y */
  tree_free(t);
}

/* Under collisions, freeing never breaks the search for a name that took a later
 * number: a node waits while the number after it is taken. */
static void test_freeing_under_collisions_keeps_every_name_found(void) {
  struct tree *t = tree_new_hash_bits(3);
  struct node *dir = tree_add_child(t, tree_root(t), "zones", true);

  for (int round = 0; round < 30; round++) {
    g_autoptr(GPtrArray) keep =
        numbered_entries(round % 7, round % 7 + 6, ENTRY_FILE);
    tree_set_children(t, dir, keep, (uint64_t)round + 1);
    for (guint i = 0; i < keep->len; i++) {
      const char *name = ((struct provider_entry *)keep->pdata[i])->name;
      struct node *n = tree_child(t, dir, name);
      g_assert_nonnull(n);
      g_assert_false(n->gone);
      g_assert_true(tree_get(t, n->ino) == n);
    }
    g_autofree char *l = listing(t, dir);
    g_assert_cmpuint(strlen(l), >, 0);
  }
  /* Whatever waited is bounded by the names there are. */
  g_assert_cmpuint(tree_count(t), <=, 2 + 1 + 13);
  tree_free(t);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/tree/root_is_inode_one_and_unnamed",
                  test_root_is_inode_one_and_unnamed);
  g_test_add_func("/tree/inode_numbers_are_stable_across_trees",
                  test_inode_numbers_are_stable_across_trees);
  g_test_add_func("/tree/inode_numbers_are_never_zero_or_one",
                  test_inode_numbers_are_never_zero_or_one);
  g_test_add_func("/tree/many_nodes_get_distinct_inodes",
                  test_many_nodes_get_distinct_inodes);
  g_test_add_func(
      "/tree/listing_keeps_the_providers_order_first_duplicate_wins",
      test_listing_keeps_the_providers_order_first_duplicate_wins);
  g_test_add_func("/tree/listings_follow_each_change",
                  test_listings_follow_each_change);
  g_test_add_func(
      "/tree/missing_children_are_gone_and_come_back_with_their_inode",
      test_missing_children_are_gone_and_come_back_with_their_inode);
  g_test_add_func("/tree/internal_nodes_survive_a_provider_listing",
                  test_internal_nodes_survive_a_provider_listing);
  g_test_add_func("/tree/raw_path_gives_the_provider_its_ids",
                  test_raw_path_gives_the_provider_its_ids);
  g_test_add_func("/tree/unsafe_names_are_escaped_reversibly",
                  test_unsafe_names_are_escaped_reversibly);
  g_test_add_func("/tree/only_our_own_escapes_unescape",
                  test_only_our_own_escapes_unescape);
  g_test_add_func("/tree/long_names_are_cut_with_a_hash_of_the_whole_id",
                  test_long_names_are_cut_with_a_hash_of_the_whole_id);
  g_test_add_func("/tree/long_names_are_cut_between_characters",
                  test_long_names_are_cut_between_characters);
  g_test_add_func("/tree/lookup_finds_escaped_names",
                  test_lookup_finds_escaped_names);
  g_test_add_func("/tree/a_file_can_become_a_directory",
                  test_a_file_can_become_a_directory);
  g_test_add_func(
      "/tree/a_directory_turned_file_and_back_keeps_its_childrens_inodes",
      test_a_directory_turned_file_and_back_keeps_its_childrens_inodes);
  g_test_add_func("/tree/the_same_name_in_two_directories_is_two_nodes",
                  test_the_same_name_in_two_directories_is_two_nodes);
  g_test_add_func("/tree/a_file_has_no_children", test_a_file_has_no_children);
  g_test_add_func("/tree/raw_shares_the_name_when_they_are_equal",
                  test_raw_shares_the_name_when_they_are_equal);
  g_test_add_func("/tree/a_very_long_id_is_kept_whole",
                  test_a_very_long_id_is_kept_whole);
  g_test_add_func("/tree/colliding_paths_get_distinct_inodes_and_are_found",
                  test_colliding_paths_get_distinct_inodes_and_are_found);
  g_test_add_func("/tree/colliding_paths_keep_their_inodes_when_gone_and_back",
                  test_colliding_paths_keep_their_inodes_when_gone_and_back);
  g_test_add_func("/tree/colliding_paths_in_two_directories_stay_apart",
                  test_colliding_paths_in_two_directories_stay_apart);
  g_test_add_func("/tree/next_siblings_follow_the_listing_and_skip_gone_ones",
                  test_next_siblings_follow_the_listing_and_skip_gone_ones);
  g_test_add_func("/tree/bidi_and_c1_controls_are_escaped",
                  test_bidi_and_c1_controls_are_escaped);
  g_test_add_func("/tree/memory_per_node_of_10000_devices",
                  test_memory_per_node_of_10000_devices);
  g_test_add_func("/tree/ids_that_change_on_every_listing_keep_the_tree_bounded",
                  test_ids_that_change_on_every_listing_keep_the_tree_bounded);
  g_test_add_func("/tree/ids_too_long_for_a_slab_come_and_go",
                  test_ids_too_long_for_a_slab_come_and_go);
  g_test_add_func("/tree/a_gone_node_the_kernel_holds_stays_until_forgotten",
                  test_a_gone_node_the_kernel_holds_stays_until_forgotten);
  g_test_add_func("/tree/a_node_is_freed_only_after_the_sections_that_may_hold_it",
                  test_a_node_is_freed_only_after_the_sections_that_may_hold_it);
  g_test_add_func("/tree/a_child_the_kernel_holds_outlives_its_directory_turned_file",
                  test_a_child_the_kernel_holds_outlives_its_directory_turned_file);
  g_test_add_func("/tree/freeing_under_collisions_keeps_every_name_found",
                  test_freeing_under_collisions_keeps_every_name_found);
  return g_test_run();
}
