/* Tibber Data API: homes/<h>/home.json from the /homes list (there is no per-home call),
 * homes/<h>/devices/<d>/{device.json,values/,units.json} from one device-detail call each,
 * and homes/<h>/devices/<d>/history/<resolution>/<period>.{json,csv} from the device's
 * history call, one period's pages each (history.h): the resolutions and the retention
 * the device detail's supportedHistory names, the periods from the clock.
 *
 * New device categories and keys appear without notice: device.json passes the body
 * through untouched, and values/ shows whatever capabilities the device has, plus its
 * health (online, last_seen); units.json says each value's unit as the API does. */
#include <errno.h>
#include <string.h>

#include "history.h"
#include "provider.h"

#define HOUR 3600

/* The whole path grammar of the tree; the order of a directory's fixed children is the
 * order of their listing. */
enum route {
	R_ROOT,
	R_HOMES,
	R_HOME,
	R_HOME_JSON,
	R_DEVICES,
	R_DEVICE,
	R_DEVICE_JSON,
	R_DEVICE_VALUES,
	R_DEVICE_UNITS,
	R_DEVICE_VALUE,
	R_DEVICE_HISTORY,
	R_HISTORY_RESOLUTION,
	R_HISTORY_FILE,
	R_COUNT,
};

static const struct provider_route routes[R_COUNT] = {
    [R_ROOT] = {"", ENTRY_DIR},
    [R_HOMES] = {"homes", ENTRY_DIR},
    [R_HOME] = {"homes/*", ENTRY_DIR},
    [R_HOME_JSON] = {"homes/*/home.json", ENTRY_FILE},
    [R_DEVICES] = {"homes/*/devices", ENTRY_DIR},
    [R_DEVICE] = {"homes/*/devices/*", ENTRY_DIR},
    [R_DEVICE_JSON] = {"homes/*/devices/*/device.json", ENTRY_FILE},
    [R_DEVICE_VALUES] = {"homes/*/devices/*/values", ENTRY_DIR},
    [R_DEVICE_UNITS] = {"homes/*/devices/*/units.json", ENTRY_FILE},
    [R_DEVICE_VALUE] = {"homes/*/devices/*/values/*", ENTRY_FILE},
    [R_DEVICE_HISTORY] = {"homes/*/devices/*/history", ENTRY_DIR},
    [R_HISTORY_RESOLUTION] = {"homes/*/devices/*/history/*", ENTRY_DIR},
    [R_HISTORY_FILE] = {"homes/*/devices/*/history/*/*", ENTRY_FILE},
};

/* A path matched against the routes: its route and the ids in it. */
struct where {
	enum route route;
	const char *home;
	const char *device;
	const char *value; /* a value's name, or history's resolution */
	const char *file;  /* a period's file name */
};

static int where_of(const struct provider_path *p, struct where *w)
{
	const char *ids[PROVIDER_ROUTE_IDS] = {0};
	int r = provider_route_match(routes, R_COUNT, p, ids);

	if (r < 0)
		return r;
	*w = (struct where){(enum route)r, ids[0], ids[1], ids[2], ids[3]};
	return 0;
}

/* A file of history: its resolution, period and format. */
struct history_file {
	enum history_resolution res;
	struct history_period period;
	enum history_format format;
};

/* The period file @w names into @f. -ENOENT for a name that is no canonical period of a
 * resolution we know. */
static int history_file_of(const struct where *w, struct history_file *f)
{
	int r = history_resolution_parse(w->value);

	if (r < 0)
		return r;
	f->res = (enum history_resolution)r;
	return history_file_parse(f->res, w->file, &f->period, &f->format);
}

/* The device's history call for one period: since and until bound it (the API takes
 * both as inclusive and cuts them to the hour; the join keeps what lies inside). */
static int history_source(const struct where *w, const char *h, const char *d,
			  struct resource_ref *ref)
{
	struct history_file f;
	int r = history_file_of(w, &f);

	if (r < 0)
		return r;
	const char *res = history_resolution_name(f.res);
	g_autofree char *since = history_iso(f.period.start_s);
	g_autofree char *until = history_iso(f.period.end_s);
	ref->path = g_strdup_printf("/homes/%s/devices/%s/history?resolution=%s&since=%s&until=%s",
				    h, d, res, since, until);
	/* A vehicle sits under every home the token sees: fetch its history once. */
	ref->key = g_strdup_printf("history:%s:%s:%s", d, res, since);
	ref->paged = true;
	ref->immutable_at_s = f.period.end_s;
	ref->settle_s = HISTORY_SETTLE_S;
	return 0;
}

static int tibber_source(const struct provider_path *p, struct resource_ref *ref)
{
	g_autofree char *h = NULL;
	g_autofree char *d = NULL;
	struct where w;
	int r = where_of(p, &w);

	*ref = (struct resource_ref){0};
	if (r < 0)
		return r;
	switch (w.route) {
	case R_HOMES:
	case R_HOME_JSON:
		/* There is no per-home call: a home's file is its entry in the list. */
		ref->path = g_strdup("/homes");
		ref->ttl = HOUR;
		return 0;
	case R_ROOT:
		return 0;
	default:
		break;
	}
	h = provider_path_segment(w.home);
	if (!h)
		return -ENOENT;
	if (w.route == R_HOME)
		return 0;
	if (w.route == R_DEVICES) {
		ref->path = g_strconcat("/homes/", h, "/devices", NULL);
		ref->ttl = HOUR;
		return 0;
	}
	d = provider_path_segment(w.device);
	if (!d)
		return -ENOENT;
	if (w.route == R_DEVICE)
		return 0;
	if (w.route == R_HISTORY_FILE)
		return history_source(&w, h, d, ref);
	ref->path = g_strconcat("/homes/", h, "/devices/", d, NULL);
	/* Which periods a resolution lists follows from the day too. */
	if (w.route == R_HISTORY_RESOLUTION)
		ref->list_epoch = p->now_s > 0 ? (uint64_t)(p->now_s / 86400) : 0;
	/* A vehicle sits under every home the token sees: fetch it once. */
	ref->key = g_strconcat("device:", d, NULL);
	return 0;
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

/* ---- history: what supportedHistory says, the units of the metrics */

/* The retention in days @obj states (maxRetentionDays), or 0. */
static long retention_of(json_t *obj)
{
	json_t *v = json_is_object(obj) ? json_object_get(obj, "maxRetentionDays") : NULL;

	return json_is_integer(v) && json_integer_value(v) > 0
		   ? (long)MIN(json_integer_value(v), (json_int_t)HISTORY_MAX_DAYS)
		   : 0;
}

/* Whether @device supports history at resolution @res, and its retention in days in
 * *ret_days (0: not said). supportedHistory's shape is not documented beyond "an array
 * that is empty when history is not supported" (docs/api-usage): taken as it comes, an
 * array or {"resolutions": [...]}, of names or of {"resolution", "maxRetentionDays"}; the
 * retention from the element, supportedHistory or the device, whichever says it first. */
static bool history_supported(json_t *device, enum history_resolution res, long *ret_days)
{
	json_t *sh = json_object_get(device, "supportedHistory");
	json_t *list = json_is_array(sh) ? sh : json_object_get(sh, "resolutions");
	json_t *elem;
	size_t i;

	json_array_foreach (list, i, elem) {
		json_t *name = json_is_object(elem) ? json_object_get(elem, "resolution") : elem;

		if (history_resolution_parse(json_string_value(name)) != (int)res)
			continue;
		*ret_days = retention_of(elem);
		if (!*ret_days)
			*ret_days = retention_of(sh);
		if (!*ret_days)
			*ret_days = retention_of(device);
		return true;
	}
	return false;
}

/* The unit of a history metric, from its name: the page says none (UNCONFIRMED which
 * unit each has; these follow the device capabilities' units for the same quantities). */
static const char *metric_unit(const char *metric)
{
	static const struct {
		const char *part;
		const char *unit;
	} units[] = {
	    {"energy", "kWh"}, {"Energy", "kWh"},      {"power", "W"},
	    {"Power", "W"},    {"stateOfCharge", "%"}, {"StateOfCharge", "%"},
	    {"soc", "%"},      {"temperature", "°C"},  {"Temperature", "°C"},
	};

	for (size_t i = 0; i < G_N_ELEMENTS(units); i++)
		if (strstr(metric, units[i].part))
			return units[i].unit;
	return "";
}

static int history_list(const struct provider_path *p, const struct where *w, json_t *body,
			GPtrArray *entries)
{
	long days = 0;

	if (!json_is_object(body))
		return -EIO;
	if (w->route == R_DEVICE_HISTORY) {
		for (int r = 0; r < HISTORY_RESOLUTIONS; r++)
			if (history_supported(body, (enum history_resolution)r, &days))
				g_ptr_array_add(
				    entries,
				    provider_entry_new(history_resolution_name(r), ENTRY_DIR));
		return 0;
	}
	int r = history_resolution_parse(w->value);
	if (r < 0 || !history_supported(body, (enum history_resolution)r, &days))
		return -ENOENT;
	if (p->now_s > 0)
		history_list_periods((enum history_resolution)r, history_oldest(p, days), p->now_s,
				     entries);
	return 0;
}

static int history_render(const struct where *w, json_t *body, GString *out)
{
	struct history_file f;
	int r = history_file_of(w, &f);

	if (r < 0)
		return r;
	json_t *points = history_join(body, &f.period);
	if (!points)
		return -EIO;
	r = f.format == HISTORY_JSON ? history_render_json(f.res, &f.period, points, out)
				     : history_render_csv(points, metric_unit, out);
	json_decref(points);
	return r;
}

/* ---- values: a device's capabilities, then its health */

/* Values that are no capability: what a monitoring user checks first. A capability of
 * the same id wins (Tibber's names have dots, these have none). */
enum health { HEALTH_ONLINE, HEALTH_LAST_SEEN, HEALTH_COUNT };
static const char *const health_names[HEALTH_COUNT] = {"online", "last_seen"};

/* The isOnline attribute's value or status.lastSeen of @device (borrowed), or NULL. */
static json_t *health_value(json_t *device, enum health which)
{
	json_t *attr, *v = NULL;
	size_t i;

	if (which == HEALTH_LAST_SEEN) {
		v = provider_json_lookup(device, "status.lastSeen");
	} else {
		json_array_foreach (json_object_get(device, "attributes"), i, attr) {
			const char *id = json_string_value(json_object_get(attr, "id"));
			if (id && strcmp(id, "isOnline") == 0) {
				v = json_object_get(attr, "value");
				break;
			}
		}
	}
	return v && !json_is_object(v) && !json_is_array(v) ? v : NULL;
}

/* A value file of a device: its name, value and unit (all borrowed from the body). */
struct value {
	const char *name;
	json_t *value;
	const char *unit; /* "" for none */
};

/* Calls @fn for each value of @device, in listing order, until it returns false:
 * capabilities with a scalar value (first of each id), then the health values. */
static void values_each(json_t *device, bool (*fn)(const struct value *v, void *ctx), void *ctx)
{
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	json_t *cap;
	size_t i;

	json_array_foreach (json_object_get(device, "capabilities"), i, cap) {
		json_t *id = json_is_object(cap) ? json_object_get(cap, "id") : NULL;
		json_t *value = id ? json_object_get(cap, "value") : NULL;
		const char *unit = json_string_value(json_object_get(cap, "unit"));
		const char *name = json_string_value(id);

		if (!name || !*name || g_hash_table_contains(seen, name))
			continue;
		g_hash_table_add(seen, (char *)name);
		if (!value || json_is_object(value) || json_is_array(value))
			continue;
		if (!fn(&(struct value){name, value, unit ? unit : ""}, ctx))
			return;
	}
	for (int h = 0; h < HEALTH_COUNT; h++) {
		json_t *value = health_value(device, (enum health)h);

		if (!value || g_hash_table_contains(seen, health_names[h]))
			continue;
		if (!fn(&(struct value){health_names[h], value, ""}, ctx))
			return;
	}
}

static bool value_add(const struct value *v, void *entries)
{
	g_ptr_array_add(entries, provider_entry_new(v->name, ENTRY_FILE));
	return true;
}

static bool unit_add(const struct value *v, void *units)
{
	json_object_set_new(units, v->name, json_string(v->unit));
	return true;
}

struct value_find {
	const char *name;
	json_t *value;
};

static bool value_match(const struct value *v, void *ctx)
{
	struct value_find *f = ctx;

	if (strcmp(v->name, f->name) != 0)
		return true;
	f->value = v->value;
	return false;
}

static int tibber_list(const struct provider_path *p, json_t *body, GPtrArray *entries)
{
	struct where w;
	json_t *arr;
	json_t *elem;
	size_t i;
	int r = where_of(p, &w);

	if (r < 0)
		return r;
	switch (w.route) {
	case R_HOMES:
	case R_DEVICES:
		arr = list_array(body, w.route == R_HOMES ? "homes" : "devices");
		if (!arr)
			return -EIO;
		json_array_foreach (arr, i, elem) {
			g_autofree char *id = provider_json_id(elem, "id");

			if (id && *id)
				g_ptr_array_add(entries, provider_entry_new(id, ENTRY_DIR));
		}
		return 0;
	case R_DEVICE_VALUES:
		if (!json_is_object(body))
			return -EIO;
		values_each(body, value_add, entries);
		return 0;
	case R_DEVICE_HISTORY:
	case R_HISTORY_RESOLUTION:
		return history_list(p, &w, body, entries);
	case R_DEVICE:
		provider_route_children(routes, R_COUNT, w.route, entries);
		/* history_days=0: no history. */
		if (p->history_from_s > p->now_s && entries->len &&
		    strcmp(((struct provider_entry *)entries->pdata[entries->len - 1])->name,
			   "history") == 0)
			g_ptr_array_remove_index(entries, entries->len - 1);
		return 0;
	default:
		if (routes[w.route].type != ENTRY_DIR)
			return -ENOENT;
		provider_route_children(routes, R_COUNT, w.route, entries);
		return 0;
	}
}

static int tibber_render(const struct provider_path *p, json_t *body, GString *out)
{
	struct value_find f = {0};
	struct where w;
	json_t *units;
	int r = where_of(p, &w);

	if (r < 0)
		return r;
	switch (w.route) {
	case R_HOME_JSON: {
		json_t *arr = list_array(body, "homes");
		json_t *home;

		if (!arr)
			return -EIO;
		home = provider_find_by_id(arr, "id", w.home);
		return home ? provider_render_json(home, out) : -ENOENT;
	}
	case R_DEVICE_JSON:
		return json_is_object(body) ? provider_render_json(body, out) : -EIO;
	case R_DEVICE_VALUE:
		if (!json_is_object(body))
			return -EIO;
		f.name = w.value;
		values_each(body, value_match, &f);
		return f.value ? provider_render_scalar(f.value, out) : -ENOENT;
	case R_HISTORY_FILE:
		return history_render(&w, body, out);
	case R_DEVICE_UNITS:
		if (!json_is_object(body))
			return -EIO;
		units = json_object();
		values_each(body, unit_add, units);
		r = provider_render_json(units, out);
		json_decref(units);
		return r;
	default:
		return -ENOENT;
	}
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
