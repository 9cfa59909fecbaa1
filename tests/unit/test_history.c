/* history: periods and their names, the join of pages, the JSON and CSV files. */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "history.h"

#define T_2026_12_02 1796169600 /* 2026-12-02T00:00:00Z */

static gint64 iso_s(const char *text)
{
	gint64 t = 0;

	g_assert_true(history_parse_iso(text, &t));
	return t;
}

static void test_a_period_is_a_utc_day_month_or_year_after_the_resolution(void)
{
	gint64 t = iso_s("2026-12-02T13:45:00Z");
	struct history_period p = history_period_at(HISTORY_HOUR, t);
	g_autofree char *day = history_period_name(HISTORY_HOUR, p.start_s);

	g_assert_cmpint(p.start_s, ==, T_2026_12_02);
	g_assert_cmpint(p.end_s, ==, T_2026_12_02 + 86400);
	g_assert_cmpstr(day, ==, "2026-12-02");
	p = history_period_at(HISTORY_DAY, t);
	g_autofree char *month = history_period_name(HISTORY_DAY, p.start_s);
	g_assert_cmpstr(month, ==, "2026-12");
	g_assert_cmpint(p.end_s, ==, iso_s("2027-01-01T00:00:00Z"));
	p = history_period_at(HISTORY_MONTH, t);
	g_autofree char *year = history_period_name(HISTORY_MONTH, p.start_s);
	g_assert_cmpstr(year, ==, "2026");
	g_assert_cmpint(p.start_s, ==, iso_s("2026-01-01T00:00:00Z"));
}

static void test_only_canonical_period_names_are_files(void)
{
	struct history_period p;
	enum history_format f;

	g_assert_cmpint(history_file_parse(HISTORY_HOUR, "2026-12-02.csv", &p, &f), ==, 0);
	g_assert_cmpint(f, ==, HISTORY_CSV);
	g_assert_cmpint(p.start_s, ==, T_2026_12_02);
	g_assert_cmpint(history_file_parse(HISTORY_DAY, "2026-02.json", &p, &f), ==, 0);
	g_assert_cmpint(f, ==, HISTORY_JSON);
	g_assert_cmpint(p.end_s, ==, iso_s("2026-03-01T00:00:00Z"));
	const char *bad[] = {
	    "2026-2-02.csv",  "2026-12-02",	 "2026-12-02.txt",	"2026-02-30.json",
	    "2026-12.json",   "+2026-12-02.csv", "2026-12-02.json.csv", "",
	    "1969-12-31.csv", "..json"};
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
		g_assert_cmpint(history_file_parse(HISTORY_HOUR, bad[i], &p, &f), ==, -ENOENT);
	g_assert_cmpint(history_file_parse(HISTORY_MONTH, "2026-12.json", &p, &f), ==, -ENOENT);
}

static void test_a_listing_has_each_period_from_the_oldest_to_today(void)
{
	g_autoptr(GPtrArray) entries = provider_entries_new();
	gint64 now = T_2026_12_02 + 3600;

	history_list_periods(HISTORY_HOUR, now - 2 * 86400, now, entries);
	g_assert_cmpuint(entries->len, ==, 6);
	g_assert_cmpstr(((struct provider_entry *)entries->pdata[0])->name, ==, "2026-11-30.json");
	g_assert_cmpstr(((struct provider_entry *)entries->pdata[1])->name, ==, "2026-11-30.csv");
	g_assert_cmpstr(((struct provider_entry *)entries->pdata[5])->name, ==, "2026-12-02.csv");
	g_ptr_array_set_size(entries, 0);
	history_list_periods(HISTORY_DAY, now - 30 * 86400, now, entries);
	g_assert_cmpuint(entries->len, ==, 4); /* November and December */
	g_ptr_array_set_size(entries, 0);
	history_list_periods(HISTORY_HOUR, G_MAXINT64, now, entries);
	g_assert_cmpuint(entries->len, ==, 0);
}

static void test_the_oldest_day_listed_is_the_later_of_retention_and_history_days(void)
{
	struct provider_path p = {.now_s = T_2026_12_02,
				  .history_from_s = T_2026_12_02 - 30 * 86400};

	g_assert_cmpint(history_oldest(&p, 7), ==, T_2026_12_02 - 7 * 86400);
	g_assert_cmpint(history_oldest(&p, 90), ==, T_2026_12_02 - 30 * 86400);
	p.history_from_s = 0;
	g_assert_cmpint(history_oldest(&p, 0), ==, T_2026_12_02 - HISTORY_MAX_DAYS * 86400LL);
	g_assert_cmpint(history_oldest(&p, 1000000000), ==,
			T_2026_12_02 - HISTORY_MAX_DAYS * 86400LL);
}

static json_t *point(const char *from, const char *to, double v)
{
	return json_pack("{s:s, s:s, s:{s:f}}", "from", from, "to", to, "metrics", "energy", v);
}

static void test_pages_join_in_order_without_overlap_and_inside_the_period(void)
{
	struct history_period day = {T_2026_12_02, T_2026_12_02 + 86400};
	json_t *pages =
	    json_pack("[{s:[o,o]}, {s:[o,o,o]}, {s:[]}]", "data",
		      point("2026-12-01T23:00:00Z", "2026-12-02T00:00:00Z", 9), /* before the day */
		      point("2026-12-02T00:00:00Z", "2026-12-02T01:00:00Z", 1), "data",
		      point("2026-12-02T00:00:00Z", "2026-12-02T01:00:00Z", 1), /* repeated */
		      point("2026-12-02T01:00:00+00:00", "2026-12-02T02:00:00Z", 2),
		      point("2026-12-03T00:00:00Z", "2026-12-03T01:00:00Z", 9), /* after the day */
		      "data");
	json_t *points = history_join(pages, &day);

	g_assert_nonnull(points);
	g_assert_cmpuint(json_array_size(points), ==, 2);
	g_assert_cmpfloat(json_real_value(json_object_get(
			      json_object_get(json_array_get(points, 1), "metrics"), "energy")),
			  ==, 2);
	json_decref(points);
	json_decref(pages);
	pages = json_pack("[{s:{}}]", "data");
	g_assert_null(history_join(pages, &day));
	json_decref(pages);
}

static const char *unit_of(const char *metric)
{
	return strcmp(metric, "energy") == 0 ? "kWh" : NULL;
}

static void test_the_csv_has_a_row_per_point_and_a_header_with_units(void)
{
	json_t *points =
	    json_pack("[o, {s:s, s:s, s:{s:i, s:s}}]",
		      point("2026-12-02T00:00:00Z", "2026-12-02T01:00:00Z", 1.5), "from",
		      "2026-12-02T01:00:00.000+00:00", "to", "2026-12-02T02:00:00Z", "metrics",
		      "energy", 2, "odd,\"name", "text");
	g_autoptr(GString) out = g_string_new(NULL);

	g_assert_cmpint(history_render_csv(points, unit_of, out), ==, 0);
	g_assert_cmpstr(out->str, ==,
			"from,to,energy[kWh],\"odd,\"\"name\"\n"
			"2026-12-02T00:00:00Z,2026-12-02T01:00:00Z,1.5,\n"
			"2026-12-02T01:00:00Z,2026-12-02T02:00:00Z,2,text\n");
	json_decref(points);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/history/a_period_is_a_utc_day_month_or_year_after_the_resolution",
			test_a_period_is_a_utc_day_month_or_year_after_the_resolution);
	g_test_add_func("/history/only_canonical_period_names_are_files",
			test_only_canonical_period_names_are_files);
	g_test_add_func("/history/a_listing_has_each_period_from_the_oldest_to_today",
			test_a_listing_has_each_period_from_the_oldest_to_today);
	g_test_add_func("/history/the_oldest_day_listed_is_the_later_of_retention_and_history_days",
			test_the_oldest_day_listed_is_the_later_of_retention_and_history_days);
	g_test_add_func("/history/pages_join_in_order_without_overlap_and_inside_the_period",
			test_pages_join_in_order_without_overlap_and_inside_the_period);
	g_test_add_func("/history/the_csv_has_a_row_per_point_and_a_header_with_units",
			test_the_csv_has_a_row_per_point_and_a_header_with_units);
	return g_test_run();
}
