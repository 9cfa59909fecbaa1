/* terminal: printable text only. */
#include "terminal.h"

#include <string.h>
#include <glib.h>

/* Characters that reorder what follows them on screen (Unicode bidi controls). */
static gboolean is_bidi_control(gunichar c)
{
	return c == 0x061C || c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) ||
	       (c >= 0x2066 && c <= 0x2069);
}

char *terminal_text(const char *s)
{
	if (!s)
		return g_strdup("");
	g_autofree char *valid = g_utf8_make_valid(s, -1);
	GString *out = g_string_sized_new(strlen(valid));
	for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);
		/* C0 and DEL, C1 (U+0080..U+009F, the 8-bit CSI and OSC among them). */
		if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || is_bidi_control(c))
			continue;
		g_string_append_unichar(out, c);
	}
	return g_string_free(out, FALSE);
}
