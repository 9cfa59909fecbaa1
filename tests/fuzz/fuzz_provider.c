/* Fuzzes the JSON -> tree mapping of every provider: the fuzzed bytes are the body of
 * every resource, and the walk goes down every path the provider lists from it (plus
 * the fixed names of each level), asking source (then source_in, the body standing
 * for the context a path depends on), list and render of each.
 * Invariants: no crash, every call returns 0 or a negative errno, a listed name is
 * non-empty, an API path starts with '/' and has no dot segment (a query only on history:
 * a paged or an immutable resource, such as tado's dayReport?date=), a rendered file ends
 * in a newline. History is listed as of a fixed
 * day, two days back. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>
#include <jansson.h>

#include "provider.h"

#define MAX_DEPTH    7
#define MAX_CHILDREN 12 /* per directory, so that one input stays fast */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ref(const struct resource_ref *ref)
{
	if (!ref->path)
		return;
	assert(ref->path[0] == '/');
	assert(!strchr(ref->path, '#'));
	assert(ref->paged || ref->immutable_at_s || !strchr(ref->path, '?'));
	g_autofree char *before_query = g_strndup(ref->path, strcspn(ref->path, "?"));
	g_auto(GStrv) segs = g_strsplit(before_query, "/", -1);
	for (char **s = segs + 1; *s; s++) {
		assert(**s != '\0');
		assert(strcmp(*s, ".") != 0 && strcmp(*s, "..") != 0);
	}
}

static void walk(const struct provider *p, json_t *body, const char **comp, size_t n)
{
	struct provider_path path = {.comp = comp,
				     .n = n,
				     .now_s = 1796209200, /* 2026-12-02T11:00:00Z */
				     .history_from_s = 1796209200 - 2 * 86400};
	struct resource_ref ref = {0};
	int r = p->source(&path, &ref);

	assert(r == 0 || r == -ENOENT);
	if (r == 0)
		check_ref(&ref);
	/* The body as the context the path depends on, as many levels as asked. */
	for (int depth = 0; r == 0 && ref.context && depth < 3; depth++) {
		struct resource_ref in = {0};
		char *note = NULL;
		int r_in;

		check_ref(ref.context);
		assert(p->source_in);
		r_in = p->source_in(&path, body, &in, &note);
		assert(r_in == 0 || r_in == -ENOENT || r_in == -EIO || r_in == -EPROTONOSUPPORT);
		assert((r_in == -EPROTONOSUPPORT) == (note != NULL));
		assert(!note || g_utf8_validate(note, -1, NULL));
		if (r_in == 0)
			check_ref(&in);
		g_free(note);
		resource_ref_clear(&ref);
		ref = in;
	}
	resource_ref_clear(&ref);
	if (r < 0)
		return;

	g_autoptr(GString) out = g_string_new(NULL);
	r = p->render(&path, body, out);
	assert(r == 0 || r == -ENOENT || r == -EIO);
	if (r == 0)
		assert(out->len > 0 && out->str[out->len - 1] == '\n');

	if (n >= MAX_DEPTH)
		return;
	g_autoptr(GPtrArray) entries = provider_entries_new();
	r = p->list(&path, body, entries);
	assert(r == 0 || r == -ENOENT || r == -EIO);
	if (r < 0)
		return;
	for (guint i = 0; i < entries->len && i < MAX_CHILDREN; i++) {
		struct provider_entry *e = entries->pdata[i];
		assert(e->name && e->name[0]);
		comp[n] = e->name;
		walk(p, body, comp, n + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = provider_json_parse((const char *)data, size, NULL);
	const char *comp[MAX_DEPTH + 1];

	/* A body that does not parse never reaches a mapping (the session refuses it). */
	if (!body)
		return 0;
	/* The lenient parse only ever adds: valid JSON reads as jansson reads it. */
	json_t *strict = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	assert(!strict || json_equal(strict, body));
	json_decref(strict);
	for (const struct provider *const *p = provider_all(); *p; p++)
		walk(*p, body, comp, 0);
	json_decref(body);
	return 0;
}
