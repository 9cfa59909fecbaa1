/* tado°: the REST API at my.tado.com/api/v2 mapped to homes/<h>/{home,state,weather}.json,
 * zones/<z>/ and devices/<serial>/; for a tado X home, its rooms and devices from
 * hops.tado.com under the same names.
 *
 * The daily quota is tiny (100 calls without a subscription), so every file of a kind
 * is cut from one aggregate response: all zones' states from one zoneStates call (tado X:
 * one rooms call), all devices from one devices call (tado X: roomsAndDevices).
 *
 * Which host a home's zones and devices come from depends on the home's generation, so
 * those paths have a context: first the home's zone list on my.tado.com (which pre-X
 * homes need anyway); only when it is empty, as it always is for a tado X home, the home
 * itself, whose "generation" says LINE_X. A tado X room shows the value names of a pre-X
 * zone, so that one monitoring script reads both. */
#include <errno.h>
#include <string.h>

#include "provider.h"
#include "tado_day.h"

#define HOUR 3600

/* The whole path grammar of the tree; the order of a directory's fixed children is the
 * order of their listing. */
enum route {
	R_ROOT,
	R_HOMES,
	R_HOME,
	R_HOME_JSON,
	R_STATE_JSON,
	R_WEATHER_JSON,
	R_ZONES,
	R_DEVICES,
	R_ZONE,
	R_ZONE_JSON,
	R_ZONE_STATE,
	R_ZONE_VALUES,
	R_ZONE_UNITS,
	R_ZONE_VALUE,
	R_ZONE_HISTORY,
	R_ZONE_DAY,
	R_DEVICE,
	R_DEVICE_JSON,
	R_DEVICE_VALUES,
	R_DEVICE_UNITS,
	R_DEVICE_VALUE,
	R_COUNT,
};

static const struct provider_route routes[R_COUNT] = {
    [R_ROOT] = {"", ENTRY_DIR},
    [R_HOMES] = {"homes", ENTRY_DIR},
    [R_HOME] = {"homes/*", ENTRY_DIR},
    [R_HOME_JSON] = {"homes/*/home.json", ENTRY_FILE},
    [R_STATE_JSON] = {"homes/*/state.json", ENTRY_FILE},
    [R_WEATHER_JSON] = {"homes/*/weather.json", ENTRY_FILE},
    [R_ZONES] = {"homes/*/zones", ENTRY_DIR},
    [R_DEVICES] = {"homes/*/devices", ENTRY_DIR},
    [R_ZONE] = {"homes/*/zones/*", ENTRY_DIR},
    [R_ZONE_JSON] = {"homes/*/zones/*/zone.json", ENTRY_FILE},
    [R_ZONE_STATE] = {"homes/*/zones/*/state.json", ENTRY_FILE},
    [R_ZONE_VALUES] = {"homes/*/zones/*/values", ENTRY_DIR},
    [R_ZONE_UNITS] = {"homes/*/zones/*/units.json", ENTRY_FILE},
    [R_ZONE_VALUE] = {"homes/*/zones/*/values/*", ENTRY_FILE},
    [R_ZONE_HISTORY] = {"homes/*/zones/*/history", ENTRY_DIR},
    [R_ZONE_DAY] = {"homes/*/zones/*/history/*", ENTRY_FILE},
    [R_DEVICE] = {"homes/*/devices/*", ENTRY_DIR},
    [R_DEVICE_JSON] = {"homes/*/devices/*/device.json", ENTRY_FILE},
    [R_DEVICE_VALUES] = {"homes/*/devices/*/values", ENTRY_DIR},
    [R_DEVICE_UNITS] = {"homes/*/devices/*/units.json", ENTRY_FILE},
    [R_DEVICE_VALUE] = {"homes/*/devices/*/values/*", ENTRY_FILE},
};

/* A path matched against the routes: its route and the ids in it. */
struct where {
	enum route route;
	const char *home;
	const char *id;	   /* zone or device */
	const char *value; /* the name below values/ */
};

static int where_of(const struct provider_path *p, struct where *w)
{
	const char *ids[PROVIDER_ROUTE_IDS] = {0};
	int r = provider_route_match(routes, R_COUNT, p, ids);

	if (r < 0)
		return r;
	*w = (struct where){(enum route)r, ids[0], ids[1], ids[2]};
	return 0;
}

static bool is_zone_route(enum route r)
{
	return r == R_ZONES || (r >= R_ZONE_JSON && r <= R_ZONE_VALUE);
}

/* A zone's history: made of its day reports, which only a pre-X home has. */
static bool is_history_route(enum route r)
{
	return r == R_ZONE_HISTORY || r == R_ZONE_DAY;
}

static bool is_device_route(enum route r)
{
	return r == R_DEVICES || (r >= R_DEVICE_JSON && r <= R_DEVICE_VALUE);
}

/* ---- values: one scalar of a zone's state or a device a file */

enum value_kind {
	VALUE_PLAIN,	/* the scalar as the API sends it */
	VALUE_NOT_NULL, /* true/false: whether the source is non-null */
	VALUE_EQUALS,	/* true/false: whether the source is the string @arg */
	VALUE_LINK,	/* tado X's CONNECTED/DISCONNECTED as a pre-X link says it */
};

struct value_def {
	const char *name;
	const char *source; /* dotted path inside the object */
	enum value_kind kind;
	const char *arg;
	const char *unit; /* units.json's; NULL: none */
};

static const struct value_def zone_values[] = {
    {"inside_temperature", "sensorDataPoints.insideTemperature.celsius", VALUE_PLAIN, NULL, "°C"},
    {"humidity", "sensorDataPoints.humidity.percentage", VALUE_PLAIN, NULL, "%"},
    {"heating_power", "activityDataPoints.heatingPower.percentage", VALUE_PLAIN, NULL, "%"},
    {"target_temperature", "setting.temperature.celsius", VALUE_PLAIN, NULL, "°C"},
    {"power", "setting.power", VALUE_PLAIN, NULL, NULL},
    {"mode", "tadoMode", VALUE_PLAIN, NULL, NULL},
    {"link", "link.state", VALUE_PLAIN, NULL, NULL},
    {"window_open", "openWindow", VALUE_NOT_NULL, NULL, NULL},
    {"overlay_active", "overlay", VALUE_NOT_NULL, NULL, NULL},
    {NULL, NULL, VALUE_PLAIN, NULL, NULL},
};

/* A tado X room (PyTado's line_x RoomState) under the names of a pre-X zone. */
static const struct value_def room_values[] = {
    {"inside_temperature", "sensorDataPoints.insideTemperature.value", VALUE_PLAIN, NULL, "°C"},
    {"humidity", "sensorDataPoints.humidity.percentage", VALUE_PLAIN, NULL, "%"},
    {"heating_power", "heatingPower.percentage", VALUE_PLAIN, NULL, "%"},
    {"target_temperature", "setting.temperature.value", VALUE_PLAIN, NULL, "°C"},
    {"power", "setting.power", VALUE_PLAIN, NULL, NULL},
    {"link", "connection.state", VALUE_LINK, NULL, NULL},
    {"window_open", "openWindow", VALUE_NOT_NULL, NULL, NULL},
    {"overlay_active", "manualControlTermination", VALUE_NOT_NULL, NULL, NULL},
    {NULL, NULL, VALUE_PLAIN, NULL, NULL},
};

static const struct value_def device_values[] = {
    {"battery", "batteryState", VALUE_PLAIN, NULL, NULL},
    {"connected", "connectionState.value", VALUE_PLAIN, NULL, NULL},
    {"firmware", "currentFwVersion", VALUE_PLAIN, NULL, NULL},
    {"type", "deviceType", VALUE_PLAIN, NULL, NULL},
    {NULL, NULL, VALUE_PLAIN, NULL, NULL},
};

/* A tado X device (PyTado's line_x Device): the pre-X names, and what only X tells. */
static const struct value_def x_device_values[] = {
    {"battery", "batteryState", VALUE_PLAIN, NULL, NULL},
    {"connected", "connection.state", VALUE_EQUALS, "CONNECTED", NULL},
    {"firmware", "firmwareVersion", VALUE_PLAIN, NULL, NULL},
    {"type", "type", VALUE_PLAIN, NULL, NULL},
    {"temperature_as_measured", "temperatureAsMeasured", VALUE_PLAIN, NULL, "°C"},
    {"temperature_offset", "temperatureOffset", VALUE_PLAIN, NULL, "°C"},
    {"child_lock", "childLockEnabled", VALUE_PLAIN, NULL, NULL},
    {NULL, NULL, VALUE_PLAIN, NULL, NULL},
};

/* The value @def of @obj (a new reference), or NULL when @obj has no such scalar. */
static json_t *value_source(json_t *obj, const struct value_def *def)
{
	json_t *v = provider_json_lookup(obj, def->source);
	const char *s;

	if (!v)
		return NULL;
	switch (def->kind) {
	case VALUE_NOT_NULL:
		return json_boolean(!json_is_null(v));
	case VALUE_EQUALS:
		return json_boolean(json_is_string(v) &&
				    strcmp(json_string_value(v), def->arg) == 0);
	case VALUE_LINK:
		s = json_string_value(v);
		if (s && strcmp(s, "CONNECTED") == 0)
			return json_string("ONLINE");
		if (s && strcmp(s, "DISCONNECTED") == 0)
			return json_string("OFFLINE");
		break;
	case VALUE_PLAIN:
		break;
	}
	if (json_is_object(v) || json_is_array(v))
		return NULL;
	return json_incref(v);
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
	for (; defs->name; defs++) {
		json_t *v = value_source(obj, defs);
		if (v)
			g_ptr_array_add(entries, provider_entry_new(defs->name, ENTRY_FILE));
		json_decref(v);
	}
	return 0;
}

static int values_render(const struct value_def *defs, json_t *obj, const char *name, GString *out)
{
	const struct value_def *def = value_find(defs, name);
	json_t *v;
	int r;

	if (!def)
		return -ENOENT;
	if (!json_is_object(obj))
		return -EIO;
	v = value_source(obj, def);
	if (!v)
		return -ENOENT;
	r = provider_render_scalar(v, out);
	json_decref(v);
	return r;
}

/* units.json: {"<value>": "<unit>"} for every value @obj has, "" for none. */
static int units_render(const struct value_def *defs, json_t *obj, GString *out)
{
	json_t *units;
	int r;

	if (!json_is_object(obj))
		return -EIO;
	units = json_object();
	for (; defs->name; defs++) {
		json_t *v = value_source(obj, defs);
		if (v)
			json_object_set_new(units, defs->name,
					    json_string(defs->unit ? defs->unit : ""));
		json_decref(v);
	}
	r = provider_render_json(units, out);
	json_decref(units);
	return r;
}

/* ---- where each path's bytes come from */

/* A new ref to "/homes/{h}@suffix" on my.tado.com, or NULL for an id that is no segment. */
static struct resource_ref *home_ref_new(const char *h, const char *suffix, int ttl)
{
	g_autofree char *seg = provider_path_segment(h);
	struct resource_ref *ref;

	if (!seg)
		return NULL;
	ref = g_new0(struct resource_ref, 1);
	ref->path = g_strconcat("/homes/", seg, suffix, NULL);
	ref->ttl = ttl;
	return ref;
}

/* Moves the fields of @from (freed) into @ref: -ENOENT when @from is NULL. */
static int ref_take(struct resource_ref *ref, struct resource_ref *from)
{
	if (!from)
		return -ENOENT;
	*ref = *from;
	g_free(from);
	return 0;
}

static int tado_source(const struct provider_path *p, struct resource_ref *ref)
{
	struct where w;
	int r = where_of(p, &w);

	*ref = (struct resource_ref){0};
	if (r < 0)
		return r;
	switch (w.route) {
	case R_HOMES:
		ref->path = g_strdup("/me");
		ref->ttl = HOUR;
		return 0;
	case R_HOME_JSON:
		return ref_take(ref, home_ref_new(w.home, "", HOUR));
	case R_STATE_JSON:
		return ref_take(ref, home_ref_new(w.home, "/state", 0));
	case R_WEATHER_JSON:
		return ref_take(ref, home_ref_new(w.home, "/weather", 600));
	case R_ZONE_VALUE:
		if (!value_find(zone_values, w.value) && !value_find(room_values, w.value))
			return -ENOENT;
		break;
	case R_DEVICE_VALUE:
		if (!value_find(device_values, w.value) && !value_find(x_device_values, w.value))
			return -ENOENT;
		break;
	case R_ZONE_DAY: {
		char date[TADO_DAY_DATE_LEN];
		enum history_format format;

		if (tado_day_name_parse(w.value, date, &format) < 0)
			return -ENOENT;
	}
		/* fall through */
	case R_ZONE_HISTORY:
		/* The zone list says whether the zone has day reports (not hot water), then
		 * the home whether it is pre-X and when its days begin and end. */
		ref->context = home_ref_new(w.home, "/zones", HOUR);
		return ref->context ? 0 : -ENOENT;
	default:
		break;
	}
	if (!is_zone_route(w.route) && !is_device_route(w.route))
		return 0; /* a directory of fixed names */
	ref->context = home_ref_new(w.home, "/zones", HOUR);
	return ref->context ? 0 : -ENOENT;
}

/* Sets @ref for zone @w's history in pre-X home @home: the directory is listed from the
 * home (its time zone, its dateCreated) and the clock; a day file is the day report of
 * the day it names, final once the home's day and tado's 15 minutes are over. */
static int source_history(const struct provider_path *p, const struct where *w, json_t *home,
			  struct resource_ref *ref)
{
	char date[TADO_DAY_DATE_LEN];
	enum history_format format;
	g_autofree char *zone = provider_path_segment(w->id);
	g_autofree char *suffix = NULL;
	int r;

	if (w->route == R_ZONE_HISTORY) {
		r = ref_take(ref, home_ref_new(w->home, "", HOUR));
		if (r == 0)
			ref->list_epoch = (uint64_t)MAX(p->now_s, 0) / HOUR + 1; /* the hour */
		return r;
	}
	if (!zone || tado_day_name_parse(w->value, date, &format) < 0)
		return -ENOENT;
	suffix = g_strconcat("/zones/", zone, "/dayReport?date=", date, NULL);
	r = ref_take(ref, home_ref_new(w->home, suffix, 0));
	if (r == 0)
		ref->immutable_at_s = tado_day_final_at(home, date);
	return r;
}

/* Sets @ref for a pre-X home: my.tado.com's aggregates. */
static int source_pre_x(const struct where *w, struct resource_ref *ref)
{
	if (w->route == R_ZONES || w->route == R_ZONE_JSON)
		return ref_take(ref, home_ref_new(w->home, "/zones", HOUR));
	if (is_zone_route(w->route))
		return ref_take(ref, home_ref_new(w->home, "/zoneStates", 0));
	return ref_take(ref, home_ref_new(w->home, "/devices", HOUR));
}

/* Sets @ref for a tado X home: hops.tado.com's aggregates. */
static int source_x(const struct where *w, struct resource_ref *ref)
{
	bool states = is_zone_route(w->route) && w->route != R_ZONES && w->route != R_ZONE_JSON;
	int r;

	/* tado X has no day reports: its rooms' history/ stays empty. */
	if (w->route == R_ZONE_HISTORY)
		return 0;
	if (w->route == R_ZONE_DAY)
		return -ENOENT;
	r = ref_take(
	    ref, home_ref_new(w->home, states ? "/rooms" : "/roomsAndDevices", states ? 0 : HOUR));
	if (r < 0)
		return r;
	ref->base = API_BASE_SECOND;
	/* The same path names another resource on my.tado.com. */
	ref->key = g_strconcat("hops:", ref->path, NULL);
	return 0;
}

static int tado_source_in(const struct provider_path *p, json_t *context, struct resource_ref *ref,
			  char **note)
{
	struct where w;
	int r = where_of(p, &w);
	json_t *gen;

	*ref = (struct resource_ref){0};
	if (r < 0)
		return r;
	if (!is_zone_route(w.route) && !is_device_route(w.route) && !is_history_route(w.route))
		return -ENOENT;
	if (json_is_array(context) && is_history_route(w.route)) {
		json_t *zone = provider_find_by_id(context, "id", w.id);
		const char *type = json_string_value(json_object_get(zone, "type"));

		if (json_array_size(context) > 0 && !zone)
			return -ENOENT;
		/* tado has no day reports of a hot water zone (its spec): an empty history/. */
		if (type && strcmp(type, "HOT_WATER") == 0)
			return w.route == R_ZONE_HISTORY ? 0 : -ENOENT;
		ref->context = home_ref_new(w.home, "", HOUR);
		return ref->context ? 0 : -ENOENT;
	}
	if (json_is_array(context)) {
		/* The zone list: a home with zones is pre-X. An empty one is a pre-X home
		 * without zones or a tado X home: the home's generation tells. */
		if (json_array_size(context) > 0)
			return source_pre_x(&w, ref);
		ref->context = home_ref_new(w.home, "", HOUR);
		return ref->context ? 0 : -ENOENT;
	}
	if (!json_is_object(context))
		return -EIO;
	gen = json_object_get(context, "generation");
	/* Homes made before tado X may not say: they are pre-X. */
	if (!gen || json_is_null(gen) ||
	    (json_is_string(gen) && strcmp(json_string_value(gen), "PRE_LINE_X") == 0))
		return is_history_route(w.route) ? source_history(p, &w, context, ref)
						 : source_pre_x(&w, ref);
	if (json_is_string(gen) && strcmp(json_string_value(gen), "LINE_X") == 0)
		return source_x(&w, ref);
	g_autofree char *home = provider_quote(w.home, 32);
	g_autofree char *text = json_is_string(gen) ? g_strdup(json_string_value(gen)) : NULL;
	g_autofree char *said = provider_quote(text ? text : "(not a string)", 32);
	*note = g_strdup_printf("home %s is of tado generation \"%s\", which this smarthomefs "
				"does not know: its zones and devices are not shown",
				home, said);
	return -EPROTONOSUPPORT;
}

/* ---- the bodies, pre-X or tado X, told apart by their shape */

/* Appends one directory per element of @arr, named by its @key id. */
static void list_ids(json_t *arr, const char *key, GPtrArray *entries)
{
	size_t i;
	json_t *elem;

	json_array_foreach(arr, i, elem)
	{
		g_autofree char *id = provider_json_id(elem, key);

		if (id && *id)
			g_ptr_array_add(entries, provider_entry_new(id, ENTRY_DIR));
	}
}

/* Zone @z of a zone list (pre-X) or room @z of a roomsAndDevices body (tado X); *r
 * -ENOENT or -EIO when there is none. */
static json_t *zone_of(json_t *body, const char *z, int *r)
{
	json_t *zone;

	if (json_is_array(body))
		zone = provider_find_by_id(body, "id", z);
	else if (json_is_object(body) && json_is_array(json_object_get(body, "rooms")))
		zone = provider_find_by_id(json_object_get(body, "rooms"), "roomId", z);
	else
		return *r = -EIO, NULL;
	if (!zone)
		*r = -ENOENT;
	return zone;
}

/* The state of zone @z in a zoneStates body (pre-X) or a rooms body (tado X), with the
 * value names that fit it in *defs; *r -ENOENT or -EIO when there is none. */
static json_t *zone_state_of(json_t *body, const char *z, const struct value_def **defs, int *r)
{
	json_t *states = json_is_object(body) ? json_object_get(body, "zoneStates") : NULL;
	json_t *state;

	if (json_is_array(body)) {
		*defs = room_values;
		state = provider_find_by_id(body, "id", z);
	} else if (json_is_object(states)) {
		*defs = zone_values;
		state = json_object_get(states, z);
	} else {
		return *r = -EIO, NULL;
	}
	if (!state)
		return *r = -ENOENT, NULL;
	if (!json_is_object(state))
		return *r = -EIO, NULL;
	return state;
}

/* Calls @fn for each device of a roomsAndDevices body: the rooms' and the others. */
static json_t *x_devices_each(json_t *body, bool (*fn)(json_t *dev, void *ctx), void *ctx)
{
	json_t *room, *dev;
	size_t i, j;

	json_array_foreach (json_object_get(body, "rooms"), i, room) {
		json_array_foreach (json_object_get(room, "devices"), j, dev) {
			if (!fn(dev, ctx))
				return dev;
		}
	}
	json_array_foreach (json_object_get(body, "otherDevices"), i, dev) {
		if (!fn(dev, ctx))
			return dev;
	}
	return NULL;
}

static bool x_device_add(json_t *dev, void *entries)
{
	g_autofree char *id = provider_json_id(dev, "serialNumber");

	if (id && *id)
		g_ptr_array_add(entries, provider_entry_new(id, ENTRY_DIR));
	return true;
}

static bool x_device_other(json_t *dev, void *serial)
{
	g_autofree char *id = provider_json_id(dev, "serialNumber");

	return !id || strcmp(id, serial) != 0;
}

/* Device @serial of a devices body (pre-X) or a roomsAndDevices body (tado X), with the
 * value names that fit it in *defs; *r -ENOENT or -EIO when there is none. */
static json_t *device_of(json_t *body, const char *serial, const struct value_def **defs, int *r)
{
	json_t *dev;

	if (json_is_array(body)) {
		*defs = device_values;
		dev = provider_find_by_id(body, "serialNo", serial);
	} else if (json_is_object(body) && json_is_array(json_object_get(body, "rooms"))) {
		*defs = x_device_values;
		dev = x_devices_each(body, x_device_other, (void *)serial);
	} else {
		return *r = -EIO, NULL;
	}
	if (!dev)
		*r = -ENOENT;
	return dev;
}

static int tado_list(const struct provider_path *p, json_t *body, GPtrArray *entries)
{
	const struct value_def *defs = NULL;
	struct where w;
	json_t *obj;
	int r = where_of(p, &w);

	if (r < 0)
		return r;
	if (routes[w.route].type != ENTRY_DIR)
		return -ENOENT;
	switch (w.route) {
	case R_HOMES:
		if (!json_is_object(body) || !json_is_array(json_object_get(body, "homes")))
			return -EIO;
		list_ids(json_object_get(body, "homes"), "id", entries);
		return 0;
	case R_ZONES:
	case R_DEVICES:
		if (json_is_array(body)) {
			list_ids(body, w.route == R_ZONES ? "id" : "serialNo", entries);
		} else if (json_is_object(body) && json_is_array(json_object_get(body, "rooms"))) {
			if (w.route == R_ZONES)
				list_ids(json_object_get(body, "rooms"), "roomId", entries);
			else
				x_devices_each(body, x_device_add, entries);
		} else {
			return -EIO;
		}
		return 0;
	case R_ZONE_VALUES:
		obj = zone_state_of(body, w.id, &defs, &r);
		return obj ? values_list(defs, obj, entries) : r;
	case R_ZONE_HISTORY:
		/* Listed from the pre-X home; a tado X room's is static and empty. */
		if (body && !json_is_object(body))
			return -EIO;
		if (body)
			tado_day_list(body, p->history_from_s, p->now_s, entries);
		return 0;
	case R_DEVICE_VALUES:
		obj = device_of(body, w.id, &defs, &r);
		return obj ? values_list(defs, obj, entries) : r;
	default:
		provider_route_children(routes, R_COUNT, w.route, entries);
		return 0;
	}
}

static int tado_render(const struct provider_path *p, json_t *body, GString *out)
{
	const struct value_def *defs = NULL;
	struct where w;
	json_t *obj;
	int r = where_of(p, &w);

	if (r < 0)
		return r;
	switch (w.route) {
	case R_HOME_JSON:
	case R_STATE_JSON:
	case R_WEATHER_JSON:
		return json_is_object(body) ? provider_render_json(body, out) : -EIO;
	case R_ZONE_JSON:
		obj = zone_of(body, w.id, &r);
		return obj ? provider_render_json(obj, out) : r;
	case R_ZONE_STATE:
		obj = zone_state_of(body, w.id, &defs, &r);
		return obj ? provider_render_json(obj, out) : r;
	case R_ZONE_VALUE:
		obj = zone_state_of(body, w.id, &defs, &r);
		return obj ? values_render(defs, obj, w.value, out) : r;
	case R_ZONE_UNITS:
		obj = zone_state_of(body, w.id, &defs, &r);
		return obj ? units_render(defs, obj, out) : r;
	case R_DEVICE_JSON:
		obj = device_of(body, w.id, &defs, &r);
		return obj ? provider_render_json(obj, out) : r;
	case R_DEVICE_VALUE:
		obj = device_of(body, w.id, &defs, &r);
		return obj ? values_render(defs, obj, w.value, out) : r;
	case R_DEVICE_UNITS:
		obj = device_of(body, w.id, &defs, &r);
		return obj ? units_render(defs, obj, out) : r;
	case R_ZONE_DAY: {
		char date[TADO_DAY_DATE_LEN];
		enum history_format format;

		if (tado_day_name_parse(w.value, date, &format) < 0)
			return -ENOENT;
		if (!json_is_object(body))
			return -EIO;
		return format == HISTORY_CSV ? tado_day_render_csv(body, out)
					     : provider_render_json(body, out);
	}
	default:
		return -ENOENT;
	}
}

const struct provider tado_provider = {
    .name = "tado",
    .title = "tado°",
    .api_url = "https://my.tado.com/api/v2",
    .second_api_url = "https://hops.tado.com",
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
    .source_in = tado_source_in,
    .list = tado_list,
    .render = tado_render,
};
