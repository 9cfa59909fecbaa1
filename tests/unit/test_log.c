/* log: no registered secret survives into a log line, and no message forges another
 * line or steers the terminal. */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void test_registered_secret_is_redacted_everywhere_in_a_line(void)
{
	log_add_secret("eyJhbGciOiJSUzI1NiJ9.secret-token");
	g_autofree char *s =
	    log_scrub("a eyJhbGciOiJSUzI1NiJ9.secret-token b eyJhbGciOiJSUzI1NiJ9.secret-token");
	g_assert_cmpstr(s, ==, "a [redacted] b [redacted]");
	log_remove_secret("eyJhbGciOiJSUzI1NiJ9.secret-token");
}

static void test_removed_secret_is_no_longer_redacted(void)
{
	log_add_secret("rotated-away-refresh-token");
	log_remove_secret("rotated-away-refresh-token");
	g_autofree char *s = log_scrub("x rotated-away-refresh-token");
	g_assert_cmpstr(s, ==, "x rotated-away-refresh-token");
}

static void test_short_strings_are_not_taken_for_secrets(void)
{
	/* Redacting "1" or "tado" would make every log line unreadable. */
	log_add_secret("tado");
	log_add_secret("");
	log_add_secret(NULL);
	g_autofree char *s = log_scrub("tado home 1");
	g_assert_cmpstr(s, ==, "tado home 1");
}

static void test_control_characters_are_escaped(void)
{
	g_autofree char *s = log_escape("a\nsmarthomefs: error: forged\r\x1b[2J\x07 b\\c "
					"\xc2\x85"
					"nel \xe2\x80\xae"
					"evil \xff ü");
	g_assert_cmpstr(s, ==,
			"a\\x0asmarthomefs: error: forged\\x0d\\x1b[2J\\x07 b\\\\c \\u0085nel "
			"\\u202eevil \\xff ü");
}

/* What log_write puts on stderr for @message (g_free). */
static char *logged(const char *message)
{
	g_autofree char *dir = g_dir_make_tmp("log-XXXXXX", NULL);
	g_autofree char *file = g_build_filename(dir, "stderr", NULL);
	int saved = dup(STDERR_FILENO);
	FILE *f = fopen(file, "w");
	char *text = NULL;

	g_assert_nonnull(f);
	fflush(stderr);
	dup2(fileno(f), STDERR_FILENO);
	log_error("token endpoint said: %s", message);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(f);
	g_assert_true(g_file_get_contents(file, &text, NULL, NULL));
	g_unlink(file);
	g_rmdir(dir);
	return text;
}

static void test_a_log_line_cannot_forge_another(void)
{
	log_setup("smarthomefs", false, false);
	g_autofree char *text = logged("bad\nsmarthomefs: info: login ok\x1b]8;;http://x\x1b\\");
	g_assert_cmpstr(text, ==,
			"smarthomefs: error: token endpoint said: bad\\x0asmarthomefs: info: login "
			"ok\\x1b]8;;http://x\\x1b\\\\\n");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/log/registered_secret_is_redacted_everywhere_in_a_line",
			test_registered_secret_is_redacted_everywhere_in_a_line);
	g_test_add_func("/log/removed_secret_is_no_longer_redacted",
			test_removed_secret_is_no_longer_redacted);
	g_test_add_func("/log/short_strings_are_not_taken_for_secrets",
			test_short_strings_are_not_taken_for_secrets);
	g_test_add_func("/log/control_characters_are_escaped", test_control_characters_are_escaped);
	g_test_add_func("/log/a_log_line_cannot_forge_another",
			test_a_log_line_cannot_forge_another);
	return g_test_run();
}
