/* Fuzzes the parser of the loopback callback's request target. Invariants: 0 or
 * -EINVAL; on -EINVAL nothing is handed out; every value handed out is non-empty. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "oauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autofree char *target = g_strndup((const char *)data, size);
	char *code = NULL, *state = NULL, *error = NULL, *desc = NULL;
	int r = oauth_parse_callback(target, "/callback", &code, &state, &error, &desc);

	assert(r == 0 || r == -EINVAL);
	char *outs[] = {code, state, error, desc};
	for (size_t i = 0; i < G_N_ELEMENTS(outs); i++) {
		if (r < 0)
			assert(!outs[i]);
		if (outs[i])
			assert(outs[i][0]);
		g_free(outs[i]);
	}
	return 0;
}
