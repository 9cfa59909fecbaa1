/* cli_logout: `smarthomefs logout ACCOUNT`: removes the account's stored tokens, under
 * the account's refresh lock: a mount refreshing them right now would otherwise store
 * the refreshed set again after the delete, and the logout would be undone. */
#include <errno.h>
#include <unistd.h>

#include "auth.h"
#include "cli.h"
#include "config.h"
#include "keyring.h"

int cli_logout(int argc, char **argv)
{
	int r = cli_parse_args("ACCOUNT - forget an account's tokens",
			       "Removes the stored tokens of ACCOUNT (PROVIDER or PROVIDER:NAME).",
			       NULL, &argc, &argv);
	if (r != EXIT_OK)
		return r;
	if (argc != 2) {
		cli_fail("logout takes one ACCOUNT (try --help)");
		return EXIT_USAGE;
	}
	struct account account = {0};
	g_autoptr(GError) err = NULL;
	if (account_parse(argv[1], &account, &err) < 0) {
		cli_fail("%s", err->message);
		return EXIT_USAGE;
	}
	struct options opts;
	options_init(&opts);
	r = cli_load_options(account.id, &opts);
	if (r == EXIT_OK) {
		struct token_store store;
		options_token_store(&opts, &store);
		g_autofree char *lock_dir = options_lock_dir(&opts);
		g_autoptr(GError) lock_err = NULL;
		/* A refresh holds the lock for one token request at most (the timeout). */
		int lock_fd = auth_lock_account(
		    lock_dir, account.id, (gint64)(opts.timeout + 5) * G_USEC_PER_SEC, &lock_err);
		int d =
		    lock_fd == -ETIMEDOUT ? lock_fd : token_store_delete(&store, account.id, &err);
		if (lock_fd >= 0)
			close(lock_fd);
		if (d == -ETIMEDOUT) {
			cli_fail("a mount of '%s' has been refreshing its tokens for longer than a "
				 "token request may take; nothing was removed: try again, or stop "
				 "that mount first",
				 account.id);
			r = EXIT_FAIL;
		} else if (d == -ENOENT) {
			g_autofree char *in = cli_logged_in(&store);
			cli_fail("no login is stored for '%s' in the %s%s%s%s", account.id,
				 token_store_name(store.kind), in ? " (logged in: " : "", in ?: "",
				 in ? ")" : "");
			r = EXIT_FAIL;
		} else if (d < 0) {
			cli_fail("%s", err->message);
			r = EXIT_FAIL;
		} else {
			printf("Logged out of '%s'.\n", account.id);
		}
		token_store_clear(&store);
	}
	options_clear(&opts);
	account_clear(&account);
	return r;
}
