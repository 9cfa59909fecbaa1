/* tado_day: a day report as history files. The body comes from the cloud: every field is
 * checked, a row without a readable time is skipped, text is quoted as CSV needs. */
#include "tado_day.h"

#include <errno.h>
#include <string.h>

#include "provider.h"

/* tado's report runs this long before the local day and after it (PyTado's fixture). */
#define MARGIN_US (15 * 60 * G_USEC_PER_SEC)

int tado_day_name_parse(const char *name, char date[TADO_DAY_DATE_LEN],
			enum tado_day_format *format)
{
	const char *dot = name ? strchr(name, '.') : NULL;
	unsigned y, m, d;
	char tail;

	if (!dot || dot - name != 10)
		return -ENOENT;
	if (strcmp(dot, ".json") == 0)
		*format = TADO_DAY_JSON;
	else if (strcmp(dot, ".csv") == 0)
		*format = TADO_DAY_CSV;
	else
		return -ENOENT;
	for (int i = 0; i < 10; i++)
		if (i == 4 || i == 7 ? name[i] != '-' : !g_ascii_isdigit(name[i]))
			return -ENOENT;
	if (sscanf(name, "%4u-%2u-%2u%c", &y, &m, &d, &tail) != 4 || tail != '.' ||
	    !g_date_valid_dmy((GDateDay)d, (GDateMonth)m, (GDateYear)y) || y < 1970)
		return -ENOENT;
	memcpy(date, name, 10);
	date[10] = '\0';
	return 0;
}

/* @text (an ISO 8601 time) as unix µs, or -1. */
static gint64 time_of(json_t *text)
{
	const char *s = json_string_value(text);
	g_autoptr(GDateTime) t = s ? g_date_time_new_from_iso8601(s, NULL) : NULL;

	return t ? g_date_time_to_unix(t) * G_USEC_PER_SEC + g_date_time_get_microsecond(t) : -1;
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

/* The value of the interval holding @t_us (from <= t < to), or NULL. */
static json_t *intervals_at(struct intervals *iv, gint64 t_us)
{
	size_t n = iv->list ? json_array_size(iv->list) : 0;

	for (; iv->next < n; iv->next++) {
		json_t *e = json_array_get(iv->list, iv->next);
		gint64 from = time_of(json_object_get(e, "from"));
		gint64 to = time_of(json_object_get(e, "to"));

		if (from > t_us)
			return NULL; /* a gap: later rows may still fall in this one */
		if (t_us < to)
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
	gint64 day_start = from + MARGIN_US;
	gint64 day_end = day_start + json_integer_value(hours) * 3600 * G_USEC_PER_SEC;
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
