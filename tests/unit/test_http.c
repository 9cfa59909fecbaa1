/* http: the pure helpers, and the client against a loopback server (no network). */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include <stdio.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "fake_http.h"

static void test_status_errno_table(void)
{
	static const struct {
		long status;
		int err;
	} table[] = {
	    {200, 0},	       {204, 0},	  {401, -EACCES},    {403, -EACCES},
	    {404, -ENOENT},    {410, -ENOENT},	  {429, -EAGAIN},    {408, -ETIMEDOUT},
	    {504, -ETIMEDOUT}, {400, -EIO},	  {422, -EIO},	     {500, -EREMOTEIO},
	    {502, -EREMOTEIO}, {503, -EREMOTEIO}, {599, -EREMOTEIO}, {0, -EIO},
	    {302, -EIO},       {600, -EIO},
	};
	for (size_t i = 0; i < G_N_ELEMENTS(table); i++)
		g_assert_cmpint(http_status_errno(table[i].status), ==, table[i].err);
}

static void test_form_encodes_both_sides(void)
{
	g_autofree char *f = http_form("grant_type", "refresh_token", "a b&c", "x=y/ü~", NULL);
	g_assert_cmpstr(f, ==, "grant_type=refresh_token&a%20b%26c=x%3Dy%2F%C3%BC~");
}

static void test_form_skips_null_values(void)
{
	g_autofree char *f = http_form("a", NULL, "b", "2", "c", NULL, NULL);
	g_assert_cmpstr(f, ==, "b=2");
	g_autofree char *empty = http_form("a", NULL, NULL);
	g_assert_cmpstr(empty, ==, "");
}

static void test_form_get_round_trips(void)
{
	g_autofree char *f = http_form("code", "a&b=c d+e%", "state", "", NULL);
	g_autofree char *code = http_form_get(f, "code");
	g_autofree char *state = http_form_get(f, "state");
	g_assert_cmpstr(code, ==, "a&b=c d+e%");
	g_assert_cmpstr(state, ==, "");
}

static void test_form_get_decodes_plus_and_query_mark(void)
{
	g_autofree char *v = http_form_get("?x=1&scope=a+b%20c", "scope");
	g_assert_cmpstr(v, ==, "a b c");
	g_autofree char *flag = http_form_get("flag&x=1", "flag");
	g_assert_cmpstr(flag, ==, "");
}

static void test_form_get_missing_or_broken_is_null(void)
{
	g_assert_null(http_form_get("a=1&b=2", "c"));
	g_assert_null(http_form_get("a=%zz", "a"));
	g_assert_null(http_form_get("a=%00x", "a"));
	g_assert_null(http_form_get("", "a"));
	g_assert_null(http_form_get(NULL, "a"));
	g_assert_null(http_form_get("a=1#b=2", "b"));
	g_autofree char *first = http_form_get("a=1&a=2", "a");
	g_assert_cmpstr(first, ==, "1");
}

/* ---- the client against a loopback server ---- */

struct script {
	int fail_first; /* answer this many requests with @fail_status */
	int fail_status;
	const char *fail_headers;
	const char *ok_body;
	size_t big_body; /* when set, the OK body has this many bytes */
};

static void script_handler(const struct fake_request *req, int *status, GString *headers,
			   GString *body, void *data)
{
	struct script *s = data;
	if (s->fail_first > 0) {
		s->fail_first--;
		*status = s->fail_status;
		if (s->fail_headers)
			g_string_append(headers, s->fail_headers);
		return;
	}
	*status = 200;
	g_string_append(headers, "content-TYPE: application/json\r\n"
				 "ratelimit: \"perday\";r=7;t=60\r\n"
				 "RATELIMIT-POLICY: \"perday\";q=100;w=86400\r\n");
	if (s->big_body)
		for (size_t i = 0; i < s->big_body; i++)
			g_string_append_c(body, 'x');
	else
		g_string_append(body, s->ok_body ? s->ok_body : "{}");
}

static void test_ok_answer_carries_body_and_headers_in_any_case(void)
{
	struct script sc = {.ok_body = "{\"a\":1}"};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 1024, "smarthomefs-test/1");
	g_autofree char *url = fake_server_url(srv, "/x?secret=1");
	struct http_request req = {.method = "GET", .url = url, .bearer = "tok-123456789"};
	struct http_response resp;
	g_assert_cmpint(http_request(c, &req, &resp), ==, 0);
	g_assert_cmpint(resp.status, ==, 200);
	g_assert_cmpint(resp.attempts, ==, 1);
	gsize len;
	const char *data = g_bytes_get_data(resp.body, &len);
	g_assert_cmpmem(data, len, "{\"a\":1}", 7);
	g_assert_cmpstr(resp.content_type, ==, "application/json");
	g_assert_cmpstr(resp.ratelimit, ==, "\"perday\";r=7;t=60");
	g_assert_cmpstr(resp.ratelimit_policy, ==, "\"perday\";q=100;w=86400");
	g_assert_null(resp.retry_after);
	g_autofree char *h = fake_server_headers(srv, 0);
	g_assert_nonnull(strstr(h, "User-Agent: smarthomefs-test/1\r\n"));
	g_assert_nonnull(strstr(h, "Authorization: Bearer tok-123456789\r\n"));
	http_response_clear(&resp);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_post_sends_the_form(void)
{
	struct script sc = {0};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 1024, "t/1");
	g_autofree char *url = fake_server_url(srv, "/token");
	g_autofree char *form = http_form("a", "1 2", NULL);
	struct http_request req = {.method = "POST", .url = url, .form = form};
	struct http_response resp;
	g_assert_cmpint(http_request(c, &req, &resp), ==, 0);
	g_autofree char *body = fake_server_body(srv, 0);
	g_assert_cmpstr(body, ==, "a=1%202");
	g_autofree char *h = fake_server_headers(srv, 0);
	g_assert_nonnull(strstr(h, "application/x-www-form-urlencoded"));
	http_response_clear(&resp);
	http_client_free(c);
	fake_server_stop(srv);
}

/* One GET of at most @tries attempts against a server playing @sc. Fills @resp (the
 * caller clears it) and returns how many requests the server saw. */
static int scripted_get(struct script *sc, int tries, struct http_response *resp)
{
	struct fake_server *srv = fake_server_start(script_handler, sc);
	struct http_client *c = http_client_new(NULL, 10, 1024, "t/1");
	g_autofree char *url = fake_server_url(srv, "/x");
	struct http_request req = {.method = "GET", .url = url, .tries = tries};
	g_assert_cmpint(http_request(c, &req, resp), ==, 0);
	http_client_free(c);
	int requests = fake_server_requests(srv);
	fake_server_stop(srv);
	return requests;
}

static void test_503_is_retried_until_it_works(void)
{
	struct script sc = {.fail_first = 2, .fail_status = 503};
	struct http_response resp;
	g_assert_cmpint(scripted_get(&sc, 5, &resp), ==, 3);
	g_assert_cmpint(resp.status, ==, 200);
	g_assert_cmpint(resp.attempts, ==, 3);
	http_response_clear(&resp);
}

static void test_last_retryable_answer_is_returned_when_tries_run_out(void)
{
	struct script sc = {.fail_first = 10, .fail_status = 502};
	struct http_response resp;
	g_assert_cmpint(scripted_get(&sc, 2, &resp), ==, 2);
	g_assert_cmpint(resp.status, ==, 502);
	g_assert_cmpint(resp.attempts, ==, 2);
	g_assert_nonnull(resp.body);
	http_response_clear(&resp);
}

static void test_404_is_never_retried(void)
{
	struct script sc = {.fail_first = 10, .fail_status = 404};
	struct http_response resp;
	g_assert_cmpint(scripted_get(&sc, 5, &resp), ==, 1);
	g_assert_cmpint(resp.status, ==, 404);
	http_response_clear(&resp);
}

static void test_retry_after_beyond_the_deadline_returns_the_503_at_once(void)
{
	struct script sc = {
	    .fail_first = 10, .fail_status = 503, .fail_headers = "Retry-After: 3600\r\n"};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 1024, "t/1");
	g_autofree char *url = fake_server_url(srv, "/x");
	struct http_request req = {.method = "GET", .url = url, .tries = 5};
	struct http_response resp;
	gint64 t0 = g_get_monotonic_time();
	g_assert_cmpint(http_request(c, &req, &resp), ==, 0);
	g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
	g_assert_cmpint(resp.status, ==, 503);
	g_assert_cmpstr(resp.retry_after, ==, "3600");
	g_assert_cmpint(fake_server_requests(srv), ==, 1);
	http_response_clear(&resp);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_short_retry_after_is_honoured(void)
{
	struct script sc = {
	    .fail_first = 1, .fail_status = 503, .fail_headers = "retry-after: 1\r\n"};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 10, 1024, "t/1");
	g_autofree char *url = fake_server_url(srv, "/x");
	struct http_request req = {.method = "GET", .url = url, .tries = 3};
	struct http_response resp;
	gint64 t0 = g_get_monotonic_time();
	g_assert_cmpint(http_request(c, &req, &resp), ==, 0);
	g_assert_cmpint(g_get_monotonic_time() - t0, >=, 900 * 1000);
	g_assert_cmpint(resp.status, ==, 200);
	g_assert_cmpint(resp.attempts, ==, 2);
	http_response_clear(&resp);
	http_client_free(c);
	fake_server_stop(srv);
}

static void test_a_429_is_never_retried_even_with_a_short_retry_after(void)
{
	struct script sc = {
	    .fail_first = 1, .fail_status = 429, .fail_headers = "Retry-After: 0\r\n"};
	struct http_response resp;
	g_assert_cmpint(scripted_get(&sc, 3, &resp), ==, 1);
	g_assert_cmpint(resp.status, ==, 429);
	g_assert_cmpint(resp.attempts, ==, 1);
	http_response_clear(&resp);
}

static void test_body_over_the_cap_is_efbig(void)
{
	struct script sc = {.big_body = 5000};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 1000, "t/1");
	g_autofree char *url = fake_server_url(srv, "/x");
	struct http_request req = {.method = "GET", .url = url, .tries = 3};
	struct http_response resp;
	g_assert_cmpint(http_request(c, &req, &resp), ==, -EFBIG);
	g_assert_null(resp.body);
	g_assert_cmpint(fake_server_requests(srv), ==, 1);
	http_client_free(c);
	fake_server_stop(srv);
}

/* Bodies over HTTP_LARGE_BODY held at once are few, whatever the number of readers: with
 * every slot held by an answer not cleared yet, a third large body waits until its
 * deadline (-ETIMEDOUT); a small body does not wait; clearing an answer lets the next
 * large one through. */
static void test_large_bodies_held_at_once_are_bounded(void)
{
	struct script big = {.big_body = HTTP_LARGE_BODY + 4096};
	struct script small = {0};
	struct fake_server *big_srv = fake_server_start(script_handler, &big);
	struct fake_server *small_srv = fake_server_start(script_handler, &small);
	struct http_client *c = http_client_new(NULL, 1, 16 << 20, "t/1");
	g_autofree char *big_url = fake_server_url(big_srv, "/big");
	g_autofree char *small_url = fake_server_url(small_srv, "/small");
	struct http_request big_req = {.method = "GET", .url = big_url};
	struct http_request small_req = {.method = "GET", .url = small_url};
	struct http_response held[2], resp;

	for (int i = 0; i < 2; i++) {
		g_assert_cmpint(http_request(c, &big_req, &held[i]), ==, 0);
		g_assert_cmpuint(g_bytes_get_size(held[i].body), ==, big.big_body);
	}
	g_assert_cmpint(http_request(c, &big_req, &resp), ==, -ETIMEDOUT);
	g_assert_null(resp.body);
	g_assert_cmpint(http_request(c, &small_req, &resp), ==, 0);
	g_assert_cmpmem(g_bytes_get_data(resp.body, NULL), g_bytes_get_size(resp.body), "{}", 2);
	http_response_clear(&resp);
	http_response_clear(&held[0]);
	g_assert_cmpint(http_request(c, &big_req, &resp), ==, 0);
	g_assert_cmpuint(g_bytes_get_size(resp.body), ==, big.big_body);
	http_response_clear(&resp);
	http_response_clear(&held[1]);
	http_client_free(c);
	fake_server_stop(big_srv);
	fake_server_stop(small_srv);
}

static void test_refused_connection_is_econnrefused(void)
{
	/* A port just released by a listener: nothing answers there. */
	struct script sc = {0};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	g_autofree char *url = fake_server_url(srv, "/x");
	fake_server_stop(srv);
	struct http_client *c = http_client_new(NULL, 5, 1000, "t/1");
	struct http_request req = {.method = "GET", .url = url, .tries = 2};
	struct http_response resp;
	g_assert_cmpint(http_request(c, &req, &resp), ==, -ECONNREFUSED);
	http_client_free(c);
}

static void test_debug_line_shows_no_query_and_no_token(void)
{
	struct script sc = {0};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	struct http_client *c = http_client_new(NULL, 5, 1024, "t/1");
	g_autofree char *url = fake_server_url(srv, "/homes/1?code=SECRETCODE");
	g_autofree char *path = NULL;
	int fd = g_file_open_tmp("http-log-XXXXXX", &path, NULL);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	log_setup("test", false, true);
	struct http_request req = {.method = "GET", .url = url, .bearer = "BEARERTOKEN123"};
	struct http_response resp;
	int r = http_request(c, &req, &resp);
	log_setup("test", false, false);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	g_assert_cmpint(r, ==, 0);
	g_autofree char *logged = NULL;
	g_assert_true(g_file_get_contents(path, &logged, NULL, NULL));
	unlink(path);
	g_assert_nonnull(strstr(logged, "GET "));
	g_assert_nonnull(strstr(logged, "/homes/1"));
	g_assert_nonnull(strstr(logged, "200"));
	g_assert_null(strstr(logged, "SECRETCODE"));
	g_assert_null(strstr(logged, "BEARERTOKEN123"));
	http_response_clear(&resp);
	http_client_free(c);
	fake_server_stop(srv);
}

struct parallel {
	struct http_client *c;
	const char *url;
	volatile gint ok;
};

static gpointer parallel_get(gpointer p)
{
	struct parallel *par = p;
	for (int i = 0; i < 5; i++) {
		struct http_request req = {.method = "GET", .url = par->url};
		struct http_response resp;
		if (http_request(par->c, &req, &resp) == 0 && resp.status == 200)
			g_atomic_int_inc(&par->ok);
		http_response_clear(&resp);
	}
	return NULL;
}

static void test_threads_share_one_client(void)
{
	struct script sc = {0};
	struct fake_server *srv = fake_server_start(script_handler, &sc);
	g_autofree char *url = fake_server_url(srv, "/x");
	struct parallel par = {.c = http_client_new(NULL, 10, 1000, "t/1"), .url = url};
	GThread *t[8];
	for (size_t i = 0; i < G_N_ELEMENTS(t); i++)
		t[i] = g_thread_new("get", parallel_get, &par);
	for (size_t i = 0; i < G_N_ELEMENTS(t); i++)
		g_thread_join(t[i]);
	g_assert_cmpint(par.ok, ==, 40);
	http_client_free(par.c);
	fake_server_stop(srv);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/http/status_errno_table", test_status_errno_table);
	g_test_add_func("/http/form_encodes_both_sides", test_form_encodes_both_sides);
	g_test_add_func("/http/form_skips_null_values", test_form_skips_null_values);
	g_test_add_func("/http/form_get_round_trips", test_form_get_round_trips);
	g_test_add_func("/http/form_get_decodes_plus_and_query_mark",
			test_form_get_decodes_plus_and_query_mark);
	g_test_add_func("/http/form_get_missing_or_broken_is_null",
			test_form_get_missing_or_broken_is_null);
	g_test_add_func("/http/ok_answer_carries_body_and_headers_in_any_case",
			test_ok_answer_carries_body_and_headers_in_any_case);
	g_test_add_func("/http/post_sends_the_form", test_post_sends_the_form);
	g_test_add_func("/http/503_is_retried_until_it_works", test_503_is_retried_until_it_works);
	g_test_add_func("/http/last_retryable_answer_is_returned_when_tries_run_out",
			test_last_retryable_answer_is_returned_when_tries_run_out);
	g_test_add_func("/http/404_is_never_retried", test_404_is_never_retried);
	g_test_add_func("/http/retry_after_beyond_the_deadline_returns_the_503_at_once",
			test_retry_after_beyond_the_deadline_returns_the_503_at_once);
	g_test_add_func("/http/a_429_is_never_retried_even_with_a_short_retry_after",
			test_a_429_is_never_retried_even_with_a_short_retry_after);
	g_test_add_func("/http/short_retry_after_is_honoured", test_short_retry_after_is_honoured);
	g_test_add_func("/http/body_over_the_cap_is_efbig", test_body_over_the_cap_is_efbig);
	g_test_add_func("/http/large_bodies_held_at_once_are_bounded",
			test_large_bodies_held_at_once_are_bounded);
	g_test_add_func("/http/refused_connection_is_econnrefused",
			test_refused_connection_is_econnrefused);
	g_test_add_func("/http/debug_line_shows_no_query_and_no_token",
			test_debug_line_shows_no_query_and_no_token);
	g_test_add_func("/http/threads_share_one_client", test_threads_share_one_client);
	return g_test_run();
}
