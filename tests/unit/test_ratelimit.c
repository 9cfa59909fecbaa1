/* ratelimit: the budget headers, as tado sends them and as junk arrives. */
#include <errno.h>
#include <limits.h>
#include <glib.h>

#include "ratelimit.h"

static void test_tado_pair_is_parsed(void)
{
	struct ratelimit rl;
	g_assert_cmpint(
	    ratelimit_parse("\"perday\";r=15211;t=43200", "\"perday\";q=20000;w=86400", &rl), ==,
	    0);
	g_assert_cmpint(rl.remaining, ==, 15211);
	g_assert_cmpint(rl.reset_in_s, ==, 43200);
	g_assert_cmpint(rl.quota, ==, 20000);
	g_assert_cmpint(rl.window_s, ==, 86400);
}

static void test_tado_form_without_t_is_parsed(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("\"perday\";r=99", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.remaining, ==, 99);
	g_assert_cmpint(rl.reset_in_s, ==, -1);
	g_assert_cmpint(rl.quota, ==, -1);
	g_assert_cmpint(rl.window_s, ==, -1);
}

static void test_policy_alone_gives_quota(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse(NULL, "\"perday\";q=100;w=86400", &rl), ==, 0);
	g_assert_cmpint(rl.quota, ==, 100);
	g_assert_cmpint(rl.window_s, ==, 86400);
	g_assert_cmpint(rl.remaining, ==, -1);
}

static void test_spacing_and_case_are_tolerated(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse(" \"perday\" ; R = 7 ; T=8 ", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.remaining, ==, 7);
	g_assert_cmpint(rl.reset_in_s, ==, 8);
}

static void test_older_draft_keys_are_understood(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("limit=100, remaining=50, reset=30", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.quota, ==, 100);
	g_assert_cmpint(rl.remaining, ==, 50);
	g_assert_cmpint(rl.reset_in_s, ==, 30);
}

static void test_first_policy_wins(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("\"perday\";r=5;t=10, \"perhour\";r=1;t=2", NULL, &rl), ==,
			0);
	g_assert_cmpint(rl.remaining, ==, 5);
	g_assert_cmpint(rl.reset_in_s, ==, 10);
}

static void test_zero_remaining_is_a_value(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("\"perday\";r=0;t=3600", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.remaining, ==, 0);
}

static void test_garbage_is_rejected_without_harm(void)
{
	static const char *const junk[] = {
	    "",
	    ";;;;",
	    "=",
	    "r=",
	    "r=-5",
	    "r=abc",
	    "r=12x",
	    "\"perday\"",
	    "r=99999999999999999999999",
	    "q=1e5",
	    "\xff\xfe=\x01",
	    "r=1.5",
	    ",,,r",
	    "w",
	    "t==3",
	};
	for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
		struct ratelimit rl = {1, 2, 3, 4};
		g_assert_cmpint(ratelimit_parse(junk[i], junk[i], &rl), ==, -EINVAL);
		g_assert_cmpint(rl.quota, ==, -1);
		g_assert_cmpint(rl.remaining, ==, -1);
		g_assert_cmpint(rl.reset_in_s, ==, -1);
		g_assert_cmpint(rl.window_s, ==, -1);
	}
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse(NULL, NULL, &rl), ==, -EINVAL);
}

static void test_junk_next_to_a_value_keeps_the_value(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("x=;r=abc;;t=12;zz=1", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.remaining, ==, -1);
	g_assert_cmpint(rl.reset_in_s, ==, 12);
}

static void test_retry_after_seconds(void)
{
	long s = -1;
	g_assert_cmpint(retry_after_parse("120", 1000, &s), ==, 0);
	g_assert_cmpint(s, ==, 120);
	g_assert_cmpint(retry_after_parse(" 0 ", 1000, &s), ==, 0);
	g_assert_cmpint(s, ==, 0);
}

static void test_retry_after_huge_is_capped_not_rejected(void)
{
	long s = -1;
	g_assert_cmpint(retry_after_parse("99999999999999999999999999", 0, &s), ==, 0);
	g_assert_cmpint(s, >, 3600);
	g_assert_cmpint(s, <=, 24 * 3600);
}

static void test_retry_after_http_date(void)
{
	/* Sun, 06 Nov 1994 08:49:37 GMT is 784111777. */
	long s = -1;
	g_assert_cmpint(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 30, &s), ==,
			0);
	g_assert_cmpint(s, ==, 30);
	g_assert_cmpint(retry_after_parse("Sunday, 06-Nov-94 08:49:37 GMT", 784111777 - 5, &s), ==,
			0);
	g_assert_cmpint(s, ==, 5);
	g_assert_cmpint(retry_after_parse("Sun Nov  6 08:49:37 1994", 784111777 - 1, &s), ==, 0);
	g_assert_cmpint(s, ==, 1);
}

static void test_retry_after_date_in_the_past_is_zero(void)
{
	long s = -1;
	g_assert_cmpint(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 100, &s), ==,
			0);
	g_assert_cmpint(s, ==, 0);
}

static void test_retry_after_garbage_is_rejected(void)
{
	static const char *const junk[] = {"", "  ", "-5", "soon", "12abc", "1.5", "\x80\x81"};
	for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
		long s = 42;
		g_assert_cmpint(retry_after_parse(junk[i], 1000, &s), ==, -EINVAL);
		g_assert_cmpint(s, ==, 42);
	}
	long s;
	g_assert_cmpint(retry_after_parse(NULL, 0, &s), ==, -EINVAL);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/ratelimit/tado_pair_is_parsed", test_tado_pair_is_parsed);
	g_test_add_func("/ratelimit/tado_form_without_t_is_parsed",
			test_tado_form_without_t_is_parsed);
	g_test_add_func("/ratelimit/policy_alone_gives_quota", test_policy_alone_gives_quota);
	g_test_add_func("/ratelimit/spacing_and_case_are_tolerated",
			test_spacing_and_case_are_tolerated);
	g_test_add_func("/ratelimit/older_draft_keys_are_understood",
			test_older_draft_keys_are_understood);
	g_test_add_func("/ratelimit/first_policy_wins", test_first_policy_wins);
	g_test_add_func("/ratelimit/zero_remaining_is_a_value", test_zero_remaining_is_a_value);
	g_test_add_func("/ratelimit/garbage_is_rejected_without_harm",
			test_garbage_is_rejected_without_harm);
	g_test_add_func("/ratelimit/junk_next_to_a_value_keeps_the_value",
			test_junk_next_to_a_value_keeps_the_value);
	g_test_add_func("/ratelimit/retry_after_seconds", test_retry_after_seconds);
	g_test_add_func("/ratelimit/retry_after_huge_is_capped_not_rejected",
			test_retry_after_huge_is_capped_not_rejected);
	g_test_add_func("/ratelimit/retry_after_http_date", test_retry_after_http_date);
	g_test_add_func("/ratelimit/retry_after_date_in_the_past_is_zero",
			test_retry_after_date_in_the_past_is_zero);
	g_test_add_func("/ratelimit/retry_after_garbage_is_rejected",
			test_retry_after_garbage_is_rejected);
	return g_test_run();
}
