/* fake_login: a login saved in a token store, as `smarthomefs login` leaves it, its
 * access token valid for an hour. Header-only, as fake_http.h. */
#pragma once

#include <glib.h>

#include "keyring.h"
#include "token.h"

/* Saves @provider's login of @account: @access_token, @refresh_token and @client_id
 * (NULL: none). */
static inline void fake_login_save(const struct token_store *store, const char *account,
				   const char *provider, const char *access_token,
				   const char *refresh_token, const char *client_id)
{
	struct token_set ts = {.provider = g_strdup(provider),
			       .access_token = g_strdup(access_token),
			       .refresh_token = g_strdup(refresh_token),
			       .client_id = g_strdup(client_id),
			       .expires_at_s = g_get_real_time() / G_USEC_PER_SEC + 3600};
	g_autofree char *json = token_set_to_json(&ts);

	token_set_clear(&ts);
	g_assert_cmpint(token_store_save(store, account, provider, json, NULL), ==, 0);
}
