/* log: one place that writes messages, to stderr in the foreground and to syslog
 * (the journal) when daemonized. Every message passes through a scrubber that
 * replaces any registered secret (token, client secret) by "[redacted]", so a
 * mistake elsewhere cannot put a token in a log, and then through log_escape, so that
 * nothing a message quotes (a cloud's error, a name) can forge a line or steer a
 * terminal. All functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <syslog.h>
#include <glib.h>

/* Sets the program name, whether to use syslog instead of stderr, and debug lines. */
void log_setup(const char *ident, bool use_syslog, bool debug);
/* True when -o debug asked for request lines. */
bool log_debug_enabled(void);
/* Registers @secret (copied) so that it never appears in a log line; NULL/"" ignored. */
void log_add_secret(const char *secret);
/* Forgets a secret registered before (when a token was rotated away). */
void log_remove_secret(const char *secret);
/* Replaces every registered secret in @s; returns a new string (g_free). */
char *log_scrub(const char *s);
/* @s with every control character (C0, DEL, C1 such as NEL, bidi overrides and
 * isolates, line separators) and every byte that is not UTF-8 written as \xNN or \uNNNN,
 * and backslashes doubled (g_free): safe for one log line or a terminal. Every log line
 * passes through it. */
char *log_escape(const char *s);
/* @unix_s as ISO 8601 in UTC ("2026-12-02T04:44:31Z", g_free), or NULL when not after
 * 1970: the one time format of status.json, `smarthomefs status` and the log. */
char *iso_time_utc(gint64 unix_s);

void log_write(int priority, const char *file, int line, const char *func, const char *fmt, ...)
    G_GNUC_PRINTF(5, 6);

#define log_error(...) log_write(LOG_ERR, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARNING, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_debug_enabled())                                                           \
			log_write(LOG_DEBUG, __FILE__, __LINE__, __func__, __VA_ARGS__);           \
	} while (0)
