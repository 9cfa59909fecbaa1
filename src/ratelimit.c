/* ratelimit: parses the budget headers, and keeps what a client knows of the budget
 * (struct budget: a 429's block, the reset learned from r jumping up, the background
 * share; see the header). The values come straight from the network, so
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
	if (out->reset_in_s > RATELIMIT_WAIT_MAX_S)
		out->reset_in_s = RATELIMIT_WAIT_MAX_S;
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
			*seconds = parse_count(s, end, &v) ? MIN(v, RATELIMIT_WAIT_MAX_S)
							   : RATELIMIT_WAIT_MAX_S;
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
	    when > now ? (long)MIN((gint64)when - (gint64)now, (gint64)RATELIMIT_WAIT_MAX_S) : 0;
	*seconds = delta;
	return 0;
}

/* ---- the budget over time ---- */

/* With no window announced, a learned reset repeats daily. */
#define DEFAULT_WINDOW_S (24L * 3600L)
/* After a 429 that says nothing of when to come back, with nothing learned or assumed. */
#define DEFAULT_BLOCK_S 60

void budget_init(struct budget *b)
{
	memset(b, 0, sizeof(*b));
	ratelimit_unknown(&b->last);
}

gint64 reset_phase_next(const struct reset_phase *p, gint64 after_s)
{
	if (p->window_s <= 0)
		return 0;
	gint64 k = (after_s - p->offset_s) / p->window_s;
	gint64 t = p->offset_s + k * p->window_s;
	while (t <= after_s)
		t += p->window_s;
	while (t - p->window_s > after_s)
		t -= p->window_s;
	return t;
}

/* A reset happened in (@since_s, @now_s]: keep it as the account's reset phase, unless
 * the one known is more precise and agrees. The upper bound is kept, so the predicted
 * reset is never before the real one. Returns whether the phase changed. */
static bool budget_learn(struct budget *b, gint64 since_s, gint64 now_s)
{
	struct reset_phase seen = {
	    .window_s = b->last.window_s > 0 ? b->last.window_s : DEFAULT_WINDOW_S,
	    .uncertainty_s = MAX(now_s - since_s, 0),
	};
	seen.offset_s = ((now_s % seen.window_s) + seen.window_s) % seen.window_s;
	const struct reset_phase *known = &b->learned;
	bool agrees = known->window_s == seen.window_s &&
		      reset_phase_next(known, since_s) <= now_s + known->uncertainty_s;
	if (agrees && known->uncertainty_s <= seen.uncertainty_s)
		return false;
	b->learned = seen;
	return true;
}

bool budget_note_answer(struct budget *b, long status, const char *ratelimit, const char *policy,
			const char *retry_after, long in_flight, gint64 now_s)
{
	struct ratelimit rl;
	bool known = ratelimit_parse(ratelimit, policy, &rl) == 0;
	bool learned = false;

	if (known) {
		/* A policy header alone keeps what the last RateLimit said about the rest. */
		if (rl.quota >= 0)
			b->last.quota = rl.quota;
		if (rl.window_s >= 0)
			b->last.window_s = rl.window_s;
	}
	if (status == 429) {
		long wait = -1;
		enum refill_source source = REFILL_ANNOUNCED;
		gint64 until;
		if (retry_after)
			retry_after_parse(retry_after, (time_t)now_s, &wait);
		if (wait < 0 && known && rl.reset_in_s >= 0)
			wait = rl.reset_in_s;
		if (wait >= 0) {
			until = now_s + wait;
		} else {
			/* Not told: the learned reset, else a whole window (tado's is a day:
			 * one 429 a window at most), else a minute. */
			until = reset_phase_next(&b->learned, now_s);
			source = REFILL_LEARNED;
			if (!until && b->last.window_s > 0)
				until = now_s + b->last.window_s;
			if (!until)
				until = now_s + DEFAULT_BLOCK_S;
		}
		b->blocked_until_s = MAX(b->blocked_until_s, until);
		/* Spent until then, whatever the headers said. */
		b->last.remaining = 0;
		b->announced_at_s = now_s;
		b->announced_refill_at_s = source == REFILL_ANNOUNCED ? until : 0;
		return false;
	}
	if (!known || rl.remaining < 0)
		return false;
	/* r went up by more than the calls still in flight could explain: the budget was
	 * refilled since the last answer. */
	if (b->last.remaining >= 0 && rl.remaining > b->last.remaining + in_flight &&
	    now_s >= b->announced_at_s) {
		learned = budget_learn(b, b->announced_at_s, now_s);
		b->announced_refill_at_s = 0;
		b->blocked_until_s = 0;
	}
	b->last.remaining = rl.remaining;
	b->last.reset_in_s = rl.reset_in_s;
	b->announced_at_s = now_s;
	if (rl.reset_in_s >= 0)
		b->announced_refill_at_s = now_s + rl.reset_in_s;
	else if (b->announced_refill_at_s <= now_s)
		b->announced_refill_at_s = 0;
	if (rl.remaining == 0 && b->announced_refill_at_s > now_s)
		b->blocked_until_s = MAX(b->blocked_until_s, b->announced_refill_at_s);
	return learned;
}

gint64 budget_refill_at(const struct budget *b, enum refill_source *source)
{
	*source = REFILL_UNKNOWN;
	if (b->last.remaining < 0)
		return 0;
	if (b->announced_refill_at_s > 0) {
		*source = REFILL_ANNOUNCED;
		return b->announced_refill_at_s;
	}
	if (b->learned.window_s > 0) {
		*source = REFILL_LEARNED;
		return reset_phase_next(&b->learned, b->announced_at_s);
	}
	if (b->last.window_s > 0) {
		*source = REFILL_ASSUMED;
		return b->announced_at_s + b->last.window_s;
	}
	return 0;
}

gint64 budget_blocked_until(const struct budget *b, long in_flight, gint64 now_s)
{
	enum refill_source source;
	gint64 refill_at = budget_refill_at(b, &source);
	gint64 until = b->blocked_until_s;

	/* Calls in flight spend the budget too, so concurrent readers cannot overdraw it. */
	if (b->last.remaining >= 0 && b->last.remaining <= in_flight && refill_at > now_s) {
		/* An assumed refill is a guess: one call at a time may find out (at worst a
		 * 429, which tells when to come back). */
		if (source != REFILL_ASSUMED)
			until = MAX(until, refill_at);
		else if (in_flight > 0)
			until = MAX(until, now_s + 1);
	}
	return until > now_s ? until : 0;
}

/* Calls a background spender leaves for the user's reads, whatever the share: as many
 * as budget_stretch_ttl keeps for a reader of something new. */
#define BACKGROUND_RESERVE_MIN 2

bool budget_background_allows(const struct budget *b, int share_percent, long in_flight,
			      gint64 now_s)
{
	enum refill_source source;
	gint64 refill_at = budget_refill_at(b, &source);
	long quota = b->last.quota, remaining = b->last.remaining;

	if (share_percent <= 0 || quota <= 0 || remaining < 0 ||
	    budget_blocked_until(b, in_flight, now_s))
		return false;
	if (refill_at > 0 && refill_at <= now_s)
		return in_flight == 0; /* what is left is not known any more: one call tells */
	long share = (long)((gint64)quota * MIN(share_percent, 100) / 100);
	long reserve = MAX(quota - share, BACKGROUND_RESERVE_MIN);
	return remaining - in_flight - 1 >= reserve;
}

int budget_stretch_ttl(const struct budget *b, int ttl_s, long resources, gint64 now_s)
{
	enum refill_source source;
	gint64 refill_at = budget_refill_at(b, &source);
	long remaining = b->last.remaining;

	/* Spread what is left over the time until the refill: N resources read in a loop
	 * cost N calls per TTL, so the TTL must be at least N * refill / remaining. Two
	 * calls are kept for a reader of something new. Past the refill, what was left is
	 * no longer known: the next answer tells. */
	if (remaining < 0 || refill_at <= now_s)
		return ttl_s;
	double n = (double)MAX(resources, 1);
	double usable = (double)MAX(remaining - 2, 1);
	double stretched = n * (double)(refill_at - now_s) / usable;
	return (int)MIN(MAX((double)ttl_s, stretched), (double)G_MAXINT);
}

const char *refill_source_name(enum refill_source source)
{
	switch (source) {
	case REFILL_ANNOUNCED:
		return "announced";
	case REFILL_LEARNED:
		return "learned";
	case REFILL_ASSUMED:
		return "assumed";
	default:
		return NULL;
	}
}

#define PHASE_GROUP "reset"

int reset_phase_load(const char *file, struct reset_phase *out)
{
	g_autoptr(GKeyFile) kf = g_key_file_new();
	struct reset_phase p;

	memset(out, 0, sizeof(*out));
	if (!g_key_file_load_from_file(kf, file, G_KEY_FILE_NONE, NULL))
		return -ENOENT;
	p.window_s = g_key_file_get_int64(kf, PHASE_GROUP, "window_s", NULL);
	p.offset_s = g_key_file_get_int64(kf, PHASE_GROUP, "offset_s", NULL);
	p.uncertainty_s = g_key_file_get_int64(kf, PHASE_GROUP, "uncertainty_s", NULL);
	/* Someone else's or a damaged file must not stop calls for long. */
	if (p.window_s <= 0 || p.window_s > 7 * DEFAULT_WINDOW_S || p.offset_s < 0 ||
	    p.offset_s >= p.window_s || p.uncertainty_s < 0)
		return -EINVAL;
	*out = p;
	return 0;
}

int reset_phase_save(const char *file, const struct reset_phase *p)
{
	g_autofree char *dir = g_path_get_dirname(file);
	g_autofree char *text = g_strdup_printf(
	    "# smarthomefs: when this account's API budget refills, learned from its answers\n"
	    "[" PHASE_GROUP "]\nwindow_s=%" G_GINT64_FORMAT "\noffset_s=%" G_GINT64_FORMAT
	    "\nuncertainty_s=%" G_GINT64_FORMAT "\n",
	    p->window_s, p->offset_s, p->uncertainty_s);

	if (g_mkdir_with_parents(dir, 0700) != 0)
		return -errno;
	if (!g_file_set_contents_full(file, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL))
		return -EIO;
	return 0;
}
