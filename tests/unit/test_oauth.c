/* oauth: PKCE, the callback parser (hostile input), the token endpoint, and both login
 * flows against a loopback server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <glib.h>

#include "auth.h"
#include "token.h"
#include "http.h"
#include "loopback.h"
#include "oauth.h"
#include "provider.h"
#include "fake_http.h"

/* ---- PKCE ---- */

static void test_pkce_challenge_matches_rfc7636_appendix_b(void)
{
	g_autofree char *c = oauth_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
	g_assert_cmpstr(c, ==, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void test_pkce_pair_is_fresh_and_well_formed(void)
{
	g_autofree char *v1 = NULL, *c1 = NULL, *v2 = NULL, *c2 = NULL;
	oauth_pkce_pair(&v1, &c1);
	oauth_pkce_pair(&v2, &c2);
	g_assert_cmpstr(v1, !=, v2);
	g_assert_cmpuint(strlen(v1), >=, 43);
	g_assert_cmpuint(strlen(v1), <=, 128);
	g_assert_cmpuint(strspn(v1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				    "0123456789-._~"),
			 ==, strlen(v1));
	g_autofree char *expect = oauth_pkce_challenge(v1);
	g_assert_cmpstr(c1, ==, expect);
	g_assert_cmpuint(strlen(c1), ==, 43);
	g_assert_null(strchr(c1, '='));
}

/* ---- the callback parser ---- */

static void test_callback_with_code_and_state_is_parsed(void)
{
	g_autofree char *code = NULL, *state = NULL, *error = NULL, *desc = NULL;
	g_assert_cmpint(oauth_parse_callback("/callback?code=ab%2Fc&state=xyz&iss=x", "/callback",
					     &code, &state, &error, &desc),
			==, 0);
	g_assert_cmpstr(code, ==, "ab/c");
	g_assert_cmpstr(state, ==, "xyz");
	g_assert_null(error);
	g_assert_null(desc);
}

static void test_callback_with_error_is_reported(void)
{
	g_autofree char *code = NULL, *state = NULL, *error = NULL, *desc = NULL;
	g_assert_cmpint(oauth_parse_callback("/callback?error=access_denied&error_description="
					     "The+user+said+no%21&state=s1",
					     "/callback", &code, &state, &error, &desc),
			==, 0);
	g_assert_null(code);
	g_assert_cmpstr(state, ==, "s1");
	g_assert_cmpstr(error, ==, "access_denied");
	g_assert_cmpstr(desc, ==, "The user said no!");
}

static void test_other_paths_are_not_callbacks(void)
{
	static const char *const targets[] = {
	    "/favicon.ico",
	    "/",
	    "",
	    "/callbackx?code=1",
	    "/Callback?code=1",
	    "callback?code=1",
	    "/callback/../x?code=1",
	    "//callback?code=1",
	    "http://127.0.0.1/callback?code=1",
	};
	for (size_t i = 0; i < G_N_ELEMENTS(targets); i++) {
		char *code = (char *)"untouched";
		g_assert_cmpint(
		    oauth_parse_callback(targets[i], "/callback", &code, NULL, NULL, NULL), ==,
		    -EINVAL);
		g_assert_null(code);
	}
	g_assert_cmpint(oauth_parse_callback(NULL, "/callback", NULL, NULL, NULL, NULL), ==,
			-EINVAL);
}

static void test_callback_on_a_registered_path_is_parsed(void)
{
	g_autofree char *code = NULL, *state = NULL;
	g_assert_cmpint(oauth_parse_callback("/?code=1&state=s", "/", &code, &state, NULL, NULL),
			==, 0);
	g_assert_cmpstr(code, ==, "1");
	g_assert_cmpstr(state, ==, "s");
	/* The outputs are reset on every call: give back what the first call returned. */
	g_clear_pointer(&code, g_free);
	g_assert_cmpint(oauth_parse_callback("/callback?code=1", "/", &code, NULL, NULL, NULL), ==,
			-EINVAL);
	g_assert_cmpint(oauth_parse_callback("/?code=1", "/callback", &code, NULL, NULL, NULL), ==,
			-EINVAL);
}

static void test_callback_with_a_repeated_parameter_is_refused(void)
{
	g_autofree char *code = NULL, *state = NULL;
	g_assert_cmpint(oauth_parse_callback("/callback?code=1&state=a&state=b", "/callback", &code,
					     &state, NULL, NULL),
			==, -EINVAL);
	g_assert_null(code);
	g_assert_null(state);
}

static void test_hostile_callbacks_never_crash(void)
{
	g_autoptr(GString) big = g_string_new("/callback?code=");
	for (int i = 0; i < 100000; i++)
		g_string_append_c(big, 'A');
	const char *targets[] = {
	    "/callback",
	    "/callback?",
	    "/callback?&&&=&==",
	    "/callback?code",
	    "/callback?code=%",
	    "/callback?code=%0",
	    "/callback?code=%00&state=%zz",
	    "/callback?state=%ff%fe",
	    "/callback#code=1",
	    "/callback?=x",
	    "/callback?code=1#state=2",
	    big->str,
	};
	for (size_t i = 0; i < G_N_ELEMENTS(targets); i++) {
		char *code = NULL, *state = NULL, *error = NULL, *desc = NULL;
		int r = oauth_parse_callback(targets[i], "/callback", &code, &state, &error, &desc);
		g_assert_true(r == 0 || r == -EINVAL);
		/* Empty or undecodable values are not handed out. */
		g_assert_true(!code || *code);
		g_assert_true(!state || *state);
		g_free(code);
		g_free(state);
		g_free(error);
		g_free(desc);
	}
	char *code = NULL, *state = NULL;
	g_assert_cmpint(oauth_parse_callback("/callback?code=%00&state=%zz", "/callback", &code,
					     &state, NULL, NULL),
			==, 0);
	g_assert_null(code);
	g_assert_null(state);
	g_assert_cmpint(oauth_parse_callback("/callback?code=1#state=2", "/callback", &code, &state,
					     NULL, NULL),
			==, 0);
	g_assert_cmpstr(code, ==, "1");
	g_assert_null(state);
	g_free(code);
}

/* ---- the token endpoint ---- */

struct token_script {
	int pending;	     /* authorization_pending answers before the outcome */
	const char *outcome; /* NULL: success; else an OAuth error code */
	int outcome_status;
	const char *success; /* the success body */
	const char *device;  /* the device authorization answer */
};

static void token_handler(const struct fake_request *req, int *status, GString *headers,
			  GString *body, void *data)
{
	struct token_script *s = data;
	if (g_str_has_prefix(req->target, "/device_authorize")) {
		g_string_append(body, s->device);
		return;
	}
	if (s->pending > 0) {
		s->pending--;
		*status = 400;
		g_string_append(body, "{\"error\":\"authorization_pending\"}");
		return;
	}
	if (s->outcome) {
		*status = s->outcome_status ? s->outcome_status : 400;
		if (*s->outcome)
			g_string_append_printf(
			    body, "{\"error\":\"%s\",\"error_description\":\"x\"}", s->outcome);
		return;
	}
	g_string_append(body, s->success);
}

static const struct provider test_provider = {
    .name = "testcloud",
    .title = "Testcloud",
    .login = LOGIN_DEVICE_CODE,
    .client_id = "public-client",
    .scope = "offline_access",
    .device_authorize_path = "/device_authorize",
    .authorize_path = "/authorize",
    .token_path = "/token",
    .verification_uri_needs_client_id = true,
};

static void test_token_answer_fills_the_set_and_keeps_an_absent_refresh_token(void)
{
	struct token_script sc = {.success =
				      "{\"access_token\":\"AT-new-123456\",\"expires_in\":600,"
				      "\"token_type\":\"Bearer\"}"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 65536, "t/1");
	g_autofree char *url = fake_server_url(srv, "/token");
	struct token_set ts = {.refresh_token = g_strdup("RT-old-123456")};
	char *error = NULL;
	gint64 now = g_get_real_time() / G_USEC_PER_SEC;
	g_assert_cmpint(token_request(c, url, "grant_type=x", &ts, &error), ==, 0);
	g_assert_null(error);
	g_assert_cmpstr(ts.access_token, ==, "AT-new-123456");
	g_assert_cmpstr(ts.refresh_token, ==, "RT-old-123456");
	g_assert_cmpint(ts.expires_at_s, >=, now + 600);
	g_assert_cmpint(ts.expires_at_s, <=, now + 602);
	token_set_clear(&ts);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_invalid_grant_is_eacces_with_the_code(void)
{
	struct token_script sc = {.outcome = "invalid_grant"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 65536, "t/1");
	g_autofree char *url = fake_server_url(srv, "/token");
	struct token_set ts = {.access_token = g_strdup("AT"), .refresh_token = g_strdup("RT")};
	g_autofree char *error = NULL;
	g_assert_cmpint(token_request(c, url, "grant_type=x", &ts, &error), ==, -EACCES);
	g_assert_cmpstr(error, ==, "invalid_grant");
	g_assert_cmpstr(ts.access_token, ==, "AT");
	g_assert_cmpstr(ts.refresh_token, ==, "RT");
	token_set_clear(&ts);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_429_with_an_empty_body_is_eagain_and_touches_nothing(void)
{
	struct token_script sc = {.outcome = "", .outcome_status = 429};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 65536, "t/1");
	g_autofree char *url = fake_server_url(srv, "/token");
	struct token_set ts = {.refresh_token = g_strdup("RT")};
	g_autofree char *error = NULL;
	g_assert_cmpint(token_request(c, url, "grant_type=x", &ts, &error), ==, -EAGAIN);
	g_assert_null(error);
	g_assert_cmpstr(ts.refresh_token, ==, "RT");
	/* Never retried: a rotating refresh token is spent by the first request. */
	g_assert_cmpint(fake_server_requests(srv), ==, 1);
	token_set_clear(&ts);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_non_json_success_is_eio(void)
{
	struct token_script sc = {.success = "<html>proxy login</html>"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 65536, "t/1");
	g_autofree char *url = fake_server_url(srv, "/token");
	struct token_set ts = {0};
	g_autofree char *error = NULL;
	g_assert_cmpint(token_request(c, url, "grant_type=x", &ts, &error), ==, -EIO);
	g_assert_null(ts.access_token);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_refresh_sends_the_grant_the_client_and_the_secret(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT2\",\"refresh_token\":\"RT2\","
					     "\"expires_in\":3600}"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 65536, "t/1");
	g_autofree char *base = fake_server_url(srv, "");
	struct token_set ts = {.refresh_token = g_strdup("RT1"),
			       .client_id = g_strdup("mine"),
			       .client_secret = g_strdup("s3cr3t")};
	g_autofree char *error = NULL;
	g_assert_cmpint(token_refresh(c, &test_provider, base, &ts, &error), ==, 0);
	g_assert_cmpstr(ts.refresh_token, ==, "RT2");
	g_autofree char *body = fake_server_body(srv, 0);
	g_assert_cmpstr(body, ==,
			"grant_type=refresh_token&refresh_token=RT1&client_id=mine&"
			"client_secret=s3cr3t");
	token_set_clear(&ts);

	/* Without a client of its own, the provider's public client and no secret. */
	struct token_set pub = {.refresh_token = g_strdup("RT2")};
	g_assert_cmpint(token_refresh(c, &test_provider, base, &pub, &error), ==, 0);
	g_autofree char *body2 = fake_server_body(srv, 1);
	g_assert_cmpstr(body2, ==,
			"grant_type=refresh_token&refresh_token=RT2&client_id="
			"public-client");
	token_set_clear(&pub);
	http_client_free(c);
	fake_server_stop(srv);
}

/* ---- device code flow ---- */

/* Runs @fn with stdout going to a file, and returns what it printed. */
static char *capture_stdout(int (*fn)(void *), void *data, int *result)
{
	fflush(stdout);
	g_autofree char *path = NULL;
	int fd = g_file_open_tmp("oauth-out-XXXXXX", &path, NULL);
	g_assert_cmpint(fd, >=, 0);
	int saved = dup(STDOUT_FILENO);
	dup2(fd, STDOUT_FILENO);
	*result = fn(data);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(fd);
	char *out = NULL;
	g_assert_true(g_file_get_contents(path, &out, NULL, NULL));
	unlink(path);
	return out;
}

struct device_run {
	struct http_client *c;
	const char *base;
	struct token_set ts;
	GError *err;
};

static int device_run(void *p)
{
	struct device_run *d = p;
	return oauth_device_login(d->c, &test_provider, d->base, &d->ts, &d->err);
}

#define DEVICE_ANSWER(uri)                                                                         \
	"{\"device_code\":\"DC-secret\",\"expires_in\":5,\"interval\":0,\"user_code\":\"7BQ5ZQ\"," \
	"\"verification_uri\":\"https://login.example/"                                            \
	"device\",\"verification_uri_complete\":\"" uri "\"}"

static void test_device_login_polls_until_approved_and_shows_the_link(void)
{
	struct token_script sc = {
	    .pending = 2,
	    .device = DEVICE_ANSWER("https://login.example/device?user_code=7BQ5ZQ"),
	    .success = "{\"access_token\":\"AT\",\"refresh_token\":\"RT\",\"expires_in\":599}",
	};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct device_run d = {.c = http_client_new(NULL, 5, 65536, "t/1"), .base = base};
	int r;
	g_autofree char *out = capture_stdout(device_run, &d, &r);
	g_assert_no_error(d.err);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpstr(out, ==,
			"To log in, open this link in a browser:\n"
			"  https://login.example/device?user_code=7BQ5ZQ&client_id=public-client\n"
			"and check that it shows the code 7BQ5ZQ.\n");
	g_assert_cmpstr(d.ts.access_token, ==, "AT");
	g_assert_cmpstr(d.ts.refresh_token, ==, "RT");
	g_assert_cmpstr(d.ts.provider, ==, "testcloud");
	g_assert_null(d.ts.client_id);
	g_assert_cmpint(fake_server_requests(srv), ==, 1 + 3);
	g_autofree char *poll = fake_server_body(srv, 1);
	g_assert_cmpstr(poll, ==,
			"client_id=public-client&device_code=DC-secret&grant_type=urn%3Aietf"
			"%3Aparams%3Aoauth%3Agrant-type%3Adevice_code");
	g_assert_null(strstr(out, "DC-secret"));
	token_set_clear(&d.ts);
	http_client_free(d.c);
	fake_server_stop(srv);
}

/* Runs a device login whose server answers @device_answer and checks that the link
 * shown to the user is the line @shown. */
static void assert_device_link_shown(const char *device_answer, const char *shown)
{
	struct token_script sc = {
	    .device = device_answer,
	    .success = "{\"access_token\":\"AT\",\"expires_in\":599}",
	};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct device_run d = {.c = http_client_new(NULL, 5, 65536, "t/1"), .base = base};
	int r;
	g_autofree char *out = capture_stdout(device_run, &d, &r);
	g_assert_cmpint(r, ==, 0);
	g_assert_nonnull(strstr(out, shown));
	token_set_clear(&d.ts);
	http_client_free(d.c);
	fake_server_stop(srv);
}

static void test_device_link_with_client_id_is_left_alone(void)
{
	assert_device_link_shown(
	    DEVICE_ANSWER("https://login.example/device?client_id=x&user_code=1"),
	    "  https://login.example/device?client_id=x&user_code=1\n");
}

static void test_device_link_without_query_gets_a_question_mark(void)
{
	assert_device_link_shown(DEVICE_ANSWER("https://login.example/device"),
				 "  https://login.example/device?client_id=public-client\n");
}

static void test_device_login_denied_is_eacces(void)
{
	struct token_script sc = {
	    .pending = 1,
	    .outcome = "access_denied",
	    .device = DEVICE_ANSWER("https://login.example/device?user_code=1"),
	};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct device_run d = {.c = http_client_new(NULL, 5, 65536, "t/1"), .base = base};
	int r;
	g_autofree char *out = capture_stdout(device_run, &d, &r);
	g_assert_cmpint(r, ==, -EACCES);
	g_assert_nonnull(strstr(out, "https://login.example/device?user_code=1")); /* shown */
	g_assert_nonnull(d.err);
	g_assert_cmpstr(d.err->message, ==, "The login was denied in the browser.");
	g_assert_null(d.ts.access_token);
	g_clear_error(&d.err);
	http_client_free(d.c);
	fake_server_stop(srv);
}

static void test_device_code_expired_is_etimedout(void)
{
	struct token_script sc = {
	    .outcome = "expired_token",
	    .device = DEVICE_ANSWER("https://login.example/device?user_code=1"),
	};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct device_run d = {.c = http_client_new(NULL, 5, 65536, "t/1"), .base = base};
	int r;
	g_autofree char *out = capture_stdout(device_run, &d, &r);
	g_assert_cmpint(r, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(out, "https://login.example/device?user_code=1")); /* shown */
	g_assert_cmpstr(d.err->message, ==,
			"The code expired before the login was approved; run the command again.");
	g_clear_error(&d.err);
	http_client_free(d.c);
	fake_server_stop(srv);
}

/* ---- the loopback redirect URI ---- */

static void test_registered_loopback_redirect_uris_are_taken_apart(void)
{
	static const struct {
		const char *uri, *host;
		int port;
		const char *path;
	} ok[] = {
	    {"http://localhost:8123/callback", "localhost", 8123, "/callback"},
	    {"http://127.0.0.1:1/", "127.0.0.1", 1, "/"},
	    {"http://[::1]:65535", "[::1]", 65535, "/"},
	    {"HTTP://LocalHost:8123/auth/tibber/", "localhost", 8123, "/auth/tibber/"},
	};
	for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
		struct loopback_redirect r;
		GError *err = NULL;
		g_assert_cmpint(oauth_redirect_parse(ok[i].uri, &r, &err), ==, 0);
		g_assert_no_error(err);
		g_assert_cmpstr(r.host, ==, ok[i].host);
		g_assert_cmpint(r.port, ==, ok[i].port);
		g_assert_cmpstr(r.path, ==, ok[i].path);
		oauth_redirect_clear(&r);
	}
}

static void test_other_redirect_uris_are_refused_with_the_reason(void)
{
	static const struct {
		const char *uri, *reason;
	} bad[] = {
	    {"https://localhost:8123/callback", "must start with http://"},
	    {"localhost:8123/callback", "must start with http://"},
	    {"", "must start with http://"},
	    {"http://example.com:8123/callback", "loopback address"},
	    {"http://localhost.example.com:8123/", "loopback address"},
	    {"http://127.0.0.2:8123/", "loopback address"},
	    {"http://me@localhost:8123/", "loopback address"},
	    {"http://[::1:8123/", "loopback address"},
	    {"http://0.0.0.0:8123/", "loopback address"},
	    {"http://localhost/callback", "must name its port"},
	    {"http://localhost:/callback", "must name its port"},
	    {"http://localhost:0/callback", "must name its port"},
	    {"http://localhost:65536/callback", "must name its port"},
	    {"http://localhost:123456/callback", "must name its port"},
	    {"http://localhost:8123x/callback", "must name its port"},
	    {"http://localhost:8123/callback?x=1", "query or a fragment"},
	    {"http://localhost:8123/callback#x", "query or a fragment"},
	    {"http://localhost:8123/call back", "is not a URI"},
	    {"http://localhost:8123/caf\xc3\xa9", "is not a URI"},
	};
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		struct loopback_redirect r;
		GError *err = NULL;
		g_assert_cmpint(oauth_redirect_parse(bad[i].uri, &r, &err), ==, -EINVAL);
		g_assert_nonnull(err);
		if (!strstr(err->message, bad[i].reason))
			g_error("%s: %s", bad[i].uri, err->message);
		g_assert_nonnull(strstr(err->message, bad[i].uri));
		g_assert_null(r.host);
		g_clear_error(&err);
	}
}

/* ---- authorization code + PKCE ---- */

struct pkce_run {
	struct http_client *c;
	const char *base;
	char *owned_base; /* pkce_start_plain's */
	GThread *thread;  /* pkce_start_plain's */
	struct pkce_login opts;
	struct token_set ts;
	GError *err;
	int result;
	int out_pipe;
};

static gpointer pkce_thread(gpointer p)
{
	struct pkce_run *run = p;
	run->result =
	    oauth_pkce_login(run->c, &test_provider, run->base, &run->opts, &run->ts, &run->err);
	return NULL;
}

/* Starts the login in a thread, and returns the link it printed. */
static GThread *pkce_start(struct pkce_run *run, char **url)
{
	fflush(stdout);
	int fds[2];
	g_assert_cmpint(pipe(fds), ==, 0);
	int saved = dup(STDOUT_FILENO);
	dup2(fds[1], STDOUT_FILENO);
	close(fds[1]);
	GThread *t = g_thread_new("pkce", pkce_thread, run);
	GString *out = g_string_new(NULL);
	char ch;
	int lines = 0;
	while (lines < 2 && read(fds[0], &ch, 1) == 1) {
		g_string_append_c(out, ch);
		lines += ch == '\n';
	}
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(fds[0]);
	g_assert_true(g_str_has_prefix(out->str, "Open this link in a browser to log in:\n  "));
	*url = g_strstrip(g_strdup(out->str + strlen("Open this link in a browser to log in:\n")));
	g_string_free(out, TRUE);
	return t;
}

static long browser_get(struct http_client *c, const char *url, char **body)
{
	struct http_request req = {.method = "GET", .url = url};
	struct http_response resp;
	g_assert_cmpint(http_request(c, &req, &resp), ==, 0);
	gsize len;
	const char *data = g_bytes_get_data(resp.body, &len);
	if (body)
		*body = g_strndup(data, len);
	long status = resp.status;
	http_response_clear(&resp);
	return status;
}

static void test_pkce_login_exchanges_the_code_with_verifier_and_secret(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT\",\"refresh_token\":\"RT\","
					     "\"expires_in\":3600}"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct pkce_run run = {
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = base,
	    .opts = {.client_id = "my client",
		     .client_secret = "sec",
		     .scope = "openid x",
		     .timeout_s = 10},
	};
	g_autofree char *url = NULL;
	GThread *t = pkce_start(&run, &url);

	g_autofree char *authorize = g_strconcat(base, "/authorize?", NULL);
	g_assert_true(g_str_has_prefix(url, authorize));
	const char *query = url + strlen(authorize);
	g_autofree char *rt = http_form_get(query, "response_type");
	g_autofree char *cid = http_form_get(query, "client_id");
	g_autofree char *redirect = http_form_get(query, "redirect_uri");
	g_autofree char *scope = http_form_get(query, "scope");
	g_autofree char *state = http_form_get(query, "state");
	g_autofree char *challenge = http_form_get(query, "code_challenge");
	g_autofree char *method = http_form_get(query, "code_challenge_method");
	g_assert_cmpstr(rt, ==, "code");
	g_assert_cmpstr(cid, ==, "my client");
	g_assert_true(g_str_has_prefix(redirect, "http://127.0.0.1:"));
	g_assert_true(g_str_has_suffix(redirect, "/callback"));
	g_assert_cmpstr(scope, ==, "openid x");
	g_assert_cmpstr(method, ==, "S256");
	g_assert_nonnull(state);
	g_assert_nonnull(challenge);

	/* A browser asks for the favicon too: answered 404, the login goes on. */
	g_autofree char *root = g_strndup(redirect, strlen(redirect) - strlen("/callback"));
	g_autofree char *fav = g_strconcat(root, "/favicon.ico", NULL);
	g_assert_cmpint(browser_get(run.c, fav, NULL), ==, 404);

	g_autofree char *state_q = g_uri_escape_string(state, NULL, FALSE);
	g_autofree char *cb = g_strdup_printf("%s?code=the-code&state=%s", redirect, state_q);
	g_autofree char *page = NULL;
	g_assert_cmpint(browser_get(run.c, cb, &page), ==, 200);
	g_assert_nonnull(strstr(page, "Logged in to Testcloud. You can close this tab."));
	g_thread_join(t);

	g_assert_no_error(run.err);
	g_assert_cmpint(run.result, ==, 0);
	g_assert_cmpstr(run.ts.access_token, ==, "AT");
	g_assert_cmpstr(run.ts.client_id, ==, "my client");
	g_assert_cmpstr(run.ts.client_secret, ==, "sec");
	g_assert_cmpstr(run.ts.provider, ==, "testcloud");

	g_autofree char *body = fake_server_body(srv, 0);
	g_autofree char *grant = http_form_get(body, "grant_type");
	g_autofree char *code = http_form_get(body, "code");
	g_autofree char *sent_redirect = http_form_get(body, "redirect_uri");
	g_autofree char *secret = http_form_get(body, "client_secret");
	g_autofree char *verifier = http_form_get(body, "code_verifier");
	g_assert_cmpstr(grant, ==, "authorization_code");
	g_assert_cmpstr(code, ==, "the-code");
	g_assert_cmpstr(sent_redirect, ==, redirect);
	g_assert_cmpstr(secret, ==, "sec");
	g_autofree char *expect = oauth_pkce_challenge(verifier);
	g_assert_cmpstr(expect, ==, challenge);

	token_set_clear(&run.ts);
	http_client_free(run.c);
	fake_server_stop(srv);
}

/* A port nothing listens on now, on 127.0.0.1 and on ::1. */
static int free_loopback_port(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
	socklen_t len = sizeof(a);
	g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	g_assert_cmpint(getsockname(fd, (struct sockaddr *)&a, &len), ==, 0);
	close(fd);
	return ntohs(a.sin6_port);
}

static bool have_ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void test_pkce_login_with_a_localhost_redirect_uri_listens_on_both_loopbacks(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT\"}"};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	int port = free_loopback_port();
	g_autofree char *registered = g_strdup_printf("http://localhost:%d/auth/done", port);
	struct pkce_run run = {
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = base,
	    .opts = {.client_id = "c", .redirect_uri = registered, .timeout_s = 10},
	};
	g_autofree char *url = NULL;
	GThread *t = pkce_start(&run, &url);
	g_autofree char *redirect = http_form_get(strchr(url, '?') + 1, "redirect_uri");
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	g_assert_cmpstr(redirect, ==, registered);

	/* A browser may resolve localhost to either address: both are ours. */
	if (have_ipv6_loopback()) {
		g_autofree char *v6 = g_strdup_printf("http://[::1]:%d/favicon.ico", port);
		g_assert_cmpint(browser_get(run.c, v6, NULL), ==, 404);
	}
	g_autofree char *wrong_path =
	    g_strdup_printf("http://127.0.0.1:%d/callback?code=c&state=%s", port, state);
	g_assert_cmpint(browser_get(run.c, wrong_path, NULL), ==, 404);
	g_autofree char *cb =
	    g_strdup_printf("http://127.0.0.1:%d/auth/done?code=c&state=%s", port, state);
	g_assert_cmpint(browser_get(run.c, cb, NULL), ==, 200);
	g_thread_join(t);
	g_assert_cmpint(run.result, ==, 0);
	g_autofree char *body = fake_server_body(srv, 0);
	g_autofree char *sent_redirect = http_form_get(body, "redirect_uri");
	g_assert_cmpstr(sent_redirect, ==, registered);
	token_set_clear(&run.ts);
	http_client_free(run.c);
	fake_server_stop(srv);
}

static void test_pkce_login_refuses_a_redirect_uri_off_this_machine(void)
{
	struct pkce_login opts = {.client_id = "c",
				  .redirect_uri = "http://attacker.example:8123/callback"};
	struct token_set ts = {0};
	GError *err = NULL;
	g_assert_cmpint(
	    oauth_pkce_login(NULL, &test_provider, "http://127.0.0.1:9", &opts, &ts, &err), ==,
	    -EINVAL);
	g_assert_nonnull(strstr(err->message, "loopback address"));
	g_clear_error(&err);
}

/* Starts a login of client "c" against a fake token endpoint answering @sc: the run
 * (its thread in run->thread), the link it printed, and its redirect URI. */
static struct fake_server *pkce_start_plain(struct token_script *sc, struct pkce_run *run,
					    char **url, char **redirect)
{
	struct fake_server *srv = fake_server_start(token_handler, sc);
	char *base = fake_server_url(srv, "");
	*run = (struct pkce_run){
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = base,
	    .owned_base = base,
	    .opts = {.client_id = "c", .timeout_s = 10},
	};
	run->thread = pkce_start(run, url);
	*redirect = http_form_get(strchr(*url, '?') + 1, "redirect_uri");
	return srv;
}

static void test_pkce_answer_with_another_state_is_answered_and_ignored(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT\"}"};
	struct pkce_run run;
	g_autofree char *url = NULL, *redirect = NULL;
	struct fake_server *srv = pkce_start_plain(&sc, &run, &url, &redirect);
	GThread *t = run.thread;
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	/* Someone else's link (their code, or an error): answered, never redeemed, and
	 * the login goes on waiting for its own answer. */
	const char *forged[] = {"code=theirs&state=forged", "error=access_denied&state=forged",
				"code=theirs"};
	for (size_t i = 0; i < G_N_ELEMENTS(forged); i++) {
		g_autofree char *cb = g_strdup_printf("%s?%s", redirect, forged[i]);
		g_autofree char *page = NULL;
		g_assert_cmpint(browser_get(run.c, cb, &page), ==, 400);
		g_assert_nonnull(strstr(page, "does not belong to the login"));
	}
	g_assert_cmpint(fake_server_requests(srv), ==, 0);
	g_autofree char *state_q = g_uri_escape_string(state, NULL, FALSE);
	g_autofree char *cb = g_strdup_printf("%s?code=ours&state=%s", redirect, state_q);
	g_assert_cmpint(browser_get(run.c, cb, NULL), ==, 200);
	g_thread_join(t);
	g_assert_no_error(run.err);
	g_assert_cmpint(run.result, ==, 0);
	g_autofree char *body = fake_server_body(srv, 0);
	g_autofree char *code = http_form_get(body, "code");
	g_assert_cmpstr(code, ==, "ours");
	token_set_clear(&run.ts);
	http_client_free(run.c);
	g_free(run.owned_base);
	fake_server_stop(srv);
}

static void test_pkce_start_page_sends_the_browser_on_to_the_authorize_link(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT\"}"};
	struct pkce_run run;
	g_autofree char *url = NULL, *redirect = NULL;
	struct fake_server *srv = pkce_start_plain(&sc, &run, &url, &redirect);
	GThread *t = run.thread;
	g_autofree char *root = g_strndup(redirect, strlen(redirect) - strlen("/callback"));
	g_autofree char *start = g_strconcat(root, "/smarthomefs-login", NULL);
	/* By hand: the HTTP client follows no redirect, and says nothing of Location. */
	int port = atoi(strrchr(root, ':') + 1);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	g_assert_cmpint(connect(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	const char *get = "GET /smarthomefs-login HTTP/1.1\r\nHost: x\r\n\r\n";
	g_assert_cmpint(write(fd, get, strlen(get)), ==, (ssize_t)strlen(get));
	GString *answer = g_string_new(NULL);
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		g_string_append_len(answer, buf, n);
	close(fd);
	g_assert_true(g_str_has_prefix(answer->str, "HTTP/1.1 303 "));
	g_autofree char *location = g_strdup_printf("\r\nLocation: %s\r\n", url);
	g_assert_nonnull(strstr(answer->str, location));
	g_string_free(answer, TRUE);
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	g_autofree char *cb = g_strdup_printf("%s?code=c1&state=%s", redirect, state);
	g_assert_cmpint(browser_get(run.c, cb, NULL), ==, 200);
	g_thread_join(t);
	g_assert_cmpint(run.result, ==, 0);
	token_set_clear(&run.ts);
	http_client_free(run.c);
	g_free(run.owned_base);
	fake_server_stop(srv);
}

static void test_pkce_idle_connections_cannot_keep_the_callback_out(void)
{
	struct token_script sc = {.success = "{\"access_token\":\"AT\"}"};
	struct pkce_run run;
	g_autofree char *url = NULL, *redirect = NULL;
	struct fake_server *srv = pkce_start_plain(&sc, &run, &url, &redirect);
	/* More idle connections than the listener has slots, held open. */
	int port = atoi(strrchr(redirect, ':') + 1);
	int idle[12];
	for (size_t i = 0; i < G_N_ELEMENTS(idle); i++) {
		idle[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		g_assert_cmpint(connect(idle[i], (struct sockaddr *)&a, sizeof(a)), ==, 0);
	}
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	g_autofree char *cb = g_strdup_printf("%s?code=c1&state=%s", redirect, state);
	g_assert_cmpint(browser_get(run.c, cb, NULL), ==, 200);
	g_thread_join(run.thread);
	g_assert_cmpint(run.result, ==, 0);
	for (size_t i = 0; i < G_N_ELEMENTS(idle); i++)
		close(idle[i]);
	token_set_clear(&run.ts);
	http_client_free(run.c);
	g_free(run.owned_base);
	fake_server_stop(srv);
}

static void test_loopback_peer_uid_is_the_connecting_socket_owner(void)
{
	g_autoptr(GError) err = NULL;
	const char *hosts[] = {"127.0.0.1", "[::1]"};
	for (size_t h = 0; h < G_N_ELEMENTS(hosts); h++) {
		struct loopback l;
		if (loopback_listen(&l, hosts[h], 0, &err) < 0) {
			g_assert_true(h == 1); /* no IPv6 loopback here */
			g_clear_error(&err);
			continue;
		}
		int family = h == 0 ? AF_INET : AF_INET6;
		int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_storage ss = {0};
		socklen_t len;
		if (family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			a->sin_family = AF_INET;
			a->sin_port = htons((uint16_t)l.port);
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			len = sizeof(*a);
		} else {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			a->sin6_family = AF_INET6;
			a->sin6_port = htons((uint16_t)l.port);
			a->sin6_addr = in6addr_loopback;
			len = sizeof(*a);
		}
		g_assert_cmpint(connect(c, (struct sockaddr *)&ss, len), ==, 0);
		struct pollfd p = {.fd = l.fd[0], .events = POLLIN};
		g_assert_cmpint(poll(&p, 1, 5000), ==, 1);
		int s = accept(l.fd[0], NULL, NULL);
		g_assert_cmpint(s, >=, 0);
		uid_t uid = (uid_t)-1;
		g_assert_cmpint(loopback_peer_uid(s, &uid), ==, 0);
		g_assert_cmpuint(uid, ==, getuid());
		close(c);
		close(s);
		loopback_close(&l);
	}
}

static void test_pkce_refused_secret_says_what_to_check(void)
{
	struct token_script sc = {.outcome = "invalid_client", .outcome_status = 401};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct pkce_run run = {
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = base,
	    .opts = {.client_id = "c", .client_secret = "wrong", .timeout_s = 10},
	};
	g_autofree char *url = NULL;
	GThread *t = pkce_start(&run, &url);
	g_autofree char *redirect = http_form_get(strchr(url, '?') + 1, "redirect_uri");
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	g_autofree char *cb = g_strdup_printf("%s?code=c&state=%s", redirect, state);
	g_autofree char *page = NULL;
	g_assert_cmpint(browser_get(run.c, cb, &page), ==, 403);
	g_thread_join(t);
	g_assert_cmpint(run.result, ==, -EACCES);
	g_assert_cmpstr(run.err->message, ==,
			"The client secret was refused; check it in "
			"Testcloud's client management and log in again.");
	g_assert_nonnull(strstr(page, "The client secret was refused"));
	g_clear_error(&run.err);
	http_client_free(run.c);
	fake_server_stop(srv);
}

static void test_pkce_error_in_the_browser_is_eacces_with_its_description(void)
{
	struct token_script sc = {0};
	struct fake_server *srv = fake_server_start(token_handler, &sc);
	g_autofree char *base = fake_server_url(srv, "");
	struct pkce_run run = {
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = base,
	    .opts = {.client_id = "c", .timeout_s = 10},
	};
	g_autofree char *url = NULL;
	GThread *t = pkce_start(&run, &url);
	g_autofree char *redirect = http_form_get(strchr(url, '?') + 1, "redirect_uri");
	g_autofree char *state = http_form_get(strchr(url, '?') + 1, "state");
	g_autofree char *cb = g_strdup_printf(
	    "%s?error=access_denied&error_description=%%3Cb%%3Enope%%3C%%2Fb%%3E&state=%s",
	    redirect, state);
	g_autofree char *page = NULL;
	g_assert_cmpint(browser_get(run.c, cb, &page), ==, 403);
	g_thread_join(t);
	g_assert_cmpint(run.result, ==, -EACCES);
	g_assert_nonnull(strstr(run.err->message, "<b>nope</b>"));
	/* The page escapes what the URL carried. */
	g_assert_null(strstr(page, "<b>"));
	g_clear_error(&run.err);
	http_client_free(run.c);
	fake_server_stop(srv);
}

static void test_pkce_login_nobody_completes_is_etimedout(void)
{
	struct pkce_run run = {
	    .c = http_client_new(NULL, 5, 65536, "t/1"),
	    .base = "http://127.0.0.1:9",
	    .opts = {.client_id = "c", .timeout_s = 1},
	};
	g_autofree char *url = NULL;
	GThread *t = pkce_start(&run, &url);
	g_thread_join(t);
	g_assert_cmpint(run.result, ==, -ETIMEDOUT);
	g_assert_true(
	    g_str_has_prefix(run.err->message, "Nobody completed the login in 1 seconds;"));
	g_clear_error(&run.err);
	http_client_free(run.c);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_unsetenv("DISPLAY");
	g_unsetenv("WAYLAND_DISPLAY");
	g_test_add_func("/oauth/pkce_challenge_matches_rfc7636_appendix_b",
			test_pkce_challenge_matches_rfc7636_appendix_b);
	g_test_add_func("/oauth/pkce_pair_is_fresh_and_well_formed",
			test_pkce_pair_is_fresh_and_well_formed);
	g_test_add_func("/oauth/callback_with_code_and_state_is_parsed",
			test_callback_with_code_and_state_is_parsed);
	g_test_add_func("/oauth/callback_with_error_is_reported",
			test_callback_with_error_is_reported);
	g_test_add_func("/oauth/other_paths_are_not_callbacks", test_other_paths_are_not_callbacks);
	g_test_add_func("/oauth/callback_on_a_registered_path_is_parsed",
			test_callback_on_a_registered_path_is_parsed);
	g_test_add_func("/oauth/callback_with_a_repeated_parameter_is_refused",
			test_callback_with_a_repeated_parameter_is_refused);
	g_test_add_func("/oauth/hostile_callbacks_never_crash", test_hostile_callbacks_never_crash);
	g_test_add_func("/oauth/token_answer_fills_the_set_and_keeps_an_absent_refresh_token",
			test_token_answer_fills_the_set_and_keeps_an_absent_refresh_token);
	g_test_add_func("/oauth/invalid_grant_is_eacces_with_the_code",
			test_invalid_grant_is_eacces_with_the_code);
	g_test_add_func("/oauth/429_with_an_empty_body_is_eagain_and_touches_nothing",
			test_429_with_an_empty_body_is_eagain_and_touches_nothing);
	g_test_add_func("/oauth/non_json_success_is_eio", test_non_json_success_is_eio);
	g_test_add_func("/oauth/refresh_sends_the_grant_the_client_and_the_secret",
			test_refresh_sends_the_grant_the_client_and_the_secret);
	g_test_add_func("/oauth/device_login_polls_until_approved_and_shows_the_link",
			test_device_login_polls_until_approved_and_shows_the_link);
	g_test_add_func("/oauth/device_link_with_client_id_is_left_alone",
			test_device_link_with_client_id_is_left_alone);
	g_test_add_func("/oauth/device_link_without_query_gets_a_question_mark",
			test_device_link_without_query_gets_a_question_mark);
	g_test_add_func("/oauth/device_login_denied_is_eacces", test_device_login_denied_is_eacces);
	g_test_add_func("/oauth/device_code_expired_is_etimedout",
			test_device_code_expired_is_etimedout);
	g_test_add_func("/oauth/pkce_login_exchanges_the_code_with_verifier_and_secret",
			test_pkce_login_exchanges_the_code_with_verifier_and_secret);
	g_test_add_func("/oauth/registered_loopback_redirect_uris_are_taken_apart",
			test_registered_loopback_redirect_uris_are_taken_apart);
	g_test_add_func("/oauth/other_redirect_uris_are_refused_with_the_reason",
			test_other_redirect_uris_are_refused_with_the_reason);
	g_test_add_func("/oauth/pkce_login_with_a_localhost_redirect_uri_listens_on_both_loopbacks",
			test_pkce_login_with_a_localhost_redirect_uri_listens_on_both_loopbacks);
	g_test_add_func("/oauth/pkce_login_refuses_a_redirect_uri_off_this_machine",
			test_pkce_login_refuses_a_redirect_uri_off_this_machine);
	g_test_add_func("/oauth/pkce_answer_with_another_state_is_answered_and_ignored",
			test_pkce_answer_with_another_state_is_answered_and_ignored);
	g_test_add_func("/oauth/pkce_start_page_sends_the_browser_on_to_the_authorize_link",
			test_pkce_start_page_sends_the_browser_on_to_the_authorize_link);
	g_test_add_func("/oauth/pkce_idle_connections_cannot_keep_the_callback_out",
			test_pkce_idle_connections_cannot_keep_the_callback_out);
	g_test_add_func("/oauth/loopback_peer_uid_is_the_connecting_socket_owner",
			test_loopback_peer_uid_is_the_connecting_socket_owner);
	g_test_add_func("/oauth/pkce_refused_secret_says_what_to_check",
			test_pkce_refused_secret_says_what_to_check);
	g_test_add_func("/oauth/pkce_error_in_the_browser_is_eacces_with_its_description",
			test_pkce_error_in_the_browser_is_eacces_with_its_description);
	g_test_add_func("/oauth/pkce_login_nobody_completes_is_etimedout",
			test_pkce_login_nobody_completes_is_etimedout);
	return g_test_run();
}
