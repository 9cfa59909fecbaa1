/* log: no registered secret survives into a log line. */
#include <glib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/log/registered_secret_is_redacted_everywhere_in_a_line",
			test_registered_secret_is_redacted_everywhere_in_a_line);
	g_test_add_func("/log/removed_secret_is_no_longer_redacted",
			test_removed_secret_is_no_longer_redacted);
	g_test_add_func("/log/short_strings_are_not_taken_for_secrets",
			test_short_strings_are_not_taken_for_secrets);
	return g_test_run();
}
