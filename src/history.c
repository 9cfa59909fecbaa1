/* history: periods, the join of a period's pages, and its JSON and CSV files. */
#include "history.h"

#include <errno.h>
#include <string.h>

#define DAY_S 86400

static const char *const resolution_names[HISTORY_RESOLUTIONS] = {
    [HISTORY_QUARTER_HOUR] = "quarterHour",
    [HISTORY_HOUR] = "hour",
    [HISTORY_DAY] = "day",
    [HISTORY_MONTH] = "month",
};

const char *history_resolution_name(enum history_resolution r)
{
	return r < HISTORY_RESOLUTIONS ? resolution_names[r] : "";
}

int history_resolution_parse(const char *name)
{
	for (int r = 0; r < HISTORY_RESOLUTIONS && name; r++)
		if (strcmp(name, resolution_names[r]) == 0)
			return r;
	return -ENOENT;
}

/* Unix seconds of a UTC date, months and days counted from 1 (GLib's calendar). */
static gint64 utc_s(int year, int month, int day)
{
	g_autoptr(GDateTime) t = g_date_time_new_utc(year, month, day, 0, 0, 0);

	return t ? g_date_time_to_unix(t) : 0;
}

struct history_period history_period_at(enum history_resolution r, gint64 t_s)
{
	g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(t_s);
	int y = t ? g_date_time_get_year(t) : 1970;
	int m = t ? g_date_time_get_month(t) : 1;
	int d = t ? g_date_time_get_day_of_month(t) : 1;

	switch (r) {
	case HISTORY_DAY:
		return (struct history_period){utc_s(y, m, 1),
					       m == 12 ? utc_s(y + 1, 1, 1) : utc_s(y, m + 1, 1)};
	case HISTORY_MONTH:
		return (struct history_period){utc_s(y, 1, 1), utc_s(y + 1, 1, 1)};
	default: {
		gint64 start = utc_s(y, m, d);
		return (struct history_period){start, start + DAY_S};
	}
	}
}

char *history_period_name(enum history_resolution r, gint64 start_s)
{
	g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(start_s);

	if (!t)
		return g_strdup("");
	return g_date_time_format(t, r == HISTORY_MONTH ? "%Y"
				     : r == HISTORY_DAY ? "%Y-%m"
							: "%Y-%m-%d");
}

int history_file_parse(enum history_resolution r, const char *name, struct history_period *ret,
		       enum history_format *ret_format)
{
	const char *dot = name ? strrchr(name, '.') : NULL;
	int y = 0, m = 1, d = 1, used = 0;

	if (!dot || r >= HISTORY_RESOLUTIONS)
		return -ENOENT;
	if (strcmp(dot, ".json") == 0)
		*ret_format = HISTORY_JSON;
	else if (strcmp(dot, ".csv") == 0)
		*ret_format = HISTORY_CSV;
	else
		return -ENOENT;
	g_autofree char *stem = g_strndup(name, (gsize)(dot - name));
	if (strspn(stem, "0123456789-") != strlen(stem))
		return -ENOENT;
	int n = r == HISTORY_MONTH ? sscanf(stem, "%4d%n", &y, &used)
		: r == HISTORY_DAY ? sscanf(stem, "%4d-%2d%n", &y, &m, &used)
				   : sscanf(stem, "%4d-%2d-%2d%n", &y, &m, &d, &used);
	if (n < 1 || (size_t)used != strlen(stem) || y < 1970 || y > 9998)
		return -ENOENT;
	if (!g_date_valid_dmy((GDateDay)d, (GDateMonth)m, (GDateYear)y))
		return -ENOENT;
	*ret = history_period_at(r, utc_s(y, m, d));
	/* Only the canonical spelling ("2026-01-05", not "2026-1-5"). */
	g_autofree char *canonical = history_period_name(r, ret->start_s);
	return strcmp(canonical, stem) == 0 ? 0 : -ENOENT;
}

void history_list_periods(enum history_resolution r, gint64 oldest_s, gint64 now_s,
			  GPtrArray *entries)
{
	if (r >= HISTORY_RESOLUTIONS || oldest_s > now_s)
		return;
	for (struct history_period p = history_period_at(r, oldest_s); p.start_s <= now_s;
	     p = history_period_at(r, p.end_s)) {
		g_autofree char *name = history_period_name(r, p.start_s);
		g_autofree char *json = g_strconcat(name, ".json", NULL);
		g_autofree char *csv = g_strconcat(name, ".csv", NULL);

		g_ptr_array_add(entries, provider_entry_new(json, ENTRY_FILE));
		g_ptr_array_add(entries, provider_entry_new(csv, ENTRY_FILE));
		if (p.end_s <= p.start_s)
			break; /* a calendar GLib cannot count: stop rather than loop */
	}
}

gint64 history_oldest(const struct provider_path *path, long retention_days)
{
	gint64 oldest = path->now_s - (gint64)HISTORY_MAX_DAYS * DAY_S;

	if (retention_days > 0 && retention_days < HISTORY_MAX_DAYS)
		oldest = MAX(oldest, path->now_s - (gint64)retention_days * DAY_S);
	return MAX(oldest, path->history_from_s);
}

char *history_iso(gint64 t_s)
{
	g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(t_s);

	return t ? g_date_time_format(t, "%Y-%m-%dT%H:%M:%SZ") : g_strdup("");
}

bool history_parse_iso(const char *text, gint64 *ret_s)
{
	g_autoptr(GDateTime) t = text ? g_date_time_new_from_iso8601(text, NULL) : NULL;

	if (!t)
		return false;
	*ret_s = g_date_time_to_unix(t);
	return true;
}

/* The times of point @p, when it has both, in order. */
static bool point_times(json_t *p, gint64 *from_s, gint64 *to_s)
{
	return json_is_object(p) &&
	       history_parse_iso(json_string_value(json_object_get(p, "from")), from_s) &&
	       history_parse_iso(json_string_value(json_object_get(p, "to")), to_s) &&
	       *from_s < *to_s;
}

json_t *history_join(json_t *pages, const struct history_period *period)
{
	json_t *points, *page, *p;
	gint64 last_end = G_MININT64;
	size_t i, k;

	if (!json_is_array(pages))
		return NULL;
	points = json_array();
	json_array_foreach (pages, i, page) {
		json_t *data = json_is_object(page) ? json_object_get(page, "data") : NULL;

		if (!json_is_array(data)) {
			json_decref(points);
			return NULL;
		}
		json_array_foreach (data, k, p) {
			gint64 from_s, to_s;

			if (!point_times(p, &from_s, &to_s) || from_s < period->start_s ||
			    from_s >= period->end_s || from_s < last_end)
				continue;
			json_array_append(points, p);
			last_end = to_s;
		}
	}
	return points;
}

int history_render_json(enum history_resolution r, const struct history_period *period,
			json_t *points, GString *out)
{
	g_autofree char *from = history_iso(period->start_s);
	g_autofree char *to = history_iso(period->end_s);
	json_t *file = json_pack("{s:s, s:s, s:s, s:O}", "resolution", history_resolution_name(r),
				 "from", from, "to", to, "data", points);
	int ret = provider_render_json(file, out);

	json_decref(file);
	return ret;
}

/* Appends @text as one CSV field (RFC 4180): quoted when it holds a comma, a quote or a
 * line break, quotes doubled. */
static void csv_field(GString *out, const char *text)
{
	if (!strpbrk(text, ",\"\r\n")) {
		g_string_append(out, text);
		return;
	}
	g_string_append_c(out, '"');
	for (const char *c = text; *c; c++) {
		if (*c == '"')
			g_string_append_c(out, '"');
		g_string_append_c(out, *c);
	}
	g_string_append_c(out, '"');
}

/* The metrics of @points, in order of first appearance: an array of names (borrowed from
 * the points). */
static GPtrArray *metric_names(json_t *points)
{
	GPtrArray *names = g_ptr_array_new();
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	const char *key;
	json_t *p, *v;
	size_t i;

	json_array_foreach (points, i, p) {
		json_object_foreach (json_object_get(p, "metrics"), key, v) {
			if (!g_hash_table_contains(seen, key)) {
				g_hash_table_add(seen, (char *)key);
				g_ptr_array_add(names, (char *)key);
			}
		}
	}
	return names;
}

int history_render_csv(json_t *points, const char *(*unit_of)(const char *metric), GString *out)
{
	g_autoptr(GPtrArray) names = NULL;
	json_t *p;
	size_t i;

	if (!json_is_array(points))
		return -EIO;
	names = metric_names(points);
	g_string_append(out, "from,to");
	for (guint k = 0; k < names->len; k++) {
		const char *unit = unit_of ? unit_of(names->pdata[k]) : NULL;
		g_autofree char *head =
		    unit && *unit ? g_strdup_printf("%s[%s]", (char *)names->pdata[k], unit)
				  : g_strdup(names->pdata[k]);
		g_string_append_c(out, ',');
		csv_field(out, head);
	}
	g_string_append_c(out, '\n');
	json_array_foreach (points, i, p) {
		gint64 from_s, to_s;
		json_t *metrics = json_object_get(p, "metrics");

		if (!point_times(p, &from_s, &to_s))
			continue; /* history_join let none of these through */
		g_autofree char *from = history_iso(from_s);
		g_autofree char *to = history_iso(to_s);
		g_string_append_printf(out, "%s,%s", from, to);
		for (guint k = 0; k < names->len; k++) {
			json_t *v = json_is_object(metrics)
					? json_object_get(metrics, names->pdata[k])
					: NULL;
			g_autoptr(GString) cell = g_string_new(NULL);

			g_string_append_c(out, ',');
			if (v && provider_render_scalar(v, cell) == 0) {
				g_string_truncate(cell, cell->len - 1); /* its newline */
				csv_field(out, cell->str);
			}
		}
		g_string_append_c(out, '\n');
	}
	return 0;
}
