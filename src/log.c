/* log: stderr or syslog, with secrets scrubbed from every line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static GMutex log_mutex;
static const char *log_ident = "smarthomefs";
static bool log_to_syslog;
static bool log_debug_on;
static GPtrArray *log_secrets; /* (log_mutex) char * */

void log_setup(const char *ident, bool use_syslog, bool debug)
{
	g_mutex_lock(&log_mutex);
	log_ident = ident;
	log_debug_on = debug;
	if (use_syslog && !log_to_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
	log_to_syslog = use_syslog;
	g_mutex_unlock(&log_mutex);
}

bool log_debug_enabled(void)
{
	return log_debug_on;
}

void log_add_secret(const char *secret)
{
	/* Short strings would redact ordinary words; real tokens are long. */
	if (!secret || strlen(secret) < 8)
		return;
	g_mutex_lock(&log_mutex);
	if (!log_secrets)
		log_secrets = g_ptr_array_new_with_free_func(g_free);
	bool known = false;
	for (guint i = 0; i < log_secrets->len && !known; i++)
		known = strcmp(log_secrets->pdata[i], secret) == 0;
	if (!known)
		g_ptr_array_add(log_secrets, g_strdup(secret));
	g_mutex_unlock(&log_mutex);
}

void log_remove_secret(const char *secret)
{
	if (!secret)
		return;
	g_mutex_lock(&log_mutex);
	for (guint i = 0; log_secrets && i < log_secrets->len; i++) {
		if (strcmp(log_secrets->pdata[i], secret) == 0) {
			g_ptr_array_remove_index_fast(log_secrets, i);
			break;
		}
	}
	g_mutex_unlock(&log_mutex);
}

char *log_scrub(const char *s)
{
	GString *out = g_string_new(s);
	g_mutex_lock(&log_mutex);
	for (guint i = 0; log_secrets && i < log_secrets->len; i++)
		g_string_replace(out, log_secrets->pdata[i], "[redacted]", 0);
	g_mutex_unlock(&log_mutex);
	return g_string_free(out, FALSE);
}

char *iso_time_utc(gint64 unix_s)
{
	if (unix_s <= 0)
		return NULL;
	g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(unix_s);
	return dt ? g_date_time_format(dt, "%Y-%m-%dT%H:%M:%SZ") : NULL;
}

/* Whether the character at @p (@len bytes) steers a terminal or a log reader instead of
 * being text: C0 and C1 controls (LF, CR, ESC, NEL, ...), DEL, and the bidirectional
 * overrides and isolates that make a line read other than it is. */
static bool is_control(gunichar c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0x202a && c <= 0x202e) ||
	       (c >= 0x2066 && c <= 0x2069) || c == 0x2028 || c == 0x2029;
}

char *log_escape(const char *s)
{
	GString *out = g_string_sized_new(strlen(s));
	const char *p = s;

	while (*p) {
		gunichar c = g_utf8_get_char_validated(p, -1);
		const char *end;

		if (c == (gunichar)-1 || c == (gunichar)-2) {
			/* Not UTF-8: the byte, visibly. */
			g_string_append_printf(out, "\\x%02x", (unsigned char)*p);
			p++;
			continue;
		}
		end = g_utf8_next_char(p);
		if (c == '\\')
			g_string_append(out, "\\\\");
		else if (c < 0x80 && is_control(c))
			g_string_append_printf(out, "\\x%02x", (unsigned)c);
		else if (is_control(c))
			g_string_append_printf(out, "\\u%04x", (unsigned)c);
		else
			g_string_append_len(out, p, end - p);
		p = end;
	}
	return g_string_free(out, FALSE);
}

static const char *priority_word(int priority)
{
	switch (priority) {
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

void log_write(int priority, const char *file, int line, const char *func, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *raw = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_autofree char *scrubbed = log_scrub(raw);
	/* One message, one line: what a cloud or a file name carries cannot forge another
	 * line or steer the terminal that shows it. */
	g_autofree char *msg = log_escape(scrubbed);

	if (log_to_syslog) {
		syslog(priority, "%s", msg);
		return;
	}
	/* Where the message came from matters when debugging, not to a user reading errors. */
	if (log_debug_on)
		fprintf(stderr, "%s: %s: %s (%s:%d %s)\n", log_ident, priority_word(priority), msg,
			file, line, func);
	else
		fprintf(stderr, "%s: %s: %s\n", log_ident, priority_word(priority), msg);
}
