/* ratelimit: the budget headers, as tado sends them and as junk arrives; what a client
 * makes of them over time (refill announced, learned or assumed; blocks; TTL stretch). */
#include <errno.h>
#include <limits.h>
#include <glib.h>
#include <glib/gstdio.h>

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

static void test_t_is_capped_like_retry_after(void)
{
	struct ratelimit rl;
	g_assert_cmpint(ratelimit_parse("\"perday\";r=0;t=1000000000000", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.reset_in_s, ==, 24 * 3600);
	g_assert_cmpint(ratelimit_parse("\"perday\";r=0;t=9223372036854775807", NULL, &rl), ==, 0);
	g_assert_cmpint(rl.reset_in_s, ==, 24 * 3600);
}

#define T0	    G_GINT64_CONSTANT(1800000000) /* a unix time: 2027-01-15T08:00:00Z */
#define TADO_POLICY "\"perday\";q=100;w=86400"

/* An answer of @status with RateLimit @live at @now_s, nothing else in flight. */
static bool answer(struct budget *b, long status, const char *live, gint64 now_s)
{
	return budget_note_answer(b, status, live, TADO_POLICY, NULL, 1, now_s);
}

static void test_a_429_with_t_long_max_blocks_a_day_without_overflow(void)
{
	struct budget b;
	budget_init(&b);
	answer(&b, 429, "\"perday\";r=0;t=9223372036854775807", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 24 * 3600);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0 + 24 * 3600), ==, 0);
}

static void test_without_t_the_refill_is_assumed_a_window_away(void)
{
	struct budget b;
	enum refill_source source;
	budget_init(&b);
	answer(&b, 200, "\"perday\";r=30", T0);
	g_assert_cmpint(budget_refill_at(&b, &source), ==, T0 + 86400);
	g_assert_cmpint(source, ==, REFILL_ASSUMED);
	g_assert_cmpstr(refill_source_name(source), ==, "assumed");
	/* 7 resources, 28 usable calls, a day: 6 h. */
	g_assert_cmpint(budget_stretch_ttl(&b, 60, 7, T0), ==, 7 * 86400 / 28);
}

static void test_r_jumping_up_teaches_the_reset_time_of_day(void)
{
	struct budget b;
	enum refill_source source;
	budget_init(&b);
	answer(&b, 200, "\"perday\";r=5", T0);
	/* r went from 5 to 97 between T0 + 100 and T0 + 160: the reset lies in there. */
	g_assert_false(answer(&b, 200, "\"perday\";r=4", T0 + 100));
	g_assert_true(answer(&b, 200, "\"perday\";r=97", T0 + 160));
	g_assert_cmpint(b.learned.window_s, ==, 86400);
	g_assert_cmpint(b.learned.offset_s, ==, (T0 + 160) % 86400);
	g_assert_cmpint(b.learned.uncertainty_s, ==, 60);
	g_assert_cmpint(budget_refill_at(&b, &source), ==, T0 + 160 + 86400);
	g_assert_cmpint(source, ==, REFILL_LEARNED);
	/* The same reset seen again, less precisely, changes nothing. */
	answer(&b, 200, "\"perday\";r=2", T0 + 86000);
	g_assert_false(answer(&b, 200, "\"perday\";r=99", T0 + 86400 + 1000));
	g_assert_cmpint(b.learned.offset_s, ==, (T0 + 160) % 86400);
	/* A jump small enough for answers overtaking each other teaches nothing. */
	struct budget c;
	budget_init(&c);
	budget_note_answer(&c, 200, "\"perday\";r=50", TADO_POLICY, NULL, 4, T0);
	g_assert_false(
	    budget_note_answer(&c, 200, "\"perday\";r=52", TADO_POLICY, NULL, 4, T0 + 1));
	g_assert_cmpint(c.learned.window_s, ==, 0);
}

static void test_a_429_waits_for_retry_after_else_t_else_the_learned_reset(void)
{
	struct budget b;
	budget_init(&b);
	budget_note_answer(&b, 429, "\"perday\";r=0;t=500", TADO_POLICY, "30", 1, T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 30);

	budget_init(&b);
	answer(&b, 429, "\"perday\";r=0;t=500", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 500);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0 + 499), ==, T0 + 500);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0 + 500), ==, 0);

	/* No t: the learned reset (here 1000 s ahead). */
	budget_init(&b);
	b.learned = (struct reset_phase){.window_s = 86400, .offset_s = (T0 + 1000) % 86400};
	answer(&b, 429, "\"perday\";r=0", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 1000);

	/* Nothing learned: a whole window, so one 429 a window at most. */
	budget_init(&b);
	answer(&b, 429, "\"perday\";r=0", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 86400);

	/* Not even a window: a minute. */
	budget_init(&b);
	budget_note_answer(&b, 429, NULL, NULL, NULL, 1, T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0), ==, T0 + 60);
}

static void test_a_spent_budget_waits_for_a_known_refill_and_probes_an_assumed_one_alone(void)
{
	struct budget b;
	budget_init(&b);
	b.learned = (struct reset_phase){.window_s = 86400, .offset_s = (T0 + 1000) % 86400};
	answer(&b, 200, "\"perday\";r=0", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0 + 10), ==, T0 + 1000);

	/* Nothing learned: one call may find out, not two at once. */
	budget_init(&b);
	answer(&b, 200, "\"perday\";r=0", T0);
	g_assert_cmpint(budget_blocked_until(&b, 0, T0 + 10), ==, 0);
	g_assert_cmpint(budget_blocked_until(&b, 1, T0 + 10), >, 0);
	/* Calls in flight spend what is left. */
	answer(&b, 200, "\"perday\";r=2", T0 + 20);
	g_assert_cmpint(budget_blocked_until(&b, 1, T0 + 20), ==, 0);
	g_assert_cmpint(budget_blocked_until(&b, 2, T0 + 20), >, 0);
}

/* A budget as tado announces it: q per day, r left, answered at @now_s. */
static void budget_told(struct budget *b, long quota, long remaining, gint64 now_s)
{
	g_autofree char *rl = g_strdup_printf("\"perday\";r=%ld", remaining);
	g_autofree char *policy = g_strdup_printf("\"perday\";q=%ld;w=86400", quota);

	budget_note_answer(b, 200, rl, policy, NULL, 1, now_s);
}

static void test_background_calls_come_out_of_the_top_of_the_window_only(void)
{
	const gint64 t0 = 1767258000; /* a fake clock: nothing here reads the real one */
	struct budget b;
	long spent = 0;

	budget_init(&b);
	/* Nothing is known before the first answer: no background call. */
	g_assert_false(budget_background_allows(&b, 20, 0, t0));
	budget_told(&b, 100, 100, t0);
	/* 20 % of 100: the background spends 20 calls and leaves the user 80. */
	for (long r = 100; budget_background_allows(&b, 20, 0, t0 + spent); r--) {
		spent++;
		budget_told(&b, 100, r - 1, t0 + spent);
	}
	g_assert_cmpint(spent, ==, 20);
	g_assert_cmpint(b.last.remaining, ==, 80);
	/* The user's reads spend theirs: still nothing for the background. */
	budget_told(&b, 100, 3, t0 + 3600);
	g_assert_false(budget_background_allows(&b, 20, 0, t0 + 3600));
	/* Calls in flight count as spent. */
	budget_told(&b, 100, 90, t0 + 3601);
	g_assert_true(budget_background_allows(&b, 20, 0, t0 + 3601));
	g_assert_true(budget_background_allows(&b, 20, 9, t0 + 3601));
	g_assert_false(budget_background_allows(&b, 20, 10, t0 + 3601));
	/* No share, no call; a share past 100 % still leaves the user two. */
	g_assert_false(budget_background_allows(&b, 0, 0, t0 + 3601));
	budget_told(&b, 100, 3, t0 + 3602);
	g_assert_true(budget_background_allows(&b, 1000, 0, t0 + 3602));
	budget_told(&b, 100, 2, t0 + 3603);
	g_assert_false(budget_background_allows(&b, 1000, 0, t0 + 3603));
}

static void test_background_calls_resume_when_the_window_refills(void)
{
	const gint64 t0 = 1767258000;
	struct budget b;

	budget_init(&b);
	budget_told(&b, 100, 80, t0);
	g_assert_false(budget_background_allows(&b, 20, 0, t0));
	/* r jumped up: the window refilled (seen in a user's read). */
	budget_told(&b, 100, 99, t0 + 600);
	g_assert_true(budget_background_allows(&b, 20, 0, t0 + 600));
	/* Nobody calls after the share was spent: once the expected refill (learned from
	 * the jump: a day after it) has passed, one call at a time finds out. */
	budget_told(&b, 100, 80, t0 + 700);
	g_assert_false(budget_background_allows(&b, 20, 0, t0 + 600 + 86399));
	g_assert_true(budget_background_allows(&b, 20, 0, t0 + 600 + 86400));
	g_assert_false(budget_background_allows(&b, 20, 1, t0 + 600 + 86400));
}

static void test_background_calls_wait_while_a_429_blocks(void)
{
	const gint64 t0 = 1767258000;
	struct budget b;

	budget_init(&b);
	budget_told(&b, 100, 100, t0);
	budget_note_answer(&b, 429, "\"perday\";r=0;t=60", NULL, NULL, 1, t0 + 1);
	g_assert_false(budget_background_allows(&b, 20, 0, t0 + 2));
	g_assert_false(budget_background_allows(&b, 20, 0, t0 + 60));
	/* Past t: what is left is unknown until one call tells. */
	g_assert_true(budget_background_allows(&b, 20, 0, t0 + 61));
}

static void test_the_learned_reset_survives_in_its_file(void)
{
	g_autofree char *dir = g_dir_make_tmp("ratelimit-XXXXXX", NULL);
	g_autofree char *file = g_build_filename(dir, "quota", "tado", NULL);
	struct reset_phase p = {.window_s = 86400, .offset_s = 41040, .uncertainty_s = 60}, back;

	g_assert_cmpint(reset_phase_load(file, &back), ==, -ENOENT);
	g_assert_cmpint(reset_phase_save(file, &p), ==, 0);
	g_assert_cmpint(reset_phase_load(file, &back), ==, 0);
	g_assert_cmpint(back.window_s, ==, 86400);
	g_assert_cmpint(back.offset_s, ==, 41040);
	g_assert_cmpint(back.uncertainty_s, ==, 60);
	GStatBuf st;
	g_assert_cmpint(g_stat(file, &st), ==, 0);
	g_assert_cmpint(st.st_mode & 0777, ==, 0600);
	g_assert_true(
	    g_file_set_contents(file, "[reset]\nwindow_s=86400\noffset_s=90000\n", -1, NULL));
	g_assert_cmpint(reset_phase_load(file, &back), ==, -EINVAL);
	g_assert_cmpint(back.window_s, ==, 0);
	g_unlink(file);
	g_autofree char *sub = g_path_get_dirname(file);
	g_rmdir(sub);
	g_rmdir(dir);
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
	g_test_add_func("/ratelimit/t_is_capped_like_retry_after",
			test_t_is_capped_like_retry_after);
	g_test_add_func("/ratelimit/a_429_with_t_long_max_blocks_a_day_without_overflow",
			test_a_429_with_t_long_max_blocks_a_day_without_overflow);
	g_test_add_func("/ratelimit/without_t_the_refill_is_assumed_a_window_away",
			test_without_t_the_refill_is_assumed_a_window_away);
	g_test_add_func("/ratelimit/r_jumping_up_teaches_the_reset_time_of_day",
			test_r_jumping_up_teaches_the_reset_time_of_day);
	g_test_add_func("/ratelimit/a_429_waits_for_retry_after_else_t_else_the_learned_reset",
			test_a_429_waits_for_retry_after_else_t_else_the_learned_reset);
	g_test_add_func(
	    "/ratelimit/a_spent_budget_waits_for_a_known_refill_and_probes_an_assumed_one_alone",
	    test_a_spent_budget_waits_for_a_known_refill_and_probes_an_assumed_one_alone);
	g_test_add_func("/ratelimit/background_calls_come_out_of_the_top_of_the_window_only",
			test_background_calls_come_out_of_the_top_of_the_window_only);
	g_test_add_func("/ratelimit/background_calls_resume_when_the_window_refills",
			test_background_calls_resume_when_the_window_refills);
	g_test_add_func("/ratelimit/background_calls_wait_while_a_429_blocks",
			test_background_calls_wait_while_a_429_blocks);
	g_test_add_func("/ratelimit/the_learned_reset_survives_in_its_file",
			test_the_learned_reset_survives_in_its_file);
	g_test_add_func("/ratelimit/retry_after_date_in_the_past_is_zero",
			test_retry_after_date_in_the_past_is_zero);
	g_test_add_func("/ratelimit/retry_after_garbage_is_rejected",
			test_retry_after_garbage_is_rejected);
	return g_test_run();
}
