/* Tibber Data API: homes/<h>/home.json from the /homes list (there is no per-home call),
 * homes/<h>/devices/<d>/{device.json,values/} from one device-detail call each.
 *
 * New device categories and keys appear without notice: device.json passes the body
 * through untouched, and values/ shows whatever capabilities the device has. */
#include <errno.h>
#include <string.h>

#include "provider.h"

#define HOUR 3600

static bool is(const struct provider_path *p, size_t i, const char *name)
{
	return i < p->n && strcmp(p->comp[i], name) == 0;
}

static void add(GPtrArray *entries, const char *name, enum entry_type type)
{
	g_ptr_array_add(entries, provider_entry_new(name, type));
}

static int tibber_source(const struct provider_path *p, struct resource_ref *ref)
{
	g_autofree char *h = NULL;
	g_autofree char *d = NULL;

	*ref = (struct resource_ref){0};
	if (p->n == 0)
		return 0;
	if (!is(p, 0, "homes"))
		return -ENOENT;
	if (p->n == 1 || (p->n == 3 && is(p, 2, "home.json"))) {
		ref->path = g_strdup("/homes");
		ref->ttl = HOUR;
		return 0;
	}
	h = provider_path_segment(p->comp[1]);
	if (!h)
		return -ENOENT;
	if (p->n == 2)
		return 0;
	if (!is(p, 2, "devices"))
		return -ENOENT;
	if (p->n == 3) {
		ref->path = g_strconcat("/homes/", h, "/devices", NULL);
		ref->ttl = HOUR;
		return 0;
	}
	d = provider_path_segment(p->comp[3]);
	if (!d)
		return -ENOENT;
	if (p->n == 4)
		return 0;
	if ((p->n == 5 && (is(p, 4, "device.json") || is(p, 4, "values"))) ||
	    (p->n == 6 && is(p, 4, "values"))) {
		ref->path = g_strconcat("/homes/", h, "/devices/", d, NULL);
		/* A vehicle sits under every home the token sees: fetch it once. */
		ref->key = g_strconcat("device:", d, NULL);
		return 0;
	}
	return -ENOENT;
}

/* The array of a list body: {"@key": [...]} or, as some answers are, a bare array. */
static json_t *list_array(json_t *body, const char *key)
{
	if (json_is_array(body))
		return body;
	if (json_is_object(body) && json_is_array(json_object_get(body, key)))
		return json_object_get(body, key);
	return NULL;
}

/* The capabilities of a device detail worth a file: scalar values, first of each id. */
static void capabilities_each(json_t *device, bool (*fn)(const char *id, json_t *value, void *ctx),
			      void *ctx)
{
	json_t *caps = json_object_get(device, "capabilities");
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	json_t *cap;
	size_t i;

	json_array_foreach(caps, i, cap)
	{
		json_t *id = json_is_object(cap) ? json_object_get(cap, "id") : NULL;
		json_t *value = id ? json_object_get(cap, "value") : NULL;
		const char *name = json_string_value(id);

		if (!name || !*name || g_hash_table_contains(seen, name))
			continue;
		g_hash_table_add(seen, (char *)name);
		if (!value || json_is_object(value) || json_is_array(value))
			continue;
		if (!fn(name, value, ctx))
			return;
	}
}

static bool capability_add(const char *id, json_t *value, void *ctx)
{
	add(ctx, id, ENTRY_FILE);
	return true;
}

static int tibber_list(const struct provider_path *p, json_t *body, GPtrArray *entries)
{
	json_t *arr;
	json_t *elem;
	size_t i;

	if (p->n == 0) {
		add(entries, "homes", ENTRY_DIR);
		return 0;
	}
	if (!is(p, 0, "homes"))
		return -ENOENT;
	if (p->n == 2) {
		add(entries, "home.json", ENTRY_FILE);
		add(entries, "devices", ENTRY_DIR);
		return 0;
	}
	if (p->n == 4 && is(p, 2, "devices")) {
		add(entries, "device.json", ENTRY_FILE);
		add(entries, "values", ENTRY_DIR);
		return 0;
	}
	if (p->n == 1 || (p->n == 3 && is(p, 2, "devices"))) {
		arr = list_array(body, p->n == 1 ? "homes" : "devices");
		if (!arr)
			return -EIO;
		json_array_foreach(arr, i, elem)
		{
			g_autofree char *id = provider_json_id(elem, "id");

			if (id && *id)
				add(entries, id, ENTRY_DIR);
		}
		return 0;
	}
	if (p->n == 5 && is(p, 2, "devices") && is(p, 4, "values")) {
		if (!json_is_object(body))
			return -EIO;
		capabilities_each(body, capability_add, entries);
		return 0;
	}
	return -ENOENT;
}

struct capability_find {
	const char *id;
	json_t *value;
};

static bool capability_match(const char *id, json_t *value, void *ctx)
{
	struct capability_find *f = ctx;

	if (strcmp(id, f->id) != 0)
		return true;
	f->value = value;
	return false;
}

static int tibber_render(const struct provider_path *p, json_t *body, GString *out)
{
	if (p->n == 3 && is(p, 0, "homes") && is(p, 2, "home.json")) {
		json_t *arr = list_array(body, "homes");
		json_t *home;

		if (!arr)
			return -EIO;
		home = provider_find_by_id(arr, "id", p->comp[1]);
		return home ? provider_render_json(home, out) : -ENOENT;
	}
	if (p->n < 5 || !is(p, 0, "homes") || !is(p, 2, "devices"))
		return -ENOENT;
	if (p->n == 5 && is(p, 4, "device.json")) {
		if (!json_is_object(body))
			return -EIO;
		return provider_render_json(body, out);
	}
	if (p->n == 6 && is(p, 4, "values")) {
		struct capability_find f = {.id = p->comp[5]};

		if (!json_is_object(body))
			return -EIO;
		capabilities_each(body, capability_match, &f);
		return f.value ? provider_render_scalar(f.value, out) : -ENOENT;
	}
	return -ENOENT;
}

const struct provider tibber_provider = {
    .name = "tibber",
    .title = "Tibber",
    .api_url = "https://data-api.tibber.com/v1",
    .auth_url = "https://thewall.tibber.com",
    .login = LOGIN_AUTH_CODE_PKCE,
    .client_id = NULL,
    .scope = "openid profile email offline_access data-api-user-read data-api-homes-read "
	     "data-api-vehicles-read data-api-chargers-read data-api-thermostats-read "
	     "data-api-energy-systems-read data-api-inverters-read data-api-meters-read",
    .authorize_path = "/connect/authorize",
    .token_path = "/connect/token",
    .verification_uri_needs_client_id = false,
    .quota_is_scarce = false,
    .default_ttl = 60,
    .source = tibber_source,
    .list = tibber_list,
    .render = tibber_render,
};
