/* terminal: text from elsewhere (a server's user code, link or error, a path) made safe
 * to print on a terminal: valid UTF-8 without control characters (C0 such as ESC, CR and
 * LF, DEL, C1 such as CSI) or bidirectional overrides, so it can neither move the cursor,
 * retitle the window, hide a link behind other text (OSC 8) nor overwrite a line.
 * Pure; thread-safe. */
#pragma once

/* @s without what could drive the terminal (g_free); "" for NULL. */
char *terminal_text(const char *s);
