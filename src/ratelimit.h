/* ratelimit: the budget a cloud announces in RateLimit / RateLimit-Policy headers
 * (tado: `RateLimit: "perday";r=15211`, `RateLimit-Policy: "perday";q=20000;w=86400`, and
 * `t=SECONDS` to the refill only with a 429) and Retry-After, and what a client knows of
 * it over time (struct budget): when it refills (announced, learned from r jumping up,
 * or assumed), whether a call may go out, how far a TTL must stretch.
 * No locks, no clock: callers pass the time and guard a struct budget themselves. */
#pragma once

#include <stdbool.h>
#include <time.h>
#include <glib.h>

struct ratelimit {
	long quota;	 /* q: calls per window, -1 unknown */
	long window_s;	 /* w: the window's length, -1 unknown */
	long remaining;	 /* r: calls left, -1 unknown */
	long reset_in_s; /* t: until the budget refills, -1 unknown */
};

/* Parses the two header values (either may be NULL) into @out (fields -1 when absent).
 * Returns 0 when anything was understood, -EINVAL otherwise. */
int ratelimit_parse(const char *ratelimit, const char *policy, struct ratelimit *out);
/* t and Retry-After are capped at this: more is "not today", and sums stay in range. */
#define RATELIMIT_WAIT_MAX_S (24L * 3600L)
/* Parses Retry-After (delta seconds or an HTTP date) relative to @now into *seconds
 * (never negative). Returns 0 or -EINVAL. */
int retry_after_parse(const char *value, time_t now, long *seconds);

/* When an account's budget refills: every window_s seconds, offset_s after the epoch's
 * (for a day: seconds after midnight UTC), known to uncertainty_s. window_s 0: unknown. */
struct reset_phase {
	gint64 window_s;
	gint64 offset_s;
	gint64 uncertainty_s;
};

/* The first reset of @p after @after_s (unix), 0 when @p is unknown. */
gint64 reset_phase_next(const struct reset_phase *p, gint64 after_s);
/* The phase kept in @file (a GKeyFile); -ENOENT, or -EINVAL for a file out of range. */
int reset_phase_load(const char *file, struct reset_phase *out);
/* Writes @p to @file atomically, 0600, making its directory 0700. */
int reset_phase_save(const char *file, const struct reset_phase *p);

enum refill_source {
	REFILL_UNKNOWN,
	REFILL_ANNOUNCED, /* the cloud said when: t, or Retry-After */
	REFILL_LEARNED,	  /* the account's reset phase, seen as r jumping up */
	REFILL_ASSUMED,	  /* a whole window after the last answer: a guess that never overdraws */
};

/* "announced", "learned", "assumed", or NULL for REFILL_UNKNOWN. */
const char *refill_source_name(enum refill_source source);

/* What a client knows of one API's budget. All times unix seconds (wall clock). */
struct budget {
	struct ratelimit last;	      /* q, w, r as last announced (t: see below) */
	gint64 announced_at_s;	      /* when last.remaining was announced */
	gint64 announced_refill_at_s; /* from t or Retry-After; 0: not announced */
	gint64 blocked_until_s;	      /* no call before this (a 429, or r=0 with a refill) */
	struct reset_phase learned;   /* window_s 0: nothing learned */
};

void budget_init(struct budget *b);
/* Takes note of an answer of @status with those header values (any may be NULL), with
 * @in_flight calls (this one included) unanswered, at @now_s. On 429: nothing is sent
 * until Retry-After, else t, else the learned reset, else a window, else 60 s. Returns
 * true when a new reset phase was learned (the caller keeps it: reset_phase_save). */
bool budget_note_answer(struct budget *b, long status, const char *ratelimit, const char *policy,
			const char *retry_after, long in_flight, gint64 now_s);
/* When the budget last announced refills, and where that comes from; 0 unknown. */
gint64 budget_refill_at(const struct budget *b, enum refill_source *source);
/* 0 when a call may be sent at @now_s with @in_flight calls unanswered, else until when
 * (unix s) calls wait. */
gint64 budget_blocked_until(const struct budget *b, long in_flight, gint64 now_s);
/* Whether a background call (history filling) may be sent at @now_s with @in_flight calls
 * unanswered, when it may spend @share_percent of the quota: only while what is left stays
 * above the rest of the quota (the user's reads' share, at least 2 calls), so background
 * calls come out of the top of a window and never out of what the user's reads may spend.
 * Nothing before the quota and what is left are known; past the expected refill, one call
 * at a time finds out what is left (what was left is at least the user's share, so it
 * cannot meet a 429 for the background's sake). Never while calls are blocked. */
bool budget_background_allows(const struct budget *b, int share_percent, long in_flight,
			      gint64 now_s);
/* The TTL that lets @resources read in a loop last until the refill: at least @ttl_s. */
int budget_stretch_ttl(const struct budget *b, int ttl_s, long resources, gint64 now_s);
