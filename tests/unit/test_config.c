/* config: accounts, -o options, the config file. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "provider.h"

static void test_account_is_provider_or_provider_and_label(void)
{
	struct account a = {0};
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(account_parse("tado", &a, &err), ==, 0);
	g_assert_cmpstr(a.provider->name, ==, "tado");
	account_clear(&a);
	g_assert_cmpint(account_parse("tibber:cabin-2.old_car", &a, &err), ==, 0);
	g_assert_cmpstr(a.id, ==, "tibber:cabin-2.old_car");
	account_clear(&a);
}

static void test_unknown_provider_names_the_known_ones(void)
{
	struct account a = {0};
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(account_parse("nest", &a, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "tado"));
	g_assert_nonnull(strstr(err->message, "tibber"));
}

static void test_label_may_not_smuggle_mount_options(void)
{
	/* The label ends up in fsname= of the mount options. */
	const char *bad[] = {"tado:x,allow_other", "tado:", "tado:a/b", "tado:a b", "tado:\"q\""};
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		struct account a = {0};
		g_autoptr(GError) err = NULL;
		g_assert_cmpint(account_parse(bad[i], &a, &err), ==, -EINVAL);
	}
}

static void test_options_set_ours_pass_fuses_and_ignore_mounts(void)
{
	struct options o;
	g_autoptr(GError) err = NULL;

	options_init(&o);
	g_assert_cmpint(options_parse(&o,
				      "ttl=120,timeout=5,offline,noauto,user,_netdev,"
				      "x-systemd.automount,allow_root,api_url=https://h/api/v2/",
				      &err),
			==, 0);
	g_assert_cmpint(o.ttl, ==, 120);
	g_assert_cmpint(o.timeout, ==, 5);
	g_assert_true(o.offline);
	g_assert_cmpstr(o.api_url, ==, "https://h/api/v2");
	g_assert_cmpuint(o.fuse_opts->len, ==, 1);
	g_assert_cmpstr(o.fuse_opts->pdata[0], ==, "allow_root");
	options_clear(&o);
}

static void test_history_is_filled_within_a_share_by_default(void)
{
	struct options o;
	g_autoptr(GError) err = NULL;

	options_init(&o);
	g_assert_cmpint(o.history_days, ==, 31);
	g_assert_cmpint(o.history_budget, ==, 20);
	g_assert_cmpint(options_parse(&o, "history_days=0,history_budget=100", &err), ==, 0);
	g_assert_cmpint(o.history_days, ==, 0);
	g_assert_cmpint(o.history_budget, ==, 100);
	options_clear(&o);
}

/* The bounds: their defaults (as smarthomefs(1) and mount --help state them) and -o. */
static void test_bounds_have_their_documented_defaults_and_can_be_set(void)
{
	struct options o;
	g_autoptr(GError) err = NULL;

	options_init(&o);
	g_assert_cmpint(o.cache_memory_mib, ==, 64);
	g_assert_cmpint(o.cache_disk_mib, ==, 512);
	g_assert_cmpint(o.render_memory_mib, ==, 64);
	g_assert_cmpint(o.max_entries, ==, 50000);
	g_assert_cmpint(o.prefetch_max, ==, 1000);
	g_assert_cmpint(options_parse(&o, "render_memory_mib=8,cache_memory_mib=16", &err), ==, 0);
	g_assert_cmpint(o.render_memory_mib, ==, 8);
	g_assert_cmpint(o.cache_memory_mib, ==, 16);
	options_clear(&o);
}

static void test_bad_options_are_refused_with_their_name(void)
{
	const char *bad[] = {"ttl=-1", "ttl=abc", "timeout=0", "api_url=http://h",
			     "cafile=relative.pem", "token_store=vault", "frobnicate", "ttl",
			     "history_budget=101", "history_days=-1",
			     "render_memory_mib=0"};
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		struct options o;
		g_autoptr(GError) err = NULL;
		options_init(&o);
		g_assert_cmpint(options_parse(&o, bad[i], &err), ==, -EINVAL);
		g_autofree char *name = g_strndup(bad[i], strcspn(bad[i], "="));
		g_assert_nonnull(strstr(err->message, name));
		options_clear(&o);
	}
}

static char *write_config(const char *text)
{
	g_autoptr(GError) err = NULL;
	char *path = NULL;
	int fd = g_file_open_tmp("smarthomefs-config-XXXXXX", &path, &err);
	g_assert_cmpint(fd, >=, 0);
	close(fd);
	g_assert_true(g_file_set_contents(path, text, -1, &err));
	return path;
}

static void test_config_section_of_the_account_applies(void)
{
	g_autofree char *path =
		write_config("[tado]\nttl = 300\ncache_dir=/var/tmp/c\n[tibber]\nttl=5\n");
	struct options o;
	g_autoptr(GError) err = NULL;

	options_init(&o);
	g_assert_cmpint(options_load_config(&o, path, "tado", &err), ==, 0);
	g_assert_cmpint(o.ttl, ==, 300);
	g_assert_cmpstr(o.cache_dir, ==, "/var/tmp/c");
	options_clear(&o);
	g_unlink(path);
}

static void test_config_errors_name_file_line_and_key(void)
{
	g_autofree char *path = write_config("[tibber]\nttl=5\n\n[tado]\nttl=60\ntll=5\n");
	struct options o;
	g_autoptr(GError) err = NULL;

	options_init(&o);
	g_assert_cmpint(options_load_config(&o, path, "tado", &err), ==, -EINVAL);
	g_autofree char *where = g_strdup_printf("%s:6:", path);
	g_assert_true(g_str_has_prefix(err->message, where));
	g_assert_nonnull(strstr(err->message, "'tll'"));
	options_clear(&o);
	g_unlink(path);
}

static void test_check_config_reads_every_section(void)
{
	g_autofree char *good = write_config("[tado]\nttl=60\n[tibber]\ntimeout=5\n");
	g_autofree char *bad = write_config("[tado]\nttl=60\n[tibber]\ntimeout=0\n");
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(options_check_config(good, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpint(options_check_config(bad, &err), ==, -EINVAL);
	g_autofree char *where = g_strdup_printf("%s:4: key 'timeout'", bad);
	g_assert_true(g_str_has_prefix(err->message, where));
	g_assert_true(config_error(err));
	g_unlink(good);
	g_unlink(bad);
}

static void test_missing_default_config_is_no_error(void)
{
	struct options o;
	g_autoptr(GError) err = NULL;

	g_setenv("XDG_CONFIG_HOME", "/nonexistent-smarthomefs-test", TRUE);
	options_init(&o);
	g_assert_cmpint(options_load_config(&o, NULL, "tado", &err), ==, 0);
	g_assert_no_error(err);
	options_clear(&o);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/config/account_is_provider_or_provider_and_label",
			test_account_is_provider_or_provider_and_label);
	g_test_add_func("/config/unknown_provider_names_the_known_ones",
			test_unknown_provider_names_the_known_ones);
	g_test_add_func("/config/label_may_not_smuggle_mount_options",
			test_label_may_not_smuggle_mount_options);
	g_test_add_func("/config/options_set_ours_pass_fuses_and_ignore_mounts",
			test_options_set_ours_pass_fuses_and_ignore_mounts);
	g_test_add_func("/config/history_is_filled_within_a_share_by_default",
			test_history_is_filled_within_a_share_by_default);
	g_test_add_func("/config/bounds_have_their_documented_defaults_and_can_be_set",
			test_bounds_have_their_documented_defaults_and_can_be_set);
	g_test_add_func("/config/bad_options_are_refused_with_their_name",
			test_bad_options_are_refused_with_their_name);
	g_test_add_func("/config/config_section_of_the_account_applies",
			test_config_section_of_the_account_applies);
	g_test_add_func("/config/config_errors_name_file_line_and_key",
			test_config_errors_name_file_line_and_key);
	g_test_add_func("/config/check_config_reads_every_section",
			test_check_config_reads_every_section);
	g_test_add_func("/config/missing_default_config_is_no_error",
			test_missing_default_config_is_no_error);
	return g_test_run();
}
