/* token: the token set, its JSON, its store, and the token endpoint. */
#include "token.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <gio/gio.h>
#include <jansson.h>

#include "http.h"
#include "log.h"
#include "provider.h"

void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		g_free(s);
	}
}

void token_set_clear(struct token_set *ts)
{
	g_clear_pointer(&ts->provider, g_free);
	g_clear_pointer(&ts->access_token, secret_free);
	g_clear_pointer(&ts->refresh_token, secret_free);
	g_clear_pointer(&ts->client_id, g_free);
	g_clear_pointer(&ts->client_secret, secret_free);
	g_clear_pointer(&ts->scope, g_free);
	ts->expires_at_s = 0;
	ts->issued_at_s = 0;
	ts->refresh_issued_at_s = 0;
}

void token_set_copy(struct token_set *dst, const struct token_set *src)
{
	dst->provider = g_strdup(src->provider);
	dst->access_token = g_strdup(src->access_token);
	dst->expires_at_s = src->expires_at_s;
	dst->issued_at_s = src->issued_at_s;
	dst->refresh_issued_at_s = src->refresh_issued_at_s;
	dst->refresh_token = g_strdup(src->refresh_token);
	dst->client_id = g_strdup(src->client_id);
	dst->client_secret = g_strdup(src->client_secret);
	dst->scope = g_strdup(src->scope);
}

static const struct {
	const char *key;
	size_t field;
} token_fields[] = {
    {"provider", offsetof(struct token_set, provider)},
    {"access_token", offsetof(struct token_set, access_token)},
    {"refresh_token", offsetof(struct token_set, refresh_token)},
    {"client_id", offsetof(struct token_set, client_id)},
    {"client_secret", offsetof(struct token_set, client_secret)},
    {"scope", offsetof(struct token_set, scope)},
};

#define TOKEN_FIELD(ts, i) (*(char **)((char *)(ts) + token_fields[i].field))

char *token_set_to_json(const struct token_set *ts)
{
	json_t *o = json_object();
	for (size_t i = 0; i < G_N_ELEMENTS(token_fields); i++) {
		const char *v = TOKEN_FIELD(ts, i);
		if (v)
			json_object_set_new(o, token_fields[i].key, json_string(v));
	}
	json_object_set_new(o, "expires_at", json_integer(ts->expires_at_s));
	if (ts->issued_at_s)
		json_object_set_new(o, "issued_at", json_integer(ts->issued_at_s));
	if (ts->refresh_issued_at_s)
		json_object_set_new(o, "refresh_issued_at", json_integer(ts->refresh_issued_at_s));
	char *dumped = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (!dumped)
		return NULL;
	char *s = g_strdup(dumped);
	explicit_bzero(dumped, strlen(dumped));
	free(dumped);
	return s;
}

int token_set_from_json(const char *json, struct token_set *ts)
{
	if (!json)
		return -EINVAL;
	json_t *o = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return -EINVAL;
	}
	struct token_set parsed = {0};
	int r = 0;
	for (size_t i = 0; i < G_N_ELEMENTS(token_fields) && r == 0; i++) {
		json_t *v = json_object_get(o, token_fields[i].key);
		if (!v || json_is_null(v))
			continue;
		const char *s = json_string_value(v);
		if (!s || strlen(s) != json_string_length(v)) /* not a string, or holds NUL */
			r = -EINVAL;
		else
			TOKEN_FIELD(&parsed, i) = g_strdup(s);
	}
	struct {
		const char *key;
		gint64 *field;
	} times[] = {{"expires_at", &parsed.expires_at_s},
		     {"issued_at", &parsed.issued_at_s},
		     {"refresh_issued_at", &parsed.refresh_issued_at_s}};
	for (size_t i = 0; i < G_N_ELEMENTS(times); i++) {
		json_t *t = json_object_get(o, times[i].key);
		if (!t || json_is_null(t))
			continue;
		if (json_is_integer(t) && json_integer_value(t) >= 0)
			*times[i].field = json_integer_value(t);
		else
			r = -EINVAL;
	}
	json_decref(o);
	/* A set that cannot authorize anything is not a token set. */
	if (r == 0 && (!parsed.provider || !*parsed.provider ||
		       (!parsed.access_token && !parsed.refresh_token)))
		r = -EINVAL;
	if (r < 0) {
		token_set_clear(&parsed);
		return r;
	}
	*ts = parsed;
	return 0;
}

void token_set_hide(const struct token_set *ts)
{
	log_add_secret(ts->access_token);
	log_add_secret(ts->refresh_token);
	log_add_secret(ts->client_secret);
}

void token_set_unhide_rotated(const struct token_set *old, const struct token_set *new)
{
	if (old->access_token && g_strcmp0(old->access_token, new->access_token) != 0)
		log_remove_secret(old->access_token);
	if (old->refresh_token && g_strcmp0(old->refresh_token, new->refresh_token) != 0)
		log_remove_secret(old->refresh_token);
	if (old->client_secret && g_strcmp0(old->client_secret, new->client_secret) != 0)
		log_remove_secret(old->client_secret);
}

gint64 token_set_login_expires_at_s(const struct token_set *ts, const struct provider *p)
{
	gint64 issued_s = ts->refresh_issued_at_s ? ts->refresh_issued_at_s : ts->issued_at_s;
	if (!ts->refresh_token || p->refresh_token_lifetime_s <= 0 || issued_s <= 0)
		return 0;
	return issued_s + p->refresh_token_lifetime_s;
}

int token_set_load(const struct token_store *store, const char *account, struct token_set *ts,
		   GError **err)
{
	char *json = NULL;
	int r = token_store_load(store, account, &json, err);
	if (r < 0)
		return r;
	r = token_set_from_json(json, ts);
	secret_free(json);
	if (r < 0) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
			    "The stored login of %s is damaged.", account);
		return -EBADMSG;
	}
	return 0;
}

int token_set_save(const struct token_store *store, const char *account, const struct token_set *ts,
		   GError **err)
{
	char *json = token_set_to_json(ts);
	if (!json) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_FAILED, "Out of memory.");
		return -ENOMEM;
	}
	int r = token_store_save(store, account, ts->provider, json, err);
	secret_free(json);
	return r;
}

/* ---- The token endpoint ---- */

static void replace_secret(char **field, const char *value)
{
	if (*field == value)
		return;
	char *old = *field;
	*field = g_strdup(value);
	secret_free(old);
}

char *token_endpoint_url(const struct provider *p, const char *auth_url, const char *path)
{
	const char *base = auth_url && *auth_url ? auth_url : p->auth_url;
	return g_strconcat(base, path ? path : "", NULL);
}

/* A positive whole number of seconds from JSON, which some servers send as a string. */
bool token_json_seconds(json_t *v, gint64 *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_real(v)) {
		*out = (gint64)json_real_value(v);
	} else if (json_is_string(v)) {
		char *end;
		gint64 n = g_ascii_strtoll(json_string_value(v), &end, 10);
		if (end == json_string_value(v) || *end)
			return false;
		*out = n;
	} else {
		return false;
	}
	return *out >= 0 && *out < (gint64)10 * 365 * 24 * 3600;
}

json_t *token_answer_json(const struct http_response *resp)
{
	if (!resp->body)
		return NULL;
	gsize len;
	const char *data = g_bytes_get_data(resp->body, &len);
	if (!data || len == 0)
		return NULL;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* An OAuth error code as RFC 6749 section 5.2 allows it (printable ASCII but '"' and
 * '\\'), short: a server's "error" goes into messages, and must not carry a terminal
 * escape, a forged log line or a page of text. */
static char *error_code_of(const char *code)
{
	size_t n = strlen(code);
	bool ok = n > 0 && n <= 64;
	for (size_t i = 0; ok && i < n; i++)
		ok = code[i] >= 0x20 && code[i] <= 0x7e && code[i] != '"' && code[i] != '\\';
	return g_strdup(ok ? code : "an error code that is not one");
}

int token_request(struct http_client *http, const char *token_url, const char *form,
		  struct token_set *ts, char **error)
{
	if (error)
		*error = NULL;
	/* One attempt only: an authorization code or a rotating refresh token is spent the
	 * moment the server reads it, so a retry after a lost answer would be refused and
	 * look like a revoked login. The caller tries again later instead. */
	struct http_request req = {
	    .method = "POST",
	    .url = token_url,
	    .form = form,
	    .tries = 1,
	    .log_path = "token endpoint",
	};
	struct http_response resp;
	int r = http_request(http, &req, &resp);
	if (r < 0)
		return r;

	json_t *j = token_answer_json(&resp);
	long status = resp.status;
	http_response_clear(&resp);

	if (status >= 200 && status < 300) {
		const char *access =
		    j ? json_string_value(json_object_get(j, "access_token")) : NULL;
		if (!access || !*access) {
			json_decref(j);
			return -EIO;
		}
		const char *refresh = json_string_value(json_object_get(j, "refresh_token"));
		const char *scope = json_string_value(json_object_get(j, "scope"));
		gint64 expires_in_s;
		gint64 now_s = g_get_real_time() / G_USEC_PER_SEC;
		gint64 expires_at_s = 0;
		if (token_json_seconds(json_object_get(j, "expires_in"), &expires_in_s))
			expires_at_s = now_s + expires_in_s;
		/* Registered before they are stored anywhere a log line could reach. */
		log_add_secret(access);
		log_add_secret(refresh);
		replace_secret(&ts->access_token, access);
		if (refresh && *refresh) {
			replace_secret(&ts->refresh_token, refresh);
			ts->refresh_issued_at_s = now_s;
		}
		if (scope && *scope) {
			g_free(ts->scope);
			ts->scope = g_strdup(scope);
		}
		ts->expires_at_s = expires_at_s;
		ts->issued_at_s = expires_at_s ? now_s : 0;
		json_decref(j);
		return 0;
	}

	const char *code = j ? json_string_value(json_object_get(j, "error")) : NULL;
	if (error && code)
		*error = error_code_of(code);
	json_decref(j);
	if (status == 429 || status >= 500)
		return -EAGAIN;
	if (status == 400 || status == 401)
		return -EACCES;
	return -EIO;
}

int token_refresh(struct http_client *http, const struct provider *p, const char *auth_url,
		  struct token_set *ts, char **error)
{
	if (error)
		*error = NULL;
	if (!ts->refresh_token || !*ts->refresh_token) {
		if (error)
			*error = g_strdup("invalid_grant");
		return -EACCES;
	}
	g_autofree char *url = token_endpoint_url(p, auth_url, p->token_path);
	const char *client_id = ts->client_id ? ts->client_id : p->client_id;
	g_auto(secret_str) form =
	    http_form("grant_type", "refresh_token", "refresh_token", ts->refresh_token,
		      "client_id", client_id, "client_secret", ts->client_secret, NULL);
	return token_request(http, url, form, ts, error);
}
