/* provider: the table of clouds and the helpers their mappings share. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"

/* The providers, each defined in providers/<name>.c. A new cloud adds one line here. */
extern const struct provider tado_provider, tibber_provider;

static const struct provider *const providers[] = {
    &tado_provider,
    &tibber_provider,
    NULL,
};

const struct provider *const *provider_all(void)
{
	return providers;
}

const struct provider *provider_find(const char *name)
{
	if (!name)
		return NULL;
	for (const struct provider *const *p = providers; *p; p++)
		if (strcmp((*p)->name, name) == 0)
			return *p;
	return NULL;
}

void resource_ref_clear(struct resource_ref *ref)
{
	g_clear_pointer(&ref->path, g_free);
	g_clear_pointer(&ref->key, g_free);
	if (ref->context) {
		resource_ref_clear(ref->context);
		g_clear_pointer(&ref->context, g_free);
	}
	*ref = (struct resource_ref){0};
}

/* Whether @pattern's components match @path's, the ids of its "*" going to @ids. */
static bool route_matches(const char *pattern, const struct provider_path *path, const char **ids)
{
	size_t i = 0, n_ids = 0;
	const char *c = pattern;

	if (!*pattern)
		return path->n == 0;
	for (;; i++) {
		const char *end = strchrnul(c, '/');
		size_t len = (size_t)(end - c);
		const char *comp = i < path->n ? path->comp[i] : NULL;

		if (!comp)
			return false;
		if (len == 1 && *c == '*') {
			if (!*comp || n_ids == PROVIDER_ROUTE_IDS)
				return false;
			ids[n_ids++] = comp;
		} else if (strlen(comp) != len || memcmp(comp, c, len) != 0) {
			return false;
		}
		if (!*end)
			return i + 1 == path->n;
		c = end + 1;
	}
}

int provider_route_match(const struct provider_route *routes, size_t n,
			 const struct provider_path *path, const char **ids)
{
	for (size_t i = 0; i < n; i++)
		if (routes[i].pattern && route_matches(routes[i].pattern, path, ids))
			return (int)i;
	return -ENOENT;
}

void provider_route_children(const struct provider_route *routes, size_t n, size_t dir,
			     GPtrArray *entries)
{
	const char *parent = routes[dir].pattern;
	size_t plen = strlen(parent);

	for (size_t i = 0; i < n; i++) {
		const char *p = routes[i].pattern;
		const char *name;

		if (!p || i == dir)
			continue;
		if (plen == 0)
			name = p;
		else if (strncmp(p, parent, plen) == 0 && p[plen] == '/')
			name = p + plen + 1;
		else
			continue;
		if (*name && !strchr(name, '/') && strcmp(name, "*") != 0)
			g_ptr_array_add(entries, provider_entry_new(name, routes[i].type));
	}
}

struct provider_entry *provider_entry_new_len(const char *name, size_t len, enum entry_type type)
{
	struct provider_entry *e = g_new0(struct provider_entry, 1);

	e->name = g_strndup(name, len);
	e->type = type;
	return e;
}

struct provider_entry *provider_entry_new(const char *name, enum entry_type type)
{
	return provider_entry_new_len(name, strlen(name), type);
}

void provider_entry_free(void *entry)
{
	struct provider_entry *e = entry;

	if (!e)
		return;
	g_free(e->name);
	g_free(e);
}

GPtrArray *provider_entries_new(void)
{
	return g_ptr_array_new_with_free_func(provider_entry_free);
}

/* The shortest "%.*g" text that reads back as the same double, so 21.4 stays "21.4"
 * (jansson's own writer uses 17 digits: "21.399999999999999"). A ".0" keeps an
 * integral real recognisable as a real, as JSON writers do. */
static void append_real(GString *out, double v)
{
	char buf[64];

	if (!isfinite(v)) {
		/* JSON has no text for these; jansson never parses them either. */
		g_string_append(out, "null");
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	/* The shortest %g of 30.0 is "3e+01": people and jq expect "30.0" for numbers of
	 * ordinary size, so those are written with the fewest decimals that round-trip. */
	if (strpbrk(buf, "eE") && fabs(v) >= 1e-4 && fabs(v) < 1e16) {
		for (int decimals = 0; decimals <= 20; decimals++) {
			snprintf(buf, sizeof(buf), "%.*f", decimals, v);
			if (strtod(buf, NULL) == v)
				break;
		}
	}
	g_string_append(out, buf);
	if (!strpbrk(buf, ".eEn"))
		g_string_append(out, ".0");
}

static void append_json_string(GString *out, const char *s, size_t len)
{
	json_t *str = json_stringn_nocheck(s, len);
	char *text = json_dumps(str, JSON_ENCODE_ANY);

	g_string_append(out, text ? text : "\"\"");
	free(text);
	json_decref(str);
}

static void append_indent(GString *out, int depth)
{
	g_string_append_c(out, '\n');
	for (int i = 0; i < depth * 2; i++)
		g_string_append_c(out, ' ');
}

/* jansson's JSON_INDENT(2) layout, with reals written by append_real. Objects keep the
 * order the API sent (jansson keeps insertion order since 2.8). */
static void append_json(GString *out, json_t *json, int depth)
{
	const char *key;
	json_t *value;
	size_t i;

	switch (json_typeof(json)) {
	case JSON_OBJECT:
		if (json_object_size(json) == 0) {
			g_string_append(out, "{}");
			break;
		}
		g_string_append_c(out, '{');
		i = 0;
		json_object_foreach(json, key, value)
		{
			if (i++)
				g_string_append_c(out, ',');
			append_indent(out, depth + 1);
			append_json_string(out, key, strlen(key));
			g_string_append(out, ": ");
			append_json(out, value, depth + 1);
		}
		append_indent(out, depth);
		g_string_append_c(out, '}');
		break;
	case JSON_ARRAY:
		if (json_array_size(json) == 0) {
			g_string_append(out, "[]");
			break;
		}
		g_string_append_c(out, '[');
		json_array_foreach(json, i, value)
		{
			if (i)
				g_string_append_c(out, ',');
			append_indent(out, depth + 1);
			append_json(out, value, depth + 1);
		}
		append_indent(out, depth);
		g_string_append_c(out, ']');
		break;
	case JSON_STRING:
		append_json_string(out, json_string_value(json), json_string_length(json));
		break;
	case JSON_INTEGER:
		g_string_append_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(json));
		break;
	case JSON_REAL:
		append_real(out, json_real_value(json));
		break;
	case JSON_TRUE:
		g_string_append(out, "true");
		break;
	case JSON_FALSE:
		g_string_append(out, "false");
		break;
	case JSON_NULL:
		g_string_append(out, "null");
		break;
	}
}

int provider_render_json(json_t *json, GString *out)
{
	if (!json)
		return -EIO;
	append_json(out, json, 0);
	g_string_append_c(out, '\n');
	return 0;
}

int provider_render_scalar(json_t *value, GString *out)
{
	if (!value)
		return -EIO;
	switch (json_typeof(value)) {
	case JSON_OBJECT:
	case JSON_ARRAY:
		return -EIO;
	case JSON_STRING:
		g_string_append_len(out, json_string_value(value),
				    (gssize)json_string_length(value));
		break;
	case JSON_NULL:
		break;
	default:
		append_json(out, value, 0);
		break;
	}
	g_string_append_c(out, '\n');
	return 0;
}

/* The length of the valid UTF-8 sequence at @s (of @n bytes), or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	size_t len = s[0] < 0x80		    ? 1
		     : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
		     : (s[0] & 0xf0) == 0xe0	    ? 3
		     : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
						    : 0;

	if (len == 0 || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
		return 0; /* overlong, surrogate, or beyond U+10FFFF */
	return len;
}

/* Whether the integer token at @s (@n bytes of '-' and digits) fits a json_int_t. */
static bool integer_fits(const char *s, size_t n)
{
	size_t digits = n - (s[0] == '-');

	if (digits < 19)
		return true;
	if (digits > 19)
		return false;
	return strncmp(s + (s[0] == '-'),
		       s[0] == '-' ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
}

/* What one parse may allocate, per byte of its text. jansson allocates every value
 * apart: a tree weighs 1.4 times the text of a detail of long strings and 9.7 times a
 * listing of 100 000 Tibber devices, but 75 times a body of empty objects ("{},{},..."),
 * which would make a gigabyte of the 16 MiB body cap. */
#define PARSE_BYTES_PER_TEXT_BYTE 12
#define PARSE_BYTES_SLACK	  (1024 * 1024)

/* This thread's parse: whether one runs, and the bytes it may still allocate. */
static _Thread_local bool parsing;
static _Thread_local size_t parse_left;
static _Thread_local bool parse_refused;

static void *parse_malloc(size_t size)
{
	if (parsing) {
		if (size > parse_left) {
			parse_refused = true;
			return NULL;
		}
		parse_left -= size;
	}
	return malloc(size);
}

/* Before main and any thread: jansson's allocator is process-wide. */
__attribute__((constructor)) static void parse_malloc_install(void)
{
	json_set_alloc_funcs(parse_malloc, free);
}

/* json_loadb within the allocation budget of @len bytes of text. */
static json_t *json_load_bounded(const char *text, size_t len, json_error_t *err)
{
	json_t *json;

	parse_left = len * PARSE_BYTES_PER_TEXT_BYTE + PARSE_BYTES_SLACK;
	parse_refused = false;
	parsing = true;
	json = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, err);
	parsing = false;
	if (!json && parse_refused && err)
		snprintf(err->text, sizeof(err->text),
			 "its parse would take more than %d times its %zu bytes",
			 PARSE_BYTES_PER_TEXT_BYTE, len);
	return json;
}

json_t *provider_json_parse(const char *data, size_t len, json_error_t *err)
{
	const unsigned char *p = (const unsigned char *)data;
	g_autoptr(GString) fixed = NULL;
	size_t done = 0; /* bytes of @data already in @fixed */
	bool in_string = false;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_sequence(p + i, len - i);
		const char *note = NULL;
		size_t take = 0;

		if (in_string && n == 0) {
			note = "\\u00"; /* the Latin-1 character of this byte */
			take = 1;
		} else if (in_string) {
			if (p[i] == '\\' && i + 1 < len)
				n = 2;
			else if (p[i] == '"')
				in_string = false;
		} else if (p[i] == '"') {
			in_string = true;
		} else if (p[i] == '-' || g_ascii_isdigit(p[i])) {
			/* The whole number token at once, so a fraction's or an exponent's
			 * digits are never taken for an integer of their own. An integer
			 * beyond 64 bits is still a number: read it as a real. */
			size_t e = i + 1;
			bool integer = true;
			while (e < len && p[e] && (g_ascii_isdigit(p[e]) || strchr(".eE+-", p[e]))) {
				integer = integer && g_ascii_isdigit(p[e]);
				e++;
			}
			n = e - i;
			if (integer && !integer_fits(data + i, n))
				note = ".0", take = 0;
		}
		if (note) {
			if (!fixed)
				fixed = g_string_sized_new(len + 16);
			size_t upto = take ? i : i + n;
			g_string_append_len(fixed, data + done, (gssize)(upto - done));
			if (take)
				g_string_append_printf(fixed, "%s%02x", note, p[i]);
			else
				g_string_append(fixed, note);
			done = upto + take;
			n = take ? take : n;
		}
		i += n ? n : 1;
	}
	if (!fixed)
		return json_load_bounded(data, len, err);
	g_string_append_len(fixed, data + done, (gssize)(len - done));
	return json_load_bounded(fixed->str, fixed->len, err);
}

char *provider_json_id(json_t *obj, const char *key)
{
	json_t *id = json_is_object(obj) ? json_object_get(obj, key) : NULL;

	if (json_is_string(id))
		return g_strndup(json_string_value(id), json_string_length(id));
	if (json_is_integer(id))
		return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(id));
	return NULL;
}

json_t *provider_find_by_id(json_t *arr, const char *key, const char *id)
{
	size_t i;
	json_t *elem;

	if (!json_is_array(arr) || !id)
		return NULL;
	json_array_foreach(arr, i, elem)
	{
		g_autofree char *elem_id = provider_json_id(elem, key);

		if (elem_id && strcmp(elem_id, id) == 0)
			return elem;
	}
	return NULL;
}

char *provider_path_segment(const char *id)
{
	if (!id || !*id)
		return NULL;
	/* curl removes dot segments, so "." and ".." must not reach it as such. */
	if (strcmp(id, ".") == 0)
		return g_strdup("%2E");
	if (strcmp(id, "..") == 0)
		return g_strdup("%2E%2E");
	return g_uri_escape_string(id, NULL, FALSE);
}

char *provider_quote(const char *text, size_t max)
{
	g_autofree char *valid = g_utf8_make_valid(text ? text : "", -1);
	g_autoptr(GString) out = g_string_new(NULL);

	const char *c = valid;

	for (; *c && out->len < max; c = g_utf8_next_char(c)) {
		gunichar u = g_utf8_get_char(c);
		if (u < 0x20 || u == 0x7f || u == '"' || u == '\\')
			g_string_append_printf(out, "\\x%02x", u);
		else
			g_string_append_unichar(out, u);
	}
	if (*c)
		g_string_append(out, "...");
	return g_string_free(g_steal_pointer(&out), FALSE);
}

json_t *provider_json_lookup(json_t *json, const char *dotted)
{
	g_auto(GStrv) keys = g_strsplit(dotted, ".", -1);

	for (char **k = keys; *k && json; k++)
		json = json_is_object(json) ? json_object_get(json, *k) : NULL;
	return json;
}
