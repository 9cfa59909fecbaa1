/* cli: what the commands share — exit status, the error line, argument parsing with
 * the common options (-o, --version), and an account's options. Each command is a
 * cli_<command>.c of its own; main.c only picks one. Not thread-safe: used at start. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <glib.h>

struct options;
struct token_store;

/* Exit codes, as the man page documents them. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,	/* the command failed: the message says why */
	EXIT_USAGE = 2, /* the command line was wrong */
};

/* The ACCOUNT that names every account logged in: a mount of all of them (the fsname of
 * that mount, and the source of its fstab line). */
#define ALL_ACCOUNTS "all"

/* The program name in messages: "smarthomefs" or "mount.smarthomefs". */
extern const char *cli_prog;

/* Prints "PROG: MESSAGE" to stderr, with any registered secret scrubbed. */
void cli_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Parses argv with @entries plus the common ones. Returns EXIT_OK, or EXIT_USAGE after
 * printing why; --version prints and exits. */
int cli_parse_args(const char *usage, const char *summary, GOptionEntry *entries, int *argc,
		   char ***argv);
/* Adds @opt as if given with -o after the others. */
void cli_add_option(const char *opt);
/* Frees what cli_parse_args kept. */
void cli_cleanup(void);
/* Fills @opts (options_init'ed) for @account: the config file's section, then every -o,
 * and sets up the log. EXIT_OK, or EXIT_USAGE after printing why. */
int cli_load_options(const char *account, struct options *opts);
/* The same, without printing or touching the log: for a daemon opening an account that
 * was logged in while it was mounted. -EINVAL with @err naming file, line and key. */
int cli_read_options(const char *account, struct options *opts, GError **err);
/* The accounts logged in to @store, "tado, tibber", for a message about an account
 * that is not (a misspelled name); NULL when none or the store cannot say (g_free). */
char *cli_logged_in(const struct token_store *store);

/* The commands: argv[0] is the command's name. Each returns an exit status. */
int cli_login(int argc, char **argv);
int cli_logout(int argc, char **argv);
int cli_status(int argc, char **argv);
/* @helper: called as mount.smarthomefs or by mount.fuse3 (mount(8)'s conventions). */
int cli_mount(int argc, char **argv, bool helper);
