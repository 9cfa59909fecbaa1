/* ratelimit: parses the budget headers. The values come straight from the network, so
 * every byte is treated as hostile: unknown keys, junk and overflow are skipped, never
 * trusted, and nothing here can crash or loop on them. */
#include "ratelimit.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <glib.h>

/* A Retry-After that asks for more than a day is as good as "not today". */
#define RETRY_AFTER_MAX (24L * 3600L)

static void ratelimit_unknown(struct ratelimit *out)
{
	out->quota = -1;
	out->window_s = -1;
	out->remaining = -1;
	out->reset_in_s = -1;
}

/* Parses a non-negative decimal that fills [s, end) exactly (blanks around allowed). */
static bool parse_count(const char *s, const char *end, long *out)
{
	while (s < end && (*s == ' ' || *s == '\t' || *s == '"'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '"'))
		end--;
	if (s == end)
		return false;
	long v = 0;
	for (; s < end; s++) {
		if (!g_ascii_isdigit(*s))
			return false;
		int d = *s - '0';
		if (v > (LONG_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Stores @value in the field @key names. Both the short keys tado sends (IETF draft 8+:
 * q, w, r, t) and the long ones of earlier drafts (limit, remaining, reset) are
 * understood. The first value of a key wins: with several policies in one header, the
 * first is the one the server lists as binding. */
static bool ratelimit_set(struct ratelimit *out, const char *key, size_t key_len, long value)
{
	static const struct {
		const char *key;
		size_t field;
	} keys[] = {
	    {"q", offsetof(struct ratelimit, quota)},
	    {"limit", offsetof(struct ratelimit, quota)},
	    {"w", offsetof(struct ratelimit, window_s)},
	    {"window", offsetof(struct ratelimit, window_s)},
	    {"r", offsetof(struct ratelimit, remaining)},
	    {"remaining", offsetof(struct ratelimit, remaining)},
	    {"t", offsetof(struct ratelimit, reset_in_s)},
	    {"reset", offsetof(struct ratelimit, reset_in_s)},
	};
	for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
		if (strlen(keys[i].key) != key_len ||
		    g_ascii_strncasecmp(keys[i].key, key, key_len) != 0)
			continue;
		long *field = (long *)((char *)out + keys[i].field);
		if (*field < 0)
			*field = value;
		return true;
	}
	return false;
}

/* Walks "name";k=v;k=v, ... and returns how many known keys carried a number. */
static int ratelimit_parse_header(const char *h, struct ratelimit *out)
{
	int understood = 0;
	const char *p = h;
	while (*p) {
		const char *item_end = p + strcspn(p, ";,");
		const char *eq = memchr(p, '=', (size_t)(item_end - p));
		if (eq) {
			const char *k = p;
			const char *k_end = eq;
			while (k < k_end && (*k == ' ' || *k == '\t'))
				k++;
			while (k_end > k && (k_end[-1] == ' ' || k_end[-1] == '\t'))
				k_end--;
			long v;
			if (parse_count(eq + 1, item_end, &v) &&
			    ratelimit_set(out, k, (size_t)(k_end - k), v))
				understood++;
		}
		p = *item_end ? item_end + 1 : item_end;
	}
	return understood;
}

int ratelimit_parse(const char *ratelimit, const char *policy, struct ratelimit *out)
{
	ratelimit_unknown(out);
	int understood = 0;
	/* The live header first: where both carry a key (old drafts put the limit in
	 * RateLimit too) the live value is the fresher one. */
	if (ratelimit)
		understood += ratelimit_parse_header(ratelimit, out);
	if (policy)
		understood += ratelimit_parse_header(policy, out);
	return understood > 0 ? 0 : -EINVAL;
}

int retry_after_parse(const char *value, time_t now, long *seconds)
{
	if (!value)
		return -EINVAL;
	const char *s = value;
	while (*s == ' ' || *s == '\t')
		s++;
	const char *end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	if (s == end)
		return -EINVAL;

	if (g_ascii_isdigit(*s)) {
		long v;
		bool all_digits = true;
		for (const char *c = s; c < end; c++)
			all_digits = all_digits && g_ascii_isdigit(*c);
		if (all_digits) {
			/* Overflow still means "a very long time", not junk. */
			*seconds =
			    parse_count(s, end, &v) ? MIN(v, RETRY_AFTER_MAX) : RETRY_AFTER_MAX;
			return 0;
		}
		/* Falls through: an HTTP date never starts with a digit in IMF-fixdate, but
		 * the obsolete formats may; curl_getdate knows them all. */
	}

	/* curl_getdate is locale-independent (strptime's %a/%b are not) and reads the
	 * three HTTP date forms of RFC 9110 section 5.6.7. */
	g_autofree char *copy = g_strndup(s, (gsize)(end - s));
	time_t when = curl_getdate(copy, NULL);
	if (when == (time_t)-1)
		return -EINVAL;
	long delta =
	    when > now ? (long)MIN((gint64)when - (gint64)now, (gint64)RETRY_AFTER_MAX) : 0;
	*seconds = delta;
	return 0;
}
