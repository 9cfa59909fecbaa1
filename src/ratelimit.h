/* ratelimit: the budget a cloud announces in RateLimit / RateLimit-Policy headers
 * (tado: `RateLimit: "perday";r=15211;t=43200`, `RateLimit-Policy: "perday";q=20000;w=86400`)
 * and Retry-After. Pure functions: thread-safe. */
#pragma once

#include <stdbool.h>
#include <time.h>

struct ratelimit {
	long quota;	 /* q: calls per window, -1 unknown */
	long window_s;	 /* w: the window's length, -1 unknown */
	long remaining;	 /* r: calls left, -1 unknown */
	long reset_in_s; /* t: until the budget refills, -1 unknown */
};

/* Parses the two header values (either may be NULL) into @out (fields -1 when absent).
 * Returns 0 when anything was understood, -EINVAL otherwise. */
int ratelimit_parse(const char *ratelimit, const char *policy, struct ratelimit *out);
/* Parses Retry-After (delta seconds or an HTTP date) relative to @now into *seconds
 * (never negative). Returns 0 or -EINVAL. */
int retry_after_parse(const char *value, time_t now, long *seconds);
