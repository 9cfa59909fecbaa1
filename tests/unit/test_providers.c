/* The providers' mappings, from the API bodies in data/ (shaped as the API docs show). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <glib.h>
#include <jansson.h>

#include "provider.h"

static json_t *fixture(const char *name)
{
	g_autofree char *file = g_build_filename(TEST_SRCDIR, "data", name, NULL);
	json_error_t error;
	json_t *json = json_load_file(file, 0, &error);

	if (!json)
		g_error("%s: %s", file, error.text);
	return json;
}

/* Splits "homes/1001/zones" into a provider_path (of a static array of the test's). */
static struct provider_path path_of(const char *s, char ***keep)
{
	*keep = *s ? g_strsplit(s, "/", -1) : g_new0(char *, 1);
	return (struct provider_path){.comp = (const char *const *)*keep,
				      .n = g_strv_length(*keep)};
}

/* The names listed for @path from @body at @now_s with history from @from_s, joined by
 * " " ("/" after a directory). */
static char *list_at(const struct provider *pr, const char *path, json_t *body, gint64 now_s,
		     gint64 from_s, int *r)
{
	g_auto(GStrv) comp = NULL;
	struct provider_path p = path_of(path, &comp);

	p.now_s = now_s;
	p.history_from_s = from_s;
	g_autoptr(GPtrArray) entries = provider_entries_new();
	GString *out = g_string_new(NULL);

	*r = pr->list(&p, body, entries);
	for (guint i = 0; i < entries->len; i++) {
		struct provider_entry *e = g_ptr_array_index(entries, i);

		g_string_append_printf(out, "%s%s%s", i ? " " : "", e->name,
				       e->type == ENTRY_DIR ? "/" : "");
	}
	return g_string_free(out, FALSE);
}

static char *list(const struct provider *pr, const char *path, json_t *body, int *r)
{
	return list_at(pr, path, body, 0, 0, r);
}

static char *render(const struct provider *pr, const char *path, json_t *body, int *r)
{
	g_auto(GStrv) comp = NULL;
	struct provider_path p = path_of(path, &comp);
	GString *out = g_string_new(NULL);

	*r = pr->render(&p, body, out);
	return g_string_free(out, FALSE);
}

static int source(const struct provider *pr, const char *path, struct resource_ref *ref)
{
	g_auto(GStrv) comp = NULL;
	struct provider_path p = path_of(path, &comp);

	return pr->source(&p, ref);
}

/* source(), then source_in() with each of the NULL-terminated context bodies for as long
 * as the provider asks for one, as the session does with the bodies it fetches. The
 * context the provider asked for last goes to @asked ("" when it asked for none). */
static int resolve(const struct provider *pr, const char *path, struct resource_ref *ref,
		   char **asked, char **note, ...)
{
	g_auto(GStrv) comp = NULL;
	struct provider_path p = path_of(path, &comp);
	int r = pr->source(&p, ref);
	va_list ap;

	*asked = g_strdup("");
	va_start(ap, note);
	while (r == 0 && ref->context) {
		json_t *body = va_arg(ap, json_t *);
		struct resource_ref *context = g_steal_pointer(&ref->context);

		g_free(*asked);
		*asked = g_strdup(context->path);
		resource_ref_clear(context);
		g_free(context);
		resource_ref_clear(ref);
		if (!body)
			break;
		r = pr->source_in(&p, body, ref, note);
	}
	va_end(ap);
	return r;
}

#define assert_resolve(pr, pth, exp_path, exp_key, exp_base, ...)                                  \
	do {                                                                                       \
		struct resource_ref ref_ = {0};                                                    \
		g_autofree char *asked_ = NULL;                                                    \
		g_autofree char *note_ = NULL;                                                     \
		g_assert_cmpint(resolve(pr, pth, &ref_, &asked_, &note_, __VA_ARGS__, NULL), ==,   \
				0);                                                                \
		g_assert_cmpstr(ref_.path, ==, exp_path);                                          \
		g_assert_cmpstr(ref_.key, ==, exp_key);                                            \
		g_assert_cmpint(ref_.base, ==, exp_base);                                          \
		g_assert_null(note_);                                                              \
		resource_ref_clear(&ref_);                                                         \
	} while (0)

#define assert_list(pr, pth, body, expected)                                                       \
	do {                                                                                       \
		int r_;                                                                            \
		g_autofree char *got_ = list(pr, pth, body, &r_);                                  \
		g_assert_cmpint(r_, ==, 0);                                                        \
		g_assert_cmpstr(got_, ==, expected);                                               \
	} while (0)

#define assert_render(pr, pth, body, expected)                                                     \
	do {                                                                                       \
		int r_;                                                                            \
		g_autofree char *got_ = render(pr, pth, body, &r_);                                \
		g_assert_cmpint(r_, ==, 0);                                                        \
		g_assert_cmpstr(got_, ==, expected);                                               \
	} while (0)

#define assert_source(pr, pth, exp_path, exp_key, exp_ttl)                                         \
	do {                                                                                       \
		struct resource_ref ref_;                                                          \
		g_assert_cmpint(source(pr, pth, &ref_), ==, 0);                                    \
		g_assert_cmpstr(ref_.path, ==, exp_path);                                          \
		g_assert_cmpstr(ref_.key, ==, exp_key);                                            \
		g_assert_cmpint(ref_.ttl, ==, exp_ttl);                                            \
		resource_ref_clear(&ref_);                                                         \
	} while (0)

/* --- the table and the helpers --- */

static void test_table_lists_every_provider_once(void)
{
	const struct provider *const *all = provider_all();

	g_assert_nonnull(all[0]);
	g_assert_nonnull(all[1]);
	g_assert_null(all[2]);
	g_assert_true(provider_find("tado") == all[0]);
	g_assert_true(provider_find("tibber") == all[1]);
	g_assert_null(provider_find("nest"));
	g_assert_null(provider_find(NULL));
}

static void test_login_parameters_match_the_clouds(void)
{
	const struct provider *tado = provider_find("tado");
	const struct provider *tibber = provider_find("tibber");

	g_assert_cmpint(tado->login, ==, LOGIN_DEVICE_CODE);
	g_assert_cmpstr(tado->client_id, ==, "1bb50063-6b0c-4d11-bd99-387f4a91cc46");
	g_assert_cmpstr(tado->device_authorize_path, ==, "/oauth2/device_authorize");
	g_assert_true(tado->quota_is_scarce);
	g_assert_true(tado->verification_uri_needs_client_id);
	g_assert_cmpint(tibber->login, ==, LOGIN_AUTH_CODE_PKCE);
	g_assert_null(tibber->client_id);
	g_assert_nonnull(strstr(tibber->scope, "offline_access"));
	g_assert_cmpstr(tibber->authorize_path, ==, "/connect/authorize");
	g_assert_false(tibber->quota_is_scarce);
}

static void test_scalars_render_as_one_line(void)
{
	static const struct {
		const char *json;
		const char *text;
	} cases[] = {
	    {"21.4", "21.4\n"},
	    {"20.56", "20.56\n"},
	    {"37.0", "37.0\n"},
	    {"30.0", "30.0\n"},
	    {"100.0", "100.0\n"},
	    {"1250000.0", "1250000.0\n"},
	    {"0.0005", "0.0005\n"},
	    {"0.1", "0.1\n"},
	    {"74", "74\n"},
	    {"-3", "-3\n"},
	    {"1e300", "1e+300\n"},
	    {"\"idle\"", "idle\n"},
	    {"\"a\\nb\"", "a\nb\n"},
	    {"true", "true\n"},
	    {"false", "false\n"},
	    {"null", "\n"},
	    {"9007199254740993", "9007199254740993\n"},
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		g_autoptr(GString) out = g_string_new(NULL);

		g_assert_nonnull(v);
		g_assert_cmpint(provider_render_scalar(v, out), ==, 0);
		g_assert_cmpstr(out->str, ==, cases[i].text);
		json_decref(v);
	}
}

static void test_objects_are_no_scalars(void)
{
	json_t *v = json_loads("{\"a\":1}", 0, NULL);
	g_autoptr(GString) out = g_string_new(NULL);

	g_assert_cmpint(provider_render_scalar(v, out), ==, -EIO);
	g_assert_cmpint(provider_render_scalar(NULL, out), ==, -EIO);
	json_decref(v);
}

static void test_json_is_pretty_in_api_order_and_round_trips(void)
{
	const char *text =
	    "{\"z\":{\"t\":21.4,\"e\":[],\"o\":{}},\"a\":[1,\"\\u00e9/\\\"\",null,true]}";
	json_t *v = json_loads(text, 0, NULL);
	g_autoptr(GString) out = g_string_new(NULL);
	json_t *back;

	g_assert_cmpint(provider_render_json(v, out), ==, 0);
	g_assert_cmpstr(out->str, ==,
			"{\n"
			"  \"z\": {\n"
			"    \"t\": 21.4,\n"
			"    \"e\": [],\n"
			"    \"o\": {}\n"
			"  },\n"
			"  \"a\": [\n"
			"    1,\n"
			"    \"\xc3\xa9/\\\"\",\n"
			"    null,\n"
			"    true\n"
			"  ]\n"
			"}\n");
	back = json_loads(out->str, 0, NULL);
	g_assert_true(json_equal(back, v));
	json_decref(back);
	json_decref(v);
}

static void test_ids_are_strings_or_integers(void)
{
	json_t *v = json_loads("{\"i\":1001,\"s\":\"abc\",\"r\":1.5,\"n\":null}", 0, NULL);
	g_autofree char *i = provider_json_id(v, "i");
	g_autofree char *s = provider_json_id(v, "s");

	g_assert_cmpstr(i, ==, "1001");
	g_assert_cmpstr(s, ==, "abc");
	g_assert_null(provider_json_id(v, "r"));
	g_assert_null(provider_json_id(v, "n"));
	g_assert_null(provider_json_id(v, "missing"));
	json_decref(v);
}

static void test_ids_cannot_escape_their_path_segment(void)
{
	g_autofree char *slash = provider_path_segment("a/../me");
	g_autofree char *dot = provider_path_segment(".");
	g_autofree char *dots = provider_path_segment("..");
	g_autofree char *query = provider_path_segment("a?b#c d");
	g_autofree char *plain = provider_path_segment("dm9sa3N3YWdlbi-_");

	g_assert_cmpstr(slash, ==, "a%2F..%2Fme");
	g_assert_cmpstr(dot, ==, "%2E");
	g_assert_cmpstr(dots, ==, "%2E%2E");
	g_assert_cmpstr(query, ==, "a%3Fb%23c%20d");
	g_assert_cmpstr(plain, ==, "dm9sa3N3YWdlbi-_");
	g_assert_null(provider_path_segment(""));
}

/* --- tado --- */

static void test_tado_paths_map_to_aggregate_endpoints(void)
{
	const struct provider *t = provider_find("tado");
	json_t *zones = fixture("tado-zones.json");
	struct resource_ref ref;

	assert_source(t, "", NULL, NULL, 0);
	assert_source(t, "homes", "/me", NULL, 3600);
	assert_source(t, "homes/1001", NULL, NULL, 0);
	assert_source(t, "homes/1001/home.json", "/homes/1001", NULL, 3600);
	assert_source(t, "homes/1001/state.json", "/homes/1001/state", NULL, 0);
	assert_source(t, "homes/1001/weather.json", "/homes/1001/weather", NULL, 600);
	assert_source(t, "homes/1001/zones/1", NULL, NULL, 0);
	assert_source(t, "homes/1001/devices/VA1", NULL, NULL, 0);
	/* A home with zones on my.tado.com is pre-X: its zone list is all the context. */
	assert_resolve(t, "homes/1001/zones", "/homes/1001/zones", NULL, API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/zones/1/zone.json", "/homes/1001/zones", NULL, API_BASE_MAIN,
		       zones);
	assert_resolve(t, "homes/1001/zones/1/state.json", "/homes/1001/zoneStates", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/zones/1/values", "/homes/1001/zoneStates", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/zones/1/values/humidity", "/homes/1001/zoneStates", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/zones/1/units.json", "/homes/1001/zoneStates", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/devices", "/homes/1001/devices", NULL, API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/devices/VA1/device.json", "/homes/1001/devices", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/1001/devices/VA1/values/battery", "/homes/1001/devices", NULL,
		       API_BASE_MAIN, zones);
	assert_resolve(t, "homes/../zones", "/homes/%2E%2E/zones", NULL, API_BASE_MAIN, zones);

	g_assert_cmpint(source(t, "nothing", &ref), ==, -ENOENT);
	g_assert_cmpint(source(t, "homes/1001/nothing", &ref), ==, -ENOENT);
	g_assert_cmpint(source(t, "homes/1001/zones/1/values/nothing", &ref), ==, -ENOENT);
	g_assert_cmpint(source(t, "homes/1001/zones/1/state.json/x", &ref), ==, -ENOENT);
	g_assert_null(ref.path);
	json_decref(zones);
}

static void test_tado_zones_path_asks_for_the_zone_list_then_the_home(void)
{
	const struct provider *t = provider_find("tado");
	json_t *none = json_array();
	json_t *pre = json_loads("{\"id\":1001,\"generation\":\"PRE_LINE_X\"}", 0, NULL);
	json_t *old = json_loads("{\"id\":1001}", 0, NULL);
	struct resource_ref ref = {0};
	g_autofree char *asked = NULL;
	g_autofree char *note = NULL;

	g_assert_cmpint(resolve(t, "homes/1001/zones/1/values", &ref, &asked, &note, NULL), ==, 0);
	g_assert_cmpstr(asked, ==, "/homes/1001/zones");
	g_assert_null(ref.path);
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1001/devices", &ref, &asked, &note, none, NULL), ==, 0);
	g_assert_cmpstr(asked, ==, "/homes/1001");
	/* A pre-X home without zones, and a home that does not say its generation. */
	assert_resolve(t, "homes/1001/devices", "/homes/1001/devices", NULL, API_BASE_MAIN, none,
		       pre);
	assert_resolve(t, "homes/1001/zones/2/state.json", "/homes/1001/zoneStates", NULL,
		       API_BASE_MAIN, none, old);
	json_decref(none);
	json_decref(pre);
	json_decref(old);
}

static void test_tado_x_home_is_read_from_hops_rooms_and_devices(void)
{
	const struct provider *t = provider_find("tado");
	json_t *none = json_array();
	json_t *home = fixture("tado-x-home.json");

	g_assert_cmpstr(t->second_api_url, ==, "https://hops.tado.com");
	assert_resolve(t, "homes/1002/zones", "/homes/1002/roomsAndDevices",
		       "hops:/homes/1002/roomsAndDevices", API_BASE_SECOND, none, home);
	assert_resolve(t, "homes/1002/zones/1/zone.json", "/homes/1002/roomsAndDevices",
		       "hops:/homes/1002/roomsAndDevices", API_BASE_SECOND, none, home);
	assert_resolve(t, "homes/1002/zones/1/state.json", "/homes/1002/rooms",
		       "hops:/homes/1002/rooms", API_BASE_SECOND, none, home);
	assert_resolve(t, "homes/1002/zones/1/values/link", "/homes/1002/rooms",
		       "hops:/homes/1002/rooms", API_BASE_SECOND, none, home);
	assert_resolve(t, "homes/1002/devices/VA1/values/temperature_as_measured",
		       "/homes/1002/roomsAndDevices", "hops:/homes/1002/roomsAndDevices",
		       API_BASE_SECOND, none, home);
	json_decref(none);
	json_decref(home);
}

static void test_tado_home_of_an_unknown_generation_says_so(void)
{
	const struct provider *t = provider_find("tado");
	json_t *none = json_array();
	json_t *home = json_loads("{\"generation\":\"LINE_Y\\n\"}", 0, NULL);
	json_t *odd = json_loads("{\"generation\":7}", 0, NULL);
	struct resource_ref ref = {0};
	g_autofree char *asked = NULL;
	g_autofree char *note = NULL;

	g_assert_cmpint(resolve(t, "homes/1003/zones", &ref, &asked, &note, none, home, NULL), ==,
			-EPROTONOSUPPORT);
	g_assert_cmpstr(note, ==,
			"home 1003 is of tado generation \"LINE_Y\\x0a\", which this smarthomefs "
			"does not know: its zones and devices are not shown");
	g_assert_null(ref.path);
	g_clear_pointer(&note, g_free);
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1003/devices", &ref, &asked, &note, none, odd, NULL), ==,
			-EPROTONOSUPPORT);
	g_assert_nonnull(strstr(note, "\"(not a string)\""));
	json_decref(none);
	json_decref(home);
	json_decref(odd);
}

static void test_tado_x_rooms_are_zones_with_the_pre_x_value_names(void)
{
	const struct provider *t = provider_find("tado");
	json_t *rooms = fixture("tado-x-rooms.json");
	json_t *rad = fixture("tado-x-roomsAndDevices.json");
	int r;
	g_autofree char *zone = render(t, "homes/1002/zones/2/zone.json", rad, &r);
	g_autofree char *state = NULL;

	assert_list(t, "homes/1002/zones", rad, "1/ 2/");
	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(zone, "{\n  \"deviceManualControlTermination\": {"));
	g_assert_nonnull(strstr(zone, "\"roomName\": \"Bath\""));
	state = render(t, "homes/1002/zones/1/state.json", rooms, &r);
	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(state, "{\n  \"id\": 1,\n  \"name\": \"Living\",\n"));
	assert_list(t, "homes/1002/zones/1/values", rooms,
		    "inside_temperature humidity heating_power target_temperature power link "
		    "window_open overlay_active");
	assert_list(t, "homes/1002/zones/2/values", rooms,
		    "inside_temperature humidity heating_power power link window_open "
		    "overlay_active");
	assert_render(t, "homes/1002/zones/1/values/inside_temperature", rooms, "24.07\n");
	assert_render(t, "homes/1002/zones/1/values/humidity", rooms, "38\n");
	assert_render(t, "homes/1002/zones/1/values/heating_power", rooms, "0\n");
	assert_render(t, "homes/1002/zones/1/values/target_temperature", rooms, "20.0\n");
	assert_render(t, "homes/1002/zones/1/values/power", rooms, "ON\n");
	assert_render(t, "homes/1002/zones/1/values/link", rooms, "ONLINE\n");
	assert_render(t, "homes/1002/zones/2/values/link", rooms, "OFFLINE\n");
	assert_render(t, "homes/1002/zones/1/values/window_open", rooms, "false\n");
	assert_render(t, "homes/1002/zones/2/values/window_open", rooms, "true\n");
	assert_render(t, "homes/1002/zones/1/values/overlay_active", rooms, "true\n");
	assert_render(t, "homes/1002/zones/2/values/overlay_active", rooms, "false\n");
	g_free(render(t, "homes/1002/zones/1/values/mode", rooms, &r));
	g_assert_cmpint(r, ==, -ENOENT); /* tado X has no home/away mode per room */
	g_free(render(t, "homes/1002/zones/3/state.json", rooms, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(rooms);
	json_decref(rad);
}

static void test_tado_x_devices_are_the_rooms_and_the_other_devices(void)
{
	const struct provider *t = provider_find("tado");
	json_t *rad = fixture("tado-x-roomsAndDevices.json");
	int r;
	g_autofree char *text = render(t, "homes/1002/devices/IB1234567890/device.json", rad, &r);

	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(text, "{\n  \"connection\": {\n"));
	assert_list(t, "homes/1002/devices", rad, "VA1234567890/ VA1234567891/ IB1234567890/");
	assert_list(t, "homes/1002/devices/VA1234567890/values", rad,
		    "battery connected firmware type temperature_as_measured temperature_offset "
		    "child_lock");
	assert_list(t, "homes/1002/devices/IB1234567890/values", rad, "connected firmware type");
	assert_render(t, "homes/1002/devices/VA1234567890/values/connected", rad, "true\n");
	assert_render(t, "homes/1002/devices/VA1234567891/values/connected", rad, "false\n");
	assert_render(t, "homes/1002/devices/VA1234567891/values/battery", rad, "LOW\n");
	assert_render(t, "homes/1002/devices/VA1234567891/values/temperature_as_measured", rad,
		      "18.25\n");
	assert_render(t, "homes/1002/devices/VA1234567890/values/type", rad, "VA04\n");
	g_free(render(t, "homes/1002/devices/VA9/device.json", rad, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(rad);
}

static void test_tado_units_json_gives_each_value_its_unit(void)
{
	const struct provider *t = provider_find("tado");
	json_t *states = fixture("tado-zoneStates.json");
	json_t *rooms = fixture("tado-x-rooms.json");
	json_t *rad = fixture("tado-x-roomsAndDevices.json");
	json_t *devices = fixture("tado-devices.json");
	static const char zone1[] = "{\n"
				    "  \"inside_temperature\": \"°C\",\n"
				    "  \"humidity\": \"%\",\n"
				    "  \"heating_power\": \"%\",\n"
				    "  \"target_temperature\": \"°C\",\n"
				    "  \"power\": \"\",\n";

	int r;
	g_autofree char *pre = render(t, "homes/1001/zones/1/units.json", states, &r);
	g_autofree char *x = render(t, "homes/1002/zones/1/units.json", rooms, &r);

	g_assert_true(g_str_has_prefix(pre, zone1));
	g_assert_true(g_str_has_prefix(x, zone1));
	g_assert_nonnull(strstr(pre, "  \"mode\": \"\",\n"));
	g_assert_null(strstr(x, "\"mode\""));
	assert_render(t, "homes/1001/devices/GW0011223344/units.json", devices,
		      "{\n  \"connected\": \"\",\n  \"firmware\": \"\",\n  \"type\": \"\"\n}\n");
	g_autofree char *dev = render(t, "homes/1002/devices/VA1234567890/units.json", rad, &r);
	g_assert_nonnull(strstr(dev, "  \"temperature_as_measured\": \"°C\",\n"));
	assert_list(t, "homes/1001/zones/1", NULL,
		    "zone.json state.json values/ units.json history/");
	json_decref(states);
	json_decref(rooms);
	json_decref(rad);
	json_decref(devices);
}

static void test_tado_lists_homes_from_me_and_skips_missing_ids(void)
{
	const struct provider *t = provider_find("tado");
	json_t *me = fixture("tado-me.json");

	assert_list(t, "", NULL, "homes/");
	assert_list(t, "homes", me, "1001/ 1002/");
	assert_list(t, "homes/1001", NULL, "home.json state.json weather.json zones/ devices/");
	json_decref(me);
}

static void test_tado_home_json_is_the_home_pretty_printed(void)
{
	const struct provider *t = provider_find("tado");
	json_t *home = fixture("tado-home.json");
	int r;
	g_autofree char *text = render(t, "homes/1001/home.json", home, &r);

	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(text, "{\n  \"id\": 1001,\n  \"name\": \"Home\",\n"));
	g_assert_true(g_str_has_suffix(text, "}\n"));
	json_decref(home);
}

static void test_tado_zone_files_come_from_zones_and_zone_states(void)
{
	const struct provider *t = provider_find("tado");
	json_t *zones = fixture("tado-zones.json");
	json_t *states = fixture("tado-zoneStates.json");
	int r;
	g_autofree char *zone = render(t, "homes/1001/zones/2/zone.json", zones, &r);
	g_autofree char *state = NULL;

	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(zone, "{\n  \"id\": 2,\n  \"name\": \"Hot water\",\n"));
	assert_list(t, "homes/1001/zones", zones, "1/ 2/");
	assert_list(t, "homes/1001/zones/1", NULL, "zone.json state.json values/ units.json history/");

	state = render(t, "homes/1001/zones/1/state.json", states, &r);
	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(state, "{\n  \"tadoMode\": \"HOME\",\n"));
	g_assert_nonnull(strstr(state, "\"celsius\": 21.4,\n"));

	g_free(render(t, "homes/1001/zones/9/zone.json", zones, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	g_free(render(t, "homes/1001/zones/9/state.json", states, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(zones);
	json_decref(states);
}

static void test_tado_zone_values_list_only_what_the_zone_has(void)
{
	const struct provider *t = provider_find("tado");
	json_t *states = fixture("tado-zoneStates.json");

	assert_list(t, "homes/1001/zones/1/values", states,
		    "inside_temperature humidity heating_power target_temperature power mode "
		    "link window_open overlay_active");
	assert_list(t, "homes/1001/zones/2/values", states,
		    "power mode link window_open overlay_active");
	json_decref(states);
}

static void test_tado_zone_values_are_one_scalar_a_file(void)
{
	const struct provider *t = provider_find("tado");
	json_t *states = fixture("tado-zoneStates.json");
	int r;

	assert_render(t, "homes/1001/zones/1/values/inside_temperature", states, "20.56\n");
	assert_render(t, "homes/1001/zones/1/values/humidity", states, "48.2\n");
	assert_render(t, "homes/1001/zones/1/values/heating_power", states, "37.0\n");
	assert_render(t, "homes/1001/zones/1/values/target_temperature", states, "21.4\n");
	assert_render(t, "homes/1001/zones/1/values/power", states, "ON\n");
	assert_render(t, "homes/1001/zones/1/values/mode", states, "HOME\n");
	assert_render(t, "homes/1001/zones/1/values/link", states, "ONLINE\n");
	assert_render(t, "homes/1001/zones/1/values/window_open", states, "false\n");
	assert_render(t, "homes/1001/zones/1/values/overlay_active", states, "false\n");
	assert_render(t, "homes/1001/zones/2/values/overlay_active", states, "true\n");
	assert_render(t, "homes/1001/zones/2/values/power", states, "OFF\n");

	g_free(render(t, "homes/1001/zones/2/values/inside_temperature", states, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	g_free(render(t, "homes/1001/zones/1/values/nothing", states, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(states);
}

static void test_tado_zone_history_days_are_day_reports(void)
{
	const struct provider *t = provider_find("tado");
	json_t *home = fixture("tado-home.json");
	json_t *xhome = fixture("tado-x-home.json");
	json_t *zones = fixture("tado-zones.json");
	json_t *none = json_array();
	struct resource_ref ref = {0};
	g_autofree char *asked = NULL;
	g_autofree char *note = NULL;
	const char *bad[] = {"2026-11-30", "2026-11-30.txt", "2026-02-30.json", "2026-1-30.json",
			     "2026-11-30.json.csv", "x026-11-30.csv", "1969-12-31.csv", ".json"};
	const gint64 t0 = 1764543600; /* 2025-11-30T23:00:00Z: 2025-12-01 in Berlin */
	int r;

	/* Whether the zone has day reports, the zone list says; which days there are and
	 * whether the home has any, the home. */
	g_assert_cmpint(resolve(t, "homes/1001/zones/1/history", &ref, &asked, &note, NULL), ==, 0);
	g_assert_cmpstr(asked, ==, "/homes/1001/zones");
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1001/zones/1/history", &ref, &asked, &note, zones, NULL),
			==, 0);
	g_assert_cmpstr(asked, ==, "/homes/1001");
	assert_resolve(t, "homes/1001/zones/1/history", "/homes/1001", NULL, API_BASE_MAIN, zones,
		       home);
	/* Both files of a day are one resource: the day report, final at the home's next
	 * midnight and tado's 15 minutes (Berlin in winter: 23:15 UTC). */
	assert_resolve(t, "homes/1001/zones/1/history/2026-11-30.json",
		       "/homes/1001/zones/1/dayReport?date=2026-11-30", NULL, API_BASE_MAIN, zones,
		       home);
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1001/zones/1/history/2026-11-30.csv", &ref, &asked,
				&note, zones, home, NULL),
			==, 0);
	g_assert_cmpint(ref.immutable_at_s, ==, 1764544500 + 365 * 86400);
	resource_ref_clear(&ref);
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autofree char *p = g_strconcat("homes/1001/zones/1/history/", bad[i], NULL);
		g_assert_cmpint(source(t, p, &ref), ==, -ENOENT);
	}
	/* The home's local days, from history_days back (never before the home) to today. */
	g_autofree char *days = list_at(t, "homes/1001/zones/1/history", home, t0, t0 - 86400, &r);
	g_assert_cmpstr(days, ==,
			"2025-11-30.json 2025-11-30.csv 2025-12-01.json 2025-12-01.csv");
	json_object_set_new(home, "dateCreated", json_string("2025-11-30T23:30:00Z"));
	g_free(days);
	days = list_at(t, "homes/1001/zones/1/history", home, t0 + 3600, t0 - 86400, &r);
	g_assert_cmpstr(days, ==, "2025-12-01.json 2025-12-01.csv");
	g_free(days);
	days = list_at(t, "homes/1001/zones/1/history", home, t0, G_MAXINT64, &r);
	g_assert_cmpstr(days, ==, ""); /* history_days=0 */
	/* tado X has no day reports: an empty history/. */
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1002/zones/1/history/2026-11-30.csv", &ref, &asked,
				&note, none, xhome, NULL),
			==, -ENOENT);
	assert_resolve(t, "homes/1002/zones/1/history", NULL, NULL, API_BASE_MAIN, none, xhome);
	/* Nor has a hot water zone, nor a zone the home does not have. */
	json_array_append_new(zones, json_pack("{s:i, s:s}", "id", 7, "type", "HOT_WATER"));
	assert_resolve(t, "homes/1001/zones/7/history", NULL, NULL, API_BASE_MAIN, zones);
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1001/zones/7/history/2026-11-30.csv", &ref, &asked,
				&note, zones, NULL),
			==, -ENOENT);
	g_free(asked);
	g_assert_cmpint(resolve(t, "homes/1001/zones/8/history", &ref, &asked, &note, zones, NULL),
			==, -ENOENT);
	assert_list(t, "homes/1002/zones/1/history", NULL, "");
	assert_list(t, "homes/1001/zones/1", NULL,
		    "zone.json state.json values/ units.json history/");
	json_decref(home);
	json_decref(xhome);
	json_decref(zones);
	json_decref(none);
}

static void test_tado_day_csv_is_the_local_day_one_row_a_quarter(void)
{
	const struct provider *t = provider_find("tado");
	json_t *day = fixture("tado-dayReport.json");
	int r;
	g_autofree char *json = render(t, "homes/1001/zones/1/history/2026-11-30.json", day, &r);

	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(json, "{\n  \"zoneType\": \"HEATING\",\n"));
	/* The margins of 15 minutes either side and the row without a time are left out;
	 * humidity in percent; text with a comma or a quote is quoted. */
	assert_render(t, "homes/1001/zones/1/history/2026-11-30.csv", day,
		      "time,inside_temperature[°C],humidity[%],setpoint[°C],power,call_for_heat,"
		      "outside_temperature[°C],weather,sunny\n"
		      "2026-11-29T23:00:00.000Z,19.5,45.1,17.0,ON,NONE,3.64,NIGHT_CLOUDY,false\n"
		      "2026-11-29T23:15:00.000Z,19.58,,17.0,ON,LOW,3.64,NIGHT_CLOUDY,false\n"
		      "2026-11-30T05:00:00.000Z,21.25,43.8,,OFF,LOW,5,\"SUN, \"\"mostly\"\"\",true\n");
	json_object_set_new(day, "hoursInDay", json_string("24"));
	g_free(render(t, "homes/1001/zones/1/history/2026-11-30.csv", day, &r));
	g_assert_cmpint(r, ==, -EIO);
	json_t *none = json_array();
	g_free(render(t, "homes/1001/zones/1/history/2026-11-30.csv", none, &r));
	g_assert_cmpint(r, ==, -EIO);
	json_decref(none);
	json_decref(day);
}

static void test_tado_devices_are_named_by_serial_number(void)
{
	const struct provider *t = provider_find("tado");
	json_t *devices = fixture("tado-devices.json");
	int r;
	g_autofree char *text =
	    render(t, "homes/1001/devices/VA1234567890/device.json", devices, &r);

	g_assert_cmpint(r, ==, 0);
	g_assert_true(g_str_has_prefix(text, "{\n  \"deviceType\": \"VA01\",\n"));
	assert_list(t, "homes/1001/devices", devices, "VA1234567890/ GW0011223344/");
	assert_list(t, "homes/1001/devices/VA1234567890", NULL, "device.json values/ units.json");
	assert_list(t, "homes/1001/devices/VA1234567890/values", devices,
		    "battery connected firmware type");
	assert_list(t, "homes/1001/devices/GW0011223344/values", devices,
		    "connected firmware type");
	assert_render(t, "homes/1001/devices/VA1234567890/values/battery", devices, "NORMAL\n");
	assert_render(t, "homes/1001/devices/VA1234567890/values/connected", devices, "true\n");
	assert_render(t, "homes/1001/devices/VA1234567890/values/firmware", devices, "36.15\n");
	assert_render(t, "homes/1001/devices/GW0011223344/values/type", devices, "GW03\n");
	g_free(render(t, "homes/1001/devices/GW0011223344/values/battery", devices, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	g_free(list(t, "homes/1001/devices/XX/values", devices, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(devices);
}

static void test_tado_wrong_shapes_are_io_errors(void)
{
	const struct provider *t = provider_find("tado");
	json_t *array = json_loads("[1,2]", 0, NULL);
	json_t *object = json_loads("{\"zoneStates\":[1]}", 0, NULL);
	json_t *str = json_loads("\"x\"", JSON_DECODE_ANY, NULL);
	int r;

	g_free(list(t, "homes", array, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes", NULL, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes/1/zones", object, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes/1/zones/1/values", object, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes/1/zones/1/values", str, &r));
	g_assert_cmpint(r, ==, -EIO);
	/* An array is a tado X home's rooms: one without room 1 has no such zone. */
	g_free(list(t, "homes/1/zones/1/values", array, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	g_free(render(t, "homes/1/zones/1/state.json", str, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/1/home.json", array, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/1/devices/x/device.json", object, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/1/zones/1/values/mode", NULL, &r));
	g_assert_cmpint(r, ==, -EIO);
	json_decref(array);
	json_decref(object);
	json_decref(str);
}

/* --- tibber --- */

static void test_tibber_paths_map_to_endpoints(void)
{
	const struct provider *t = provider_find("tibber");
	struct resource_ref ref;

	assert_source(t, "", NULL, NULL, 0);
	assert_source(t, "homes", "/homes", NULL, 3600);
	assert_source(t, "homes/h1", NULL, NULL, 0);
	assert_source(t, "homes/h1/home.json", "/homes", NULL, 3600);
	assert_source(t, "homes/h1/devices", "/homes/h1/devices", NULL, 3600);
	assert_source(t, "homes/h1/devices/d1", NULL, NULL, 0);
	assert_source(t, "homes/h1/devices/d1/device.json", "/homes/h1/devices/d1", "device:d1", 0);
	assert_source(t, "homes/h1/devices/d1/values", "/homes/h1/devices/d1", "device:d1", 0);
	assert_source(t, "homes/h1/devices/d1/values/range.remaining", "/homes/h1/devices/d1",
		      "device:d1", 0);
	g_assert_cmpint(source(t, "homes/h1/zones", &ref), ==, -ENOENT);
	g_assert_cmpint(source(t, "homes/h1/devices/d1/other", &ref), ==, -ENOENT);
	g_assert_cmpint(source(t, "x", &ref), ==, -ENOENT);
}

static void test_tibber_device_under_two_homes_is_one_resource(void)
{
	const struct provider *t = provider_find("tibber");
	struct resource_ref a, b;

	g_assert_cmpint(source(t, "homes/h1/devices/d1/device.json", &a), ==, 0);
	g_assert_cmpint(source(t, "homes/h2/devices/d1/values", &b), ==, 0);
	g_assert_cmpstr(a.key, ==, b.key);
	resource_ref_clear(&a);
	resource_ref_clear(&b);
}

static void test_tibber_ids_never_change_the_api_path(void)
{
	const struct provider *t = provider_find("tibber");
	static const char *const comp[] = {"homes", "h1", "devices", "a/../b", "device.json"};
	struct provider_path p = {.comp = comp, .n = G_N_ELEMENTS(comp)};
	struct resource_ref ref;

	assert_source(t, "homes/../devices", "/homes/%2E%2E/devices", NULL, 3600);

	g_assert_cmpint(t->source(&p, &ref), ==, 0);
	g_assert_cmpstr(ref.path, ==, "/homes/h1/devices/a%2F..%2Fb");
	g_assert_cmpstr(ref.key, ==, "device:a%2F..%2Fb");
	resource_ref_clear(&ref);
	g_assert_cmpint(source(t, "homes//devices", &ref), ==, -ENOENT);
}

static void test_tibber_lists_homes_and_devices_wrapped_or_bare(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *homes = fixture("tibber-homes.json");
	json_t *devices = fixture("tibber-devices.json");

	assert_list(t, "", NULL, "homes/");
	assert_list(t, "homes", homes,
		    "96a14971-525a-4420-aae9-e5aedaa129ff/ 68e6938b-91a6-4199-a0d4-f24c22be87bb/");
	assert_list(t, "homes", json_object_get(homes, "homes"),
		    "96a14971-525a-4420-aae9-e5aedaa129ff/ 68e6938b-91a6-4199-a0d4-f24c22be87bb/");
	assert_list(t, "homes/h1", NULL, "home.json devices/");
	assert_list(t, "homes/h1/devices", devices,
		    "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw/ ZWFzZWUgY2hhcmdlcjo0NTY/");
	assert_list(t, "homes/h1/devices", json_object_get(devices, "devices"),
		    "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw/ ZWFzZWUgY2hhcmdlcjo0NTY/");
	assert_list(t, "homes/h1/devices/d1", NULL, "device.json values/ units.json history/");
	json_decref(homes);
	json_decref(devices);
}

static void test_tibber_home_json_is_its_entry_of_the_homes_list(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *homes = fixture("tibber-homes.json");
	int r;
	g_autofree char *text =
	    render(t, "homes/68e6938b-91a6-4199-a0d4-f24c22be87bb/home.json", homes, &r);

	g_assert_cmpint(r, ==, 0);
	g_assert_cmpstr(text, ==,
			"{\n"
			"  \"id\": \"68e6938b-91a6-4199-a0d4-f24c22be87bb\",\n"
			"  \"info\": {\n"
			"    \"name\": \"Cabin\"\n"
			"  }\n"
			"}\n");
	g_free(render(t, "homes/nope/home.json", homes, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(homes);
}

static void test_tibber_device_json_keeps_unknown_keys(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *device = fixture("tibber-device.json");
	int r;
	g_autofree char *text = render(t, "homes/h1/devices/d1/device.json", device, &r);
	json_t *back;

	g_assert_cmpint(r, ==, 0);
	g_assert_true(
	    g_str_has_prefix(text, "{\n  \"id\": \"dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw\",\n"));
	back = json_loads(text, 0, NULL);
	g_assert_true(json_equal(back, device));
	g_assert_nonnull(json_object_get(back, "newCategoryField"));
	json_decref(back);
	json_decref(device);
}

static void test_tibber_values_are_the_scalar_capabilities_first_id_wins(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *device = fixture("tibber-device.json");
	int r;

	assert_list(t, "homes/h1/devices/d1/values", device,
		    "storage.stateOfCharge range.remaining connector.status charging.status "
		    "charging.current.max storage.targetStateOfCharge online last_seen");
	assert_render(t, "homes/h1/devices/d1/values/storage.stateOfCharge", device, "74\n");
	assert_render(t, "homes/h1/devices/d1/values/range.remaining", device, "356000\n");
	assert_render(t, "homes/h1/devices/d1/values/connector.status", device, "disconnected\n");
	assert_render(t, "homes/h1/devices/d1/values/charging.current.max", device, "16.5\n");
	assert_render(t, "homes/h1/devices/d1/values/storage.targetStateOfCharge", device, "\n");
	g_free(render(t, "homes/h1/devices/d1/values/grid.phaseCount", device, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	g_free(render(t, "homes/h1/devices/d1/values/vinNumber", device, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(device);
}

static void test_tibber_health_is_online_and_last_seen_and_units_say_what_the_api_says(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *device = fixture("tibber-device.json");
	json_t *bare = json_loads("{\"id\":\"d\",\"capabilities\":[{\"id\":\"online\","
				  "\"value\":\"yes\",\"unit\":7}],\"attributes\":[{\"id\":"
				  "\"isOnline\",\"value\":false}]}",
				  0, NULL);
	int r;

	assert_render(t, "homes/h1/devices/d1/values/online", device, "true\n");
	assert_render(t, "homes/h1/devices/d1/values/last_seen", device,
		      "2026-07-30T06:25:23.770Z\n");
	assert_render(t, "homes/h1/devices/d1/units.json", device,
		      "{\n"
		      "  \"storage.stateOfCharge\": \"%\",\n"
		      "  \"range.remaining\": \"m\",\n"
		      "  \"connector.status\": \"\",\n"
		      "  \"charging.status\": \"\",\n"
		      "  \"charging.current.max\": \"A\",\n"
		      "  \"storage.targetStateOfCharge\": \"\",\n"
		      "  \"online\": \"\",\n"
		      "  \"last_seen\": \"\"\n"
		      "}\n");
	/* A capability named like a health value wins; a unit that is no string is none. */
	assert_list(t, "homes/h1/devices/d1/values", bare, "online");
	assert_render(t, "homes/h1/devices/d1/values/online", bare, "yes\n");
	assert_render(t, "homes/h1/devices/d1/units.json", bare, "{\n  \"online\": \"\"\n}\n");
	g_free(render(t, "homes/h1/devices/d1/values/last_seen", bare, &r));
	g_assert_cmpint(r, ==, -ENOENT);
	json_decref(device);
	json_decref(bare);
}

static void test_route_tables_match_ids_and_fixed_names(void)
{
	static const struct provider_route routes[] = {
	    {"", ENTRY_DIR},	  {"a", ENTRY_DIR},
	    {"a/*", ENTRY_DIR},	  {"a/*/f.json", ENTRY_FILE},
	    {"a/*/d", ENTRY_DIR}, {"a/*/d/*", ENTRY_FILE},
	};
	static const char *const deep[] = {"a", "x", "d", "y"};
	static const char *const empty_id[] = {"a", ""};
	static const char *const file[] = {"a", "f.json", "f.json"};
	const char *ids[PROVIDER_ROUTE_IDS] = {0};
	g_autoptr(GPtrArray) entries = provider_entries_new();

	g_assert_cmpint(
	    provider_route_match(routes, 6, &(struct provider_path){.comp = deep, .n = 4}, ids), ==,
	    5);
	g_assert_cmpstr(ids[0], ==, "x");
	g_assert_cmpstr(ids[1], ==, "y");
	g_assert_cmpint(
	    provider_route_match(routes, 6, &(struct provider_path){.comp = deep, .n = 0}, ids), ==,
	    0);
	g_assert_cmpint(
	    provider_route_match(routes, 6, &(struct provider_path){.comp = deep, .n = 3}, ids), ==,
	    4);
	g_assert_cmpint(
	    provider_route_match(routes, 6, &(struct provider_path){.comp = file, .n = 3}, ids), ==,
	    3);
	g_assert_cmpint(
	    provider_route_match(routes, 6, &(struct provider_path){.comp = empty_id, .n = 2}, ids),
	    ==, -ENOENT);
	provider_route_children(routes, 6, 2, entries);
	g_assert_cmpint(entries->len, ==, 2);
	g_assert_cmpstr(((struct provider_entry *)entries->pdata[0])->name, ==, "f.json");
	g_assert_cmpstr(((struct provider_entry *)entries->pdata[1])->name, ==, "d");
}

static void test_tibber_wrong_shapes_are_io_errors(void)
{
	const struct provider *t = provider_find("tibber");
	json_t *obj = json_loads("{\"homes\":{\"id\":1}}", 0, NULL);
	json_t *arr = json_loads("[]", 0, NULL);
	int r;

	g_free(list(t, "homes", obj, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes/h/devices", obj, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(list(t, "homes/h/devices/d/values", arr, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/h/devices/d/device.json", arr, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/h/home.json", obj, &r));
	g_assert_cmpint(r, ==, -EIO);
	g_free(render(t, "homes/h/devices/d/values/x", NULL, &r));
	g_assert_cmpint(r, ==, -EIO);
	json_decref(obj);
	json_decref(arr);
}

static void test_lenient_parse_reads_numbers_as_jansson_does(void)
{
	/* A long fraction and a long exponent: their digits are no integers of their own. */
	static const char *const bodies[] = {
	    "{\"f\":0.123456789012345678901}",
	    "[1.5e-000000000000000000000001, -0.00000000000000000000001]",
	    "{\"n\":-12345678901234567890.5}",
	};
	for (size_t i = 0; i < G_N_ELEMENTS(bodies); i++) {
		json_t *lenient = provider_json_parse(bodies[i], strlen(bodies[i]), NULL);
		json_t *strict = json_loads(bodies[i], JSON_DECODE_ANY, NULL);
		g_assert_nonnull(strict);
		g_assert_nonnull(lenient);
		g_assert_true(json_equal(lenient, strict));
		json_decref(lenient);
		json_decref(strict);
	}
	/* An integer beyond 64 bits is still a number, read as a real. */
	const char *big = "{\"id\":123456789012345678901234}";
	json_t *j = provider_json_parse(big, strlen(big), NULL);
	g_assert_nonnull(j);
	g_assert_true(json_is_real(json_object_get(j, "id")));
	json_decref(j);
}

#define DEV   "homes/h1/devices/ZWFz/"
#define NOW_S 1796209200 /* 2026-12-02T11:00:00Z */

static void test_tibber_history_lists_what_supported_history_says_in_any_shape(void)
{
	const char *shapes[] = {
	    "{\"supportedHistory\": {\"resolutions\": [\"hour\", \"month\"], \"maxRetentionDays\": "
	    "2}}",
	    "{\"supportedHistory\": [\"hour\", \"month\", \"fortnight\"], \"maxRetentionDays\": 2}",
	    "{\"supportedHistory\": [{\"resolution\": \"hour\", \"maxRetentionDays\": 2}, "
	    "{\"resolution\": \"month\"}, 7]}",
	};
	int r;

	for (size_t i = 0; i < G_N_ELEMENTS(shapes); i++) {
		json_t *device = json_loads(shapes[i], 0, NULL);
		g_autofree char *dirs =
		    list_at(provider_find("tibber"), DEV "history", device, NOW_S, 0, &r);
		g_assert_cmpint(r, ==, 0);
		g_assert_cmpstr(dirs, ==, "hour/ month/");
		/* Two days of retention: the day before yesterday is partly in it. */
		g_autofree char *days =
		    list_at(provider_find("tibber"), DEV "history/hour", device, NOW_S, 0, &r);
		g_assert_cmpstr(days, ==,
				"2026-11-30.json 2026-11-30.csv 2026-12-01.json 2026-12-01.csv "
				"2026-12-02.json 2026-12-02.csv");
		g_autofree char *none =
		    list_at(provider_find("tibber"), DEV "history/day", device, NOW_S, 0, &r);
		g_assert_cmpint(r, ==, -ENOENT);
		json_decref(device);
	}
	json_t *vehicle = json_loads("{\"supportedHistory\": {\"resolutions\": []}}", 0, NULL);
	g_autofree char *empty =
	    list_at(provider_find("tibber"), DEV "history", vehicle, NOW_S, 0, &r);
	g_assert_cmpstr(empty, ==, "");
	/* history_days=1: today only; history_days=0: no history directory. */
	json_t *device = json_loads("{\"supportedHistory\": [\"day\"]}", 0, NULL);
	g_autofree char *today =
	    list_at(provider_find("tibber"), DEV "history/day", device, NOW_S, NOW_S, &r);
	g_assert_cmpstr(today, ==, "2026-12.json 2026-12.csv");
	g_autofree char *off =
	    list_at(provider_find("tibber"), "homes/h1/devices/ZWFz", NULL, NOW_S, G_MAXINT64, &r);
	g_assert_cmpstr(off, ==, "device.json values/ units.json");
	g_autofree char *on =
	    list_at(provider_find("tibber"), "homes/h1/devices/ZWFz", NULL, NOW_S, 0, &r);
	g_assert_cmpstr(on, ==, "device.json values/ units.json history/");
	json_decref(device);
	json_decref(vehicle);
}

static void test_tibber_a_period_is_one_paged_immutable_call(void)
{
	struct resource_ref ref = {0};
	int r;

	g_assert_cmpint(source(provider_find("tibber"), DEV "history/hour/2026-12-01.csv", &ref),
			==, 0);
	g_assert_cmpstr(ref.path, ==,
			"/homes/h1/devices/ZWFz/history?resolution=hour&since=2026-12-01T00:00:00Z"
			"&until=2026-12-02T00:00:00Z");
	g_assert_true(ref.paged);
	g_assert_cmpint(ref.immutable_at_s, ==, 1796169600);
	resource_ref_clear(&ref);
	g_assert_cmpint(source(provider_find("tibber"), DEV "history/hour/2026-12-1.csv", &ref), ==,
			-ENOENT);
	g_assert_cmpint(source(provider_find("tibber"), DEV "history/week/2026-12-01.csv", &ref),
			==, -ENOENT);
	resource_ref_clear(&ref);
	json_t *pages =
	    json_loads("[{\"data\": [{\"from\": \"2026-12-01T00:00:00.000Z\", \"to\": "
		       "\"2026-12-01T01:00:00.000Z\", "
		       "\"metrics\": {\"energyCharged\": 1.5, \"power\": 3}}]}, {\"data\": []}]",
		       0, NULL);
	g_autofree char *csv =
	    render(provider_find("tibber"), DEV "history/hour/2026-12-01.csv", pages, &r);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpstr(csv, ==,
			"from,to,energyCharged[kWh],power[W]\n"
			"2026-12-01T00:00:00Z,2026-12-01T01:00:00Z,1.5,3\n");
	g_autofree char *bad = render(provider_find("tibber"), DEV "history/hour/2026-12-01.json",
				      json_object_get(json_array_get(pages, 0), "data"), &r);
	g_assert_cmpint(r, ==, -EIO);
	json_decref(pages);
}

/* A body's tree may weigh 12 times its text (plus 1 MiB): a listing of Tibber devices
 * (about 10 times) parses, 2 MiB of empty objects (75 times) is refused, and the next
 * parse has its own budget. */
static void test_a_parse_is_bounded_by_its_text(void)
{
	g_autoptr(GString) listing = g_string_new("{\"devices\": [");
	g_autoptr(GString) bomb = g_string_new("[");
	json_error_t err;

	for (int i = 0; listing->len < 2 << 20; i++)
		g_string_append_printf(
		    listing,
		    "%s{\"id\": \"My4%d\", \"externalId\": \"EH%06d\", \"info\": "
		    "{\"name\": \"c%d\", \"brand\": \"Easee\", \"model\": "
		    "\"Home\"}, \"supportedHistory\": {\"resolutions\": [\"hour\", "
		    "\"day\"]}}",
		    i ? ", " : "", i, i, i);
	g_string_append(listing, "]}");
	while (bomb->len < 2 << 20)
		g_string_append(bomb, "{},");
	g_string_append(bomb, "{}]");

	json_t *ok = provider_json_parse(listing->str, listing->len, &err);
	g_assert_nonnull(ok);
	json_decref(ok);
	g_assert_null(provider_json_parse(bomb->str, bomb->len, &err));
	g_assert_nonnull(strstr(err.text, "12 times"));
	ok = provider_json_parse(listing->str, listing->len, &err);
	g_assert_nonnull(ok);
	json_decref(ok);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/provider/table_lists_every_provider_once",
			test_table_lists_every_provider_once);
	g_test_add_func("/provider/login_parameters_match_the_clouds",
			test_login_parameters_match_the_clouds);
	g_test_add_func("/provider/scalars_render_as_one_line", test_scalars_render_as_one_line);
	g_test_add_func("/provider/lenient_parse_reads_numbers_as_jansson_does",
			test_lenient_parse_reads_numbers_as_jansson_does);
	g_test_add_func("/provider/objects_are_no_scalars", test_objects_are_no_scalars);
	g_test_add_func("/provider/a_parse_is_bounded_by_its_text",
			test_a_parse_is_bounded_by_its_text);
	g_test_add_func("/provider/json_is_pretty_in_api_order_and_round_trips",
			test_json_is_pretty_in_api_order_and_round_trips);
	g_test_add_func("/provider/ids_are_strings_or_integers", test_ids_are_strings_or_integers);
	g_test_add_func("/provider/ids_cannot_escape_their_path_segment",
			test_ids_cannot_escape_their_path_segment);
	g_test_add_func("/tado/paths_map_to_aggregate_endpoints",
			test_tado_paths_map_to_aggregate_endpoints);
	g_test_add_func("/tado/zones_path_asks_for_the_zone_list_then_the_home",
			test_tado_zones_path_asks_for_the_zone_list_then_the_home);
	g_test_add_func("/tado/x_home_is_read_from_hops_rooms_and_devices",
			test_tado_x_home_is_read_from_hops_rooms_and_devices);
	g_test_add_func("/tado/home_of_an_unknown_generation_says_so",
			test_tado_home_of_an_unknown_generation_says_so);
	g_test_add_func("/tado/x_rooms_are_zones_with_the_pre_x_value_names",
			test_tado_x_rooms_are_zones_with_the_pre_x_value_names);
	g_test_add_func("/tado/x_devices_are_the_rooms_and_the_other_devices",
			test_tado_x_devices_are_the_rooms_and_the_other_devices);
	g_test_add_func("/tado/units_json_gives_each_value_its_unit",
			test_tado_units_json_gives_each_value_its_unit);
	g_test_add_func("/tado/lists_homes_from_me_and_skips_missing_ids",
			test_tado_lists_homes_from_me_and_skips_missing_ids);
	g_test_add_func("/tado/home_json_is_the_home_pretty_printed",
			test_tado_home_json_is_the_home_pretty_printed);
	g_test_add_func("/tado/zone_files_come_from_zones_and_zone_states",
			test_tado_zone_files_come_from_zones_and_zone_states);
	g_test_add_func("/tado/zone_values_list_only_what_the_zone_has",
			test_tado_zone_values_list_only_what_the_zone_has);
	g_test_add_func("/tado/zone_values_are_one_scalar_a_file",
			test_tado_zone_values_are_one_scalar_a_file);
	g_test_add_func("/tado/zone_history_days_are_day_reports",
			test_tado_zone_history_days_are_day_reports);
	g_test_add_func("/tado/day_csv_is_the_local_day_one_row_a_quarter",
			test_tado_day_csv_is_the_local_day_one_row_a_quarter);
	g_test_add_func("/tado/devices_are_named_by_serial_number",
			test_tado_devices_are_named_by_serial_number);
	g_test_add_func("/tado/wrong_shapes_are_io_errors", test_tado_wrong_shapes_are_io_errors);
	g_test_add_func("/tibber/paths_map_to_endpoints", test_tibber_paths_map_to_endpoints);
	g_test_add_func("/tibber/device_under_two_homes_is_one_resource",
			test_tibber_device_under_two_homes_is_one_resource);
	g_test_add_func("/tibber/ids_never_change_the_api_path",
			test_tibber_ids_never_change_the_api_path);
	g_test_add_func("/tibber/lists_homes_and_devices_wrapped_or_bare",
			test_tibber_lists_homes_and_devices_wrapped_or_bare);
	g_test_add_func("/tibber/home_json_is_its_entry_of_the_homes_list",
			test_tibber_home_json_is_its_entry_of_the_homes_list);
	g_test_add_func("/tibber/device_json_keeps_unknown_keys",
			test_tibber_device_json_keeps_unknown_keys);
	g_test_add_func("/tibber/values_are_the_scalar_capabilities_first_id_wins",
			test_tibber_values_are_the_scalar_capabilities_first_id_wins);
	g_test_add_func("/tibber/health_is_online_and_last_seen_and_units_say_what_the_api_says",
			test_tibber_health_is_online_and_last_seen_and_units_say_what_the_api_says);
	g_test_add_func("/provider/route_tables_match_ids_and_fixed_names",
			test_route_tables_match_ids_and_fixed_names);
	g_test_add_func("/tibber/history_lists_what_supported_history_says_in_any_shape",
			test_tibber_history_lists_what_supported_history_says_in_any_shape);
	g_test_add_func("/tibber/a_period_is_one_paged_immutable_call",
			test_tibber_a_period_is_one_paged_immutable_call);
	g_test_add_func("/tibber/wrong_shapes_are_io_errors",
			test_tibber_wrong_shapes_are_io_errors);
	return g_test_run();
}
