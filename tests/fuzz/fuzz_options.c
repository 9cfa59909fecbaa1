/* Fuzzes the -o parser and the config file parser. The input up to the first NUL is an
 * -o list; the rest is the text of a config file (written to a private temporary file,
 * as the daemon reads one). Invariants: 0 or -EINVAL with a message, never a crash; an
 * accepted URL is https://, an accepted path absolute, numbers within their range. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *config_path;

static void check(const struct options *o)
{
	assert(!o->api_url || g_str_has_prefix(o->api_url, "https://"));
	assert(!o->auth_url || g_str_has_prefix(o->auth_url, "https://"));
	assert(!o->cafile || o->cafile[0] == '/');
	assert(!o->cache_dir || o->cache_dir[0] == '/');
	assert(o->ttl >= -1 && o->timeout >= 1 && o->max_threads >= 2 && o->prefetch >= 0);
}

static void write_config(const uint8_t *data, size_t size)
{
	int fd;

	if (!config_path) {
		config_path = g_build_filename(g_get_tmp_dir(), "smarthomefs-fuzz-XXXXXX", NULL);
		fd = g_mkstemp(config_path);
	} else {
		fd = open(config_path, O_WRONLY | O_TRUNC);
	}
	assert(fd >= 0);
	for (size_t off = 0; off < size;) {
		ssize_t w = write(fd, data + off, size - off);
		assert(w > 0);
		off += (size_t)w;
	}
	close(fd);
}

static void cleanup(void)
{
	if (config_path)
		unlink(config_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t list_len = nul ? (size_t)(nul - data) : size;
	g_autofree char *list = g_strndup((const char *)data, list_len);
	struct options o;
	GError *err = NULL;
	int r;

	if (!config_path)
		atexit(cleanup);
	options_init(&o);
	r = options_parse(&o, list, &err);
	assert(r == 0 || (r == -EINVAL && err && err->message[0]));
	g_clear_error(&err);
	check(&o);
	options_clear(&o);

	if (!nul)
		return 0;
	write_config(nul + 1, size - list_len - 1);
	const char *accounts[] = {"tado", "tibber:home", "tado:x"};
	for (size_t i = 0; i < G_N_ELEMENTS(accounts); i++) {
		options_init(&o);
		r = options_load_config(&o, config_path, accounts[i], &err);
		assert(r == 0 || ((r == -EINVAL || r == -EIO) && err && err->message[0]));
		g_clear_error(&err);
		check(&o);
		options_clear(&o);
	}
	return 0;
}
