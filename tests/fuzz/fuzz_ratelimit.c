/* Fuzzes the RateLimit / RateLimit-Policy and Retry-After parsers. The input is split at
 * the first two NUL bytes into the RateLimit value, the policy value and Retry-After.
 * Invariants: fields are -1 or not negative; Retry-After is never negative. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "ratelimit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *part[3] = {"", "", ""};
	g_autofree char *text = g_malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	part[0] = text;
	for (size_t i = 0, k = 1; i < size && k < 3; i++)
		if (text[i] == '\0')
			part[k++] = text + i + 1;
	const char *ratelimit = part[0], *policy = part[1], *retry = part[2];

	struct ratelimit rl;
	int r = ratelimit_parse(ratelimit, policy, &rl);
	assert(r == 0 || r == -EINVAL);
	if (r == 0) {
		assert(rl.quota >= -1 && rl.window_s >= -1 && rl.remaining >= -1 &&
		       rl.reset_in_s >= -1);
	}
	r = ratelimit_parse(ratelimit, NULL, &rl);
	assert(r == 0 || r == -EINVAL);

	long seconds = -1;
	r = retry_after_parse(retry, 1767258000, &seconds);
	assert(r == 0 || r == -EINVAL);
	if (r == 0)
		assert(seconds >= 0);
	r = retry_after_parse(ratelimit, 0, &seconds);
	if (r == 0)
		assert(seconds >= 0);
	return 0;
}
