/* tado_day: a day report as history files. The body comes from the cloud: every field is
 * checked, a row without a readable time is skipped, text is quoted as CSV needs. */
#include "tado_day.h"

#include <errno.h>
#include <string.h>

#include "provider.h"

/* tado's report runs this long before the local day and after it (PyTado's fixture). */
#define MARGIN_S (15 * 60)

int tado_day_name_parse(const char *name, char date[TADO_DAY_DATE_LEN], enum history_format *format)
{
	struct history_period day;

	/* A UTC day's name and a local day's are spelled alike. */
	if (history_file_parse(HISTORY_HOUR, name, &day, format) < 0)
		return -ENOENT;
	memcpy(date, name, TADO_DAY_DATE_LEN - 1);
	date[TADO_DAY_DATE_LEN - 1] = '\0';
	return 0;
}

/* @home's time zone (a new reference): its dateTimeZone when that is a plain zone name
 * this machine knows (it names a file under /usr/share/zoneinfo: nothing else), else UTC. */
static GTimeZone *home_zone(json_t *home)
{
	const char *id = json_string_value(json_object_get(home, "dateTimeZone"));
	size_t len = id ? strlen(id) : 0;
	GTimeZone *tz = NULL;

	if (len > 0 && len < 64 && id[0] != '/' && !strstr(id, "..") &&
	    strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/") == len)
		tz = g_time_zone_new_identifier(id);
	return tz ? tz : g_time_zone_new_utc();
}

gint64 tado_day_final_at(json_t *home, const char *date)
{
	g_autoptr(GTimeZone) tz = home_zone(home);
	int y, m, d;

	if (!date || sscanf(date, "%4d-%2d-%2d", &y, &m, &d) != 3 ||
	    !g_date_valid_dmy((GDateDay)d, (GDateMonth)m, (GDateYear)y))
		return 0;
	g_autoptr(GDateTime) midnight = g_date_time_new(tz, y, m, d, 0, 0, 0);
	g_autoptr(GDateTime) next = midnight ? g_date_time_add_days(midnight, 1) : NULL;
	return next ? g_date_time_to_unix(next) + MARGIN_S : 0;
}

/* The local date of @t_s in @tz. */
static GDate local_date(GTimeZone *tz, gint64 t_s)
{
	g_autoptr(GDateTime) utc = g_date_time_new_from_unix_utc(t_s);
	g_autoptr(GDateTime) t = utc ? g_date_time_to_timezone(utc, tz) : NULL;
	GDate date;

	g_date_clear(&date, 1);
	if (t)
		g_date_set_dmy(&date, (GDateDay)g_date_time_get_day_of_month(t),
			       (GDateMonth)g_date_time_get_month(t),
			       (GDateYear)g_date_time_get_year(t));
	else
		g_date_set_dmy(&date, 1, 1, 1970);
	return date;
}

void tado_day_list(json_t *home, gint64 oldest_s, gint64 now_s, GPtrArray *entries)
{
	g_autoptr(GTimeZone) tz = home_zone(home);
	gint64 created_s;

	if (now_s <= 0 || oldest_s > now_s)
		return;
	if (history_parse_iso(json_string_value(json_object_get(home, "dateCreated")), &created_s))
		oldest_s = MAX(oldest_s, created_s);
	oldest_s = MAX(oldest_s, now_s - (gint64)HISTORY_MAX_DAYS * 86400);
	GDate day = local_date(tz, oldest_s);
	GDate today = local_date(tz, now_s);
	for (; g_date_compare(&day, &today) <= 0; g_date_add_days(&day, 1)) {
		char name[TADO_DAY_DATE_LEN + 5];

		g_date_strftime(name, sizeof(name), "%Y-%m-%d.json", &day);
		g_ptr_array_add(entries, provider_entry_new(name, ENTRY_FILE));
		g_date_strftime(name, sizeof(name), "%Y-%m-%d.csv", &day);
		g_ptr_array_add(entries, provider_entry_new(name, ENTRY_FILE));
	}
}

/* @text (an ISO 8601 time) as unix seconds, or -1. */
static gint64 time_of(json_t *text)
{
	gint64 t_s;

	return history_parse_iso(json_string_value(text), &t_s) ? t_s : -1;
}

/* One series of {from, to, value} intervals, walked forward as the rows' times grow. */
struct intervals {
	json_t *list; /* the dataIntervals array, or NULL */
	size_t next;
};

static void intervals_init(struct intervals *iv, json_t *series)
{
	json_t *list = json_object_get(series, "dataIntervals");

	iv->list = json_is_array(list) ? list : NULL;
	iv->next = 0;
}

/* The value of the interval holding @t_s (from <= t < to), or NULL. */
static json_t *intervals_at(struct intervals *iv, gint64 t_s)
{
	size_t n = iv->list ? json_array_size(iv->list) : 0;

	for (; iv->next < n; iv->next++) {
		json_t *e = json_array_get(iv->list, iv->next);
		gint64 from = time_of(json_object_get(e, "from"));
		gint64 to = time_of(json_object_get(e, "to"));

		if (from > t_s)
			return NULL; /* a gap: later rows may still fall in this one */
		if (t_s < to)
			return json_object_get(e, "value");
	}
	return NULL;
}

/* Appends ",": then @v as a CSV field: a number or boolean as the value files write it,
 * text quoted when it holds a comma, a quote or a line break; nothing for NULL. */
static void csv_field(GString *out, json_t *v)
{
	g_string_append_c(out, ',');
	if (!v || json_is_null(v) || json_is_object(v) || json_is_array(v))
		return;
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);

		if (strcspn(s, ",\"\r\n") >= len && memchr(s, '\0', len) == NULL) {
			g_string_append_len(out, s, (gssize)len);
			return;
		}
		g_string_append_c(out, '"');
		for (size_t i = 0; i < len; i++) {
			if (s[i] == '"')
				g_string_append_c(out, '"');
			if (s[i] != '\0')
				g_string_append_c(out, s[i]);
		}
		g_string_append_c(out, '"');
		return;
	}
	provider_render_scalar(v, out);
	g_string_truncate(out, out->len - 1); /* its newline */
}

static json_t *celsius_of(json_t *temperature)
{
	json_t *c = json_object_get(temperature, "celsius");

	return json_is_number(c) ? c : NULL;
}

/* humidity.dataPoints by timestamp text: the two series share their times. */
static GHashTable *points_by_time(json_t *series)
{
	GHashTable *by = g_hash_table_new(g_str_hash, g_str_equal);
	json_t *points = json_object_get(series, "dataPoints");
	json_t *p;
	size_t i;

	json_array_foreach (points, i, p) {
		const char *t = json_string_value(json_object_get(p, "timestamp"));

		if (t)
			g_hash_table_insert(by, (gpointer)t, json_object_get(p, "value"));
	}
	return by;
}

/* The humidity @v in percent: tado sends a fraction (percentageUnit UNIT_INTERVAL). New
 * reference, or NULL. */
static json_t *humidity_percent(json_t *v, bool unit_interval)
{
	double f = json_number_value(v);

	if (!json_is_number(v))
		return NULL;
	if (!unit_interval)
		return json_incref(v);
	if (!(f >= 0.0 && f <= 1.0))
		return NULL;
	return json_real((double)(long)(f * 1000.0 + 0.5) / 10.0); /* to a tenth of a percent */
}

int tado_day_render_csv(json_t *report, GString *out)
{
	json_t *measured = json_object_get(report, "measuredData");
	json_t *temps =
	    json_object_get(json_object_get(measured, "insideTemperature"), "dataPoints");
	json_t *hum = json_object_get(measured, "humidity");
	json_t *weather = json_object_get(report, "weather");
	json_t *hours = json_object_get(report, "hoursInDay");
	gint64 from = time_of(json_object_get(json_object_get(report, "interval"), "from"));
	struct intervals settings, heat, condition, sunny;
	bool unit_interval;
	json_t *p;
	size_t i;

	if (!json_is_object(report) || !json_is_array(temps) || !json_is_integer(hours) ||
	    json_integer_value(hours) < 1 || json_integer_value(hours) > 48 || from < 0)
		return -EIO;
	gint64 day_start = from + MARGIN_S;
	gint64 day_end = day_start + json_integer_value(hours) * 3600;
	unit_interval = g_strcmp0(json_string_value(json_object_get(hum, "percentageUnit")),
				  "UNIT_INTERVAL") == 0;
	g_autoptr(GHashTable) humidity = points_by_time(hum);
	intervals_init(&settings, json_object_get(report, "settings"));
	intervals_init(&heat, json_object_get(report, "callForHeat"));
	intervals_init(&condition, json_object_get(weather, "condition"));
	intervals_init(&sunny, json_object_get(weather, "sunny"));
	g_string_append(out, TADO_DAY_CSV_HEADER);
	json_array_foreach (temps, i, p) {
		json_t *stamp = json_object_get(p, "timestamp");
		gint64 t = time_of(stamp);

		/* Written as it came: only the characters of an ISO 8601 time. */
		if (t < day_start || t >= day_end ||
		    strspn(json_string_value(stamp), "0123456789-:.TZ+") !=
			json_string_length(stamp))
			continue;
		json_t *setting = intervals_at(&settings, t);
		json_t *sky = intervals_at(&condition, t);
		json_t *percent = humidity_percent(
		    g_hash_table_lookup(humidity, json_string_value(stamp)), unit_interval);

		g_string_append(out, json_string_value(stamp));
		csv_field(out, celsius_of(json_object_get(p, "value")));
		csv_field(out, percent);
		csv_field(out, celsius_of(json_object_get(setting, "temperature")));
		csv_field(out, json_object_get(setting, "power"));
		csv_field(out, intervals_at(&heat, t));
		csv_field(out, celsius_of(json_object_get(sky, "temperature")));
		csv_field(out, json_object_get(sky, "state"));
		csv_field(out, intervals_at(&sunny, t));
		g_string_append_c(out, '\n');
		json_decref(percent);
	}
	return 0;
}
