/* tado°: the REST API at my.tado.com/api/v2 mapped to homes/<h>/{home,state,weather}.json,
 * zones/<z>/ and devices/<serialNo>/.
 *
 * The daily quota is tiny (100 calls without a subscription), so every file of a kind
 * is cut from one aggregate response: all zones' states from one zoneStates call, all
 * devices from one devices call. */
#include <errno.h>
#include <string.h>

#include "provider.h"

#define HOUR 3600

/* A file of values/: one scalar of the zone state or the device. */
struct value_def {
	const char *name;
	const char *source; /* dotted path inside the object */
	bool not_null;	    /* true/false: whether the source is non-null */
};

static const struct value_def zone_values[] = {
    {"inside_temperature", "sensorDataPoints.insideTemperature.celsius", false},
    {"humidity", "sensorDataPoints.humidity.percentage", false},
    {"heating_power", "activityDataPoints.heatingPower.percentage", false},
    {"target_temperature", "setting.temperature.celsius", false},
    {"power", "setting.power", false},
    {"mode", "tadoMode", false},
    {"link", "link.state", false},
    {"window_open", "openWindow", true},
    {"overlay_active", "overlay", true},
    {NULL, NULL, false},
};

static const struct value_def device_values[] = {
    {"battery", "batteryState", false},
    {"connected", "connectionState.value", false},
    {"firmware", "currentFwVersion", false},
    {"type", "deviceType", false},
    {NULL, NULL, false},
};

/* The value @def of @obj, or NULL when @obj has no such scalar. */
static json_t *value_source(json_t *obj, const struct value_def *def)
{
	json_t *v = provider_json_lookup(obj, def->source);

	if (!v)
		return NULL;
	if (def->not_null)
		return json_boolean(!json_is_null(v));
	if (json_is_object(v) || json_is_array(v))
		return NULL;
	return v;
}

static const struct value_def *value_find(const struct value_def *defs, const char *name)
{
	for (; defs->name; defs++)
		if (strcmp(defs->name, name) == 0)
			return defs;
	return NULL;
}

static int values_list(const struct value_def *defs, json_t *obj, GPtrArray *entries)
{
	if (!json_is_object(obj))
		return -EIO;
	for (; defs->name; defs++)
		if (value_source(obj, defs))
			g_ptr_array_add(entries, provider_entry_new(defs->name, ENTRY_FILE));
	return 0;
}

static int values_render(const struct value_def *defs, json_t *obj, const char *name, GString *out)
{
	const struct value_def *def = value_find(defs, name);
	json_t *v;

	if (!def)
		return -ENOENT;
	if (!json_is_object(obj))
		return -EIO;
	v = value_source(obj, def);
	if (!v)
		return -ENOENT;
	/* value_source hands out borrowed references; json_true()/json_boolean() are
	 * singletons, so no reference is owed. */
	return provider_render_scalar(v, out);
}

static bool is(const struct provider_path *p, size_t i, const char *name)
{
	return i < p->n && strcmp(p->comp[i], name) == 0;
}

static void add(GPtrArray *entries, const char *name, enum entry_type type)
{
	g_ptr_array_add(entries, provider_entry_new(name, type));
}

/* Sets @ref to "/homes/{h}@suffix". */
static int home_ref(const char *h, const char *suffix, int ttl, struct resource_ref *ref)
{
	g_autofree char *seg = provider_path_segment(h);

	if (!seg)
		return -ENOENT;
	ref->path = g_strconcat("/homes/", seg, suffix, NULL);
	ref->ttl = ttl;
	return 0;
}

static int tado_source(const struct provider_path *p, struct resource_ref *ref)
{
	const char *h;

	*ref = (struct resource_ref){0};
	if (p->n == 0)
		return 0;
	if (!is(p, 0, "homes"))
		return -ENOENT;
	if (p->n == 1) {
		ref->path = g_strdup("/me");
		ref->ttl = HOUR;
		return 0;
	}
	h = p->comp[1];
	if (p->n == 2)
		return *h ? 0 : -ENOENT;
	if (p->n == 3) {
		if (is(p, 2, "home.json"))
			return home_ref(h, "", HOUR, ref);
		if (is(p, 2, "state.json"))
			return home_ref(h, "/state", 0, ref);
		if (is(p, 2, "weather.json"))
			return home_ref(h, "/weather", 600, ref);
		if (is(p, 2, "zones"))
			return home_ref(h, "/zones", HOUR, ref);
		if (is(p, 2, "devices"))
			return home_ref(h, "/devices", HOUR, ref);
		return -ENOENT;
	}
	if (is(p, 2, "zones")) {
		if (p->n == 4)
			return 0;
		if (p->n == 5 && is(p, 4, "zone.json"))
			return home_ref(h, "/zones", HOUR, ref);
		if ((p->n == 5 && (is(p, 4, "state.json") || is(p, 4, "values"))) ||
		    (p->n == 6 && is(p, 4, "values") && value_find(zone_values, p->comp[5])))
			return home_ref(h, "/zoneStates", 0, ref);
		return -ENOENT;
	}
	if (is(p, 2, "devices")) {
		if (p->n == 4)
			return 0;
		if ((p->n == 5 && (is(p, 4, "device.json") || is(p, 4, "values"))) ||
		    (p->n == 6 && is(p, 4, "values") && value_find(device_values, p->comp[5])))
			return home_ref(h, "/devices", HOUR, ref);
		return -ENOENT;
	}
	return -ENOENT;
}

/* Appends one directory per element of @arr, named by its @key id. */
static int list_ids(json_t *arr, const char *key, GPtrArray *entries)
{
	size_t i;
	json_t *elem;

	if (!json_is_array(arr))
		return -EIO;
	json_array_foreach(arr, i, elem)
	{
		g_autofree char *id = provider_json_id(elem, key);

		if (id && *id)
			add(entries, id, ENTRY_DIR);
	}
	return 0;
}

/* The state of zone @z in a zoneStates body; *r -ENOENT or -EIO when there is none. */
static json_t *zone_state(json_t *body, const char *z, int *r)
{
	json_t *states = json_is_object(body) ? json_object_get(body, "zoneStates") : NULL;
	json_t *state;

	if (!json_is_object(states)) {
		*r = -EIO;
		return NULL;
	}
	state = json_object_get(states, z);
	if (!state) {
		*r = -ENOENT;
		return NULL;
	}
	if (!json_is_object(state)) {
		*r = -EIO;
		return NULL;
	}
	return state;
}

/* The element of array @body whose @key is @id; *r -ENOENT or -EIO when there is none. */
static json_t *element(json_t *body, const char *key, const char *id, int *r)
{
	json_t *elem;

	if (!json_is_array(body)) {
		*r = -EIO;
		return NULL;
	}
	elem = provider_find_by_id(body, key, id);
	if (!elem)
		*r = -ENOENT;
	return elem;
}

static int tado_list(const struct provider_path *p, json_t *body, GPtrArray *entries)
{
	json_t *obj;
	int r = 0;

	if (p->n == 0) {
		add(entries, "homes", ENTRY_DIR);
		return 0;
	}
	if (!is(p, 0, "homes"))
		return -ENOENT;
	if (p->n == 1) {
		if (!json_is_object(body))
			return -EIO;
		return list_ids(json_object_get(body, "homes"), "id", entries);
	}
	if (p->n == 2) {
		add(entries, "home.json", ENTRY_FILE);
		add(entries, "state.json", ENTRY_FILE);
		add(entries, "weather.json", ENTRY_FILE);
		add(entries, "zones", ENTRY_DIR);
		add(entries, "devices", ENTRY_DIR);
		return 0;
	}
	if (p->n == 3 && (is(p, 2, "zones") || is(p, 2, "devices")))
		return list_ids(body, is(p, 2, "zones") ? "id" : "serialNo", entries);
	if (p->n == 4 && is(p, 2, "zones")) {
		add(entries, "zone.json", ENTRY_FILE);
		add(entries, "state.json", ENTRY_FILE);
		add(entries, "values", ENTRY_DIR);
		return 0;
	}
	if (p->n == 4 && is(p, 2, "devices")) {
		add(entries, "device.json", ENTRY_FILE);
		add(entries, "values", ENTRY_DIR);
		return 0;
	}
	if (p->n == 5 && is(p, 2, "zones") && is(p, 4, "values")) {
		obj = zone_state(body, p->comp[3], &r);
		return obj ? values_list(zone_values, obj, entries) : r;
	}
	if (p->n == 5 && is(p, 2, "devices") && is(p, 4, "values")) {
		obj = element(body, "serialNo", p->comp[3], &r);
		return obj ? values_list(device_values, obj, entries) : r;
	}
	return -ENOENT;
}

static int render_object(json_t *body, GString *out)
{
	if (!json_is_object(body))
		return -EIO;
	return provider_render_json(body, out);
}

static int tado_render(const struct provider_path *p, json_t *body, GString *out)
{
	json_t *obj;
	int r = 0;

	if (p->n < 3 || !is(p, 0, "homes"))
		return -ENOENT;
	if (p->n == 3) {
		if (is(p, 2, "home.json") || is(p, 2, "state.json") || is(p, 2, "weather.json"))
			return render_object(body, out);
		return -ENOENT;
	}
	if (p->n == 5 && is(p, 2, "zones") && is(p, 4, "zone.json")) {
		obj = element(body, "id", p->comp[3], &r);
		return obj ? provider_render_json(obj, out) : r;
	}
	if (p->n == 5 && is(p, 2, "zones") && is(p, 4, "state.json")) {
		obj = zone_state(body, p->comp[3], &r);
		return obj ? provider_render_json(obj, out) : r;
	}
	if (p->n == 5 && is(p, 2, "devices") && is(p, 4, "device.json")) {
		obj = element(body, "serialNo", p->comp[3], &r);
		return obj ? provider_render_json(obj, out) : r;
	}
	if (p->n == 6 && is(p, 2, "zones") && is(p, 4, "values")) {
		obj = zone_state(body, p->comp[3], &r);
		return obj ? values_render(zone_values, obj, p->comp[5], out) : r;
	}
	if (p->n == 6 && is(p, 2, "devices") && is(p, 4, "values")) {
		obj = element(body, "serialNo", p->comp[3], &r);
		return obj ? values_render(device_values, obj, p->comp[5], out) : r;
	}
	return -ENOENT;
}

const struct provider tado_provider = {
    .name = "tado",
    .title = "tado°",
    .api_url = "https://my.tado.com/api/v2",
    .auth_url = "https://login.tado.com",
    .login = LOGIN_DEVICE_CODE,
    .client_id = "1bb50063-6b0c-4d11-bd99-387f4a91cc46",
    .scope = "offline_access",
    .device_authorize_path = "/oauth2/device_authorize",
    .token_path = "/oauth2/token",
    .verification_uri_needs_client_id = true,
    .quota_is_scarce = true,
    .default_ttl = 60,
    /* 30 days (tado's auth docs, shared/api/tado.md); each refresh issues a new one. */
    .refresh_token_lifetime_s = 30 * 24 * 3600,
    .source = tado_source,
    .list = tado_list,
    .render = tado_render,
};
