/* history: a device's or a zone's past as files, one file a period, the same for every
 * cloud. A provider maps its own history calls onto these:
 *
 *   .../history/<resolution>/<period>.json and <period>.csv
 *
 * where a period is a UTC day for quarterHour and hour ("2026-12-01"), a UTC month for
 * day ("2026-12") and a UTC year for month ("2026"). Only the canonical name of a period
 * is a file, so that one period has one name.
 *
 * A period that has ended is immutable: the provider's source() sets the resource's
 * immutable_at_s to the period's end, and the session then fetches it once (all its
 * pages), pins the copy on disk for good (cache.h) and shows the period's end as its
 * mtime. The period that holds now changes under the normal TTL.
 *
 * Listing costs no call: which periods exist follows from the clock (provider_path's
 * now_s, the cloud's clock) and how far back the history reaches (history_from_s and the
 * cloud's retention); the listing never fetches a period.
 *
 * The files: the JSON is {"resolution","from","to","data":[{"from","to","metrics"}]},
 * the points of every page in order, each inside the period, none overlapping the one
 * before (a repeated or overlapping point is dropped). The CSV has one row per point of
 * the JSON, in the same order: "from,to,<metric>[<unit>],..." then ISO 8601 UTC times
 * and the values (an empty cell where a point lacks a metric).
 *
 * Pure functions: thread-safe, no I/O. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#include "provider.h"

/* How far back history is ever listed, whatever a cloud says of its retention: it bounds
 * the pinned copies a device can have (docs/design.md, "History"). */
#define HISTORY_MAX_DAYS 1830
/* How long after a period's end a cloud may still add to it: it is final (fetched once
 * for good) only then. An hour: the docs speak of data "unaltered after the initial
 * processing" without saying how long that takes (UNCONFIRMED). */
#define HISTORY_SETTLE_S 3600

enum history_resolution {
	HISTORY_QUARTER_HOUR,
	HISTORY_HOUR,
	HISTORY_DAY,
	HISTORY_MONTH,
	HISTORY_RESOLUTIONS,
};

enum history_format { HISTORY_JSON, HISTORY_CSV };

/* A half-open span of UTC time, unix seconds. */
struct history_period {
	gint64 start_s;
	gint64 end_s;
};

/* "quarterHour", "hour", "day", "month". */
const char *history_resolution_name(enum history_resolution r);
/* The resolution named @name, or -ENOENT. */
int history_resolution_parse(const char *name);

/* The period of resolution @r's files that holds instant @t_s. */
struct history_period history_period_at(enum history_resolution r, gint64 t_s);
/* The name of the period that starts at @start_s (g_free): "2026-12-01", "2026-12",
 * "2026". */
char *history_period_name(enum history_resolution r, gint64 start_s);
/* Parses file name @name ("2026-12-01.csv") of resolution @r: its period and format.
 * -ENOENT for anything but a canonical period name with ".json" or ".csv". */
int history_file_parse(enum history_resolution r, const char *name, struct history_period *ret,
		       enum history_format *ret_format);
/* Appends the files (ENTRY_FILE; each period's .json then .csv) of the periods of @r from
 * the one that holds @oldest_s to the one that holds @now_s, oldest first. Nothing when
 * @oldest_s is after @now_s. */
void history_list_periods(enum history_resolution r, gint64 oldest_s, gint64 now_s,
			  GPtrArray *entries);
/* The oldest instant a listing of @path reaches: @retention_days (the cloud's; <= 0:
 * unknown) and the mount's history_from_s, whichever is later, and never more than
 * HISTORY_MAX_DAYS back. */
gint64 history_oldest(const struct provider_path *path, long retention_days);

/* @t_s as "2026-12-01T00:00:00Z" (g_free). */
char *history_iso(gint64 t_s);
/* Parses an ISO 8601 time with a zone (Z or an offset, seconds fractions allowed) into
 * unix seconds (fractions cut). False when it is none. */
bool history_parse_iso(const char *text, gint64 *ret_s);

/* The points of @pages (an array of page bodies, each {"data":[{"from","to",...}]}) that
 * lie in @period, joined in order: a point that starts before the previous one ends is
 * dropped (pages that overlap), as is one whose times are not ISO 8601. A new array, or
 * NULL when @pages has the wrong shape. */
json_t *history_join(json_t *pages, const struct history_period *period);
/* Appends the JSON file of @points (history_join's) for @period of resolution @r. */
int history_render_json(enum history_resolution r, const struct history_period *period,
			json_t *points, GString *out);
/* Appends the CSV file of @points. @unit_of gives a metric's unit ("" or NULL: none). */
int history_render_csv(json_t *points, const char *(*unit_of)(const char *metric), GString *out);
