/* tado_day: a pre-X zone's day report (GET /homes/{h}/zones/{z}/dayReport?date=YYYY-MM-DD,
 * PyTado's get_historic) as the files of its history/ directory: YYYY-MM-DD.json, the
 * report as tado sends it (the home's local day with 15 minutes either side), and
 * YYYY-MM-DD.csv, one row per 15-minute point of the local day itself, so that the CSVs
 * of consecutive days join without a gap or an overlap. Pure and thread-safe. */
#pragma once

#include <glib.h>
#include <jansson.h>

#include "history.h"

/* "2026-12-01" is 10 bytes and a NUL. */
#define TADO_DAY_DATE_LEN 11

/* Reads a history file's name: "YYYY-MM-DD.json" or ".csv" of a real calendar date (its
 * canonical spelling). Sets @date and *@format; -ENOENT for any other name. */
int tado_day_name_parse(const char *name, char date[TADO_DAY_DATE_LEN],
			enum history_format *format);
/* When the report of @home's local day @date is final: the home's next midnight (its
 * dateTimeZone; UTC when it names none this machine knows) plus tado's 15 minutes.
 * 0 for a date that is none. */
gint64 tado_day_final_at(json_t *home, const char *date);
/* Appends the files (each day's .json then .csv), oldest first, of @home's local days
 * from the one holding @oldest_s (never before the home's dateCreated, never more than
 * HISTORY_MAX_DAYS back) to the one holding @now_s. Nothing when @now_s is 0. */
void tado_day_list(json_t *home, gint64 oldest_s, gint64 now_s, GPtrArray *entries);

/* The CSV header: each column's metric with its unit in brackets. */
#define TADO_DAY_CSV_HEADER                                                                        \
	"time,inside_temperature[°C],humidity[%],setpoint[°C],power,call_for_heat,"              \
	"outside_temperature[°C],weather,sunny\n"

/* Appends the CSV of @report: the header, then a row for each insideTemperature point
 * of the local day (from interval.from + 15 min, hoursInDay hours), with the humidity
 * at that time and the setting, call for heat and weather of the intervals holding it;
 * an empty field where the report says nothing. -EIO for a body of another shape. */
int tado_day_render_csv(json_t *report, GString *out);
