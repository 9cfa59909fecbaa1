/* Fuzzes the reversible name escaping. Invariants of tree_escape_name: the name is a
 * safe file name (not empty, not "." or "..", no '/', no NUL, no control byte, at most
 * 255 bytes); unescaping gives the raw bytes back unless the name was cut; two
 * different raw ids never give the same name (checked on the two halves of the input). */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *escape_checked(const char *raw, size_t len)
{
	char *name = tree_escape_name(raw, len);
	size_t n = strlen(name);

	assert(n > 0 && n <= 255);
	assert(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
	for (size_t i = 0; i < n; i++)
		assert((unsigned char)name[i] >= 0x20 && name[i] != '/' && name[i] != 0x7f);

	size_t back_len = 0;
	g_autofree char *back = tree_unescape_name(name, &back_len);
	bool cut = strstr(name, "%~") != NULL;
	if (!cut) {
		assert(back);
		assert(back_len == len && memcmp(back, raw, len) == 0);
	} else {
		assert(!back);
	}
	return name;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *raw = (const char *)data;
	g_autofree char *whole = escape_checked(raw, size);
	assert(whole);

	size_t half = size / 2;
	g_autofree char *a = escape_checked(raw, half);
	g_autofree char *b = escape_checked(raw + half, size - half);
	if (half != size - half || memcmp(raw, raw + half, half) != 0)
		assert(strcmp(a, b) != 0);

	/* Any name a user may type: unescaping never crashes, and what it gives escapes
	 * back to the same name. */
	g_autofree char *typed = g_strndup(raw, size);
	size_t len = 0;
	g_autofree char *unescaped = tree_unescape_name(typed, &len);
	if (unescaped) {
		g_autofree char *again = tree_escape_name(unescaped, len);
		assert(strcmp(again, typed) == 0);
	}
	return 0;
}
