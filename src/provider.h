/* provider: what one cloud is, as data plus a few pure functions. The core (fs, tree,
 * cache, session) never names a cloud; it asks the provider which API resource a path
 * of the tree is made from, then lets the provider list or render that path from the
 * resource's parsed JSON. The functions below are pure (no I/O, no globals), so they
 * are thread-safe and fuzzable.
 *
 * Paths are given as raw (unescaped) names below the mount's root: {"homes", "1001",
 * "zones", "1", "state.json"}. The provider sees nothing of ".smarthomefs". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include <jansson.h>

enum login_flow {
	LOGIN_DEVICE_CODE,     /* RFC 8628; a public client id is built in */
	LOGIN_AUTH_CODE_PKCE,  /* authorization code + PKCE with a loopback redirect (RFC 8252) */
};

struct provider_path {
	const char *const *comp;
	size_t n;
	/* What a listing of history depends on besides a body (history.h); 0 where no
	 * history is listed (prefetch, fuzzing): */
	gint64 now_s;	       /* unix seconds, on the cloud's clock (session_now_s) */
	gint64 history_from_s; /* the oldest instant history reaches (history_days=) */
};

enum entry_type { ENTRY_FILE, ENTRY_DIR };

struct provider_entry {
	char *name; /* raw name, as the API spells the id; the tree escapes it */
	enum entry_type type;
};

/* Which of a provider's API hosts a resource lives on. */
enum api_base {
	API_BASE_MAIN,	 /* the account's api_url */
	API_BASE_SECOND, /* the account's hops_url: the provider's second_api_url (tado X) */
};

/* The API resource a node is made from. */
struct resource_ref {
	char *path; /* API path relative to its base ("/homes/1001/zoneStates"); NULL: a static
		     * node, or one that waits for its context */
	char *key;  /* cache key when several paths are the same resource, and for every
		     * resource on the second host; NULL: use path */
	int ttl;    /* seconds this resource may be served from cache; 0: the account's ttl */
	enum api_base base;
	/* The body is cursor-paged: the session follows each page's "next" link (on the
	 * same host and path only) and keeps the pages as one JSON array of page bodies. */
	bool paged;
	/* Unix seconds (the cloud's clock) from which the resource never changes again: a
	 * finished period of history. From then on it is fetched once, pinned on disk for
	 * good (never expired nor evicted, cache.h) and its files show this as their mtime.
	 * 0: it may change any time. */
	gint64 immutable_at_s;
	/* How long after immutable_at_s the cloud may still change it (data that arrives
	 * late): it is final, pinned, only then. Meanwhile it is an ordinary resource whose
	 * files show immutable_at_s as their change time. */
	int settle_s;
	/* What a listing made from this resource depends on besides its body (the day, for
	 * a history directory): the directory is listed again when it changes. */
	uint64_t list_epoch;
	/* Set by source() when which resource the node is made from depends on another
	 * resource's body (tado: a home's generation says on which host its rooms are):
	 * the caller gets that resource and asks source_in() with its body. Owned. */
	struct resource_ref *context;
};

struct provider {
	const char *name;        /* "tado": the ACCOUNT prefix and the keyring attribute */
	const char *title;       /* "tado°": for messages */
	const char *api_url;     /* default, no trailing slash */
	const char *second_api_url; /* default of hops_url (tado X's host); NULL: none */
	const char *auth_url;    /* default, no trailing slash */
	enum login_flow login;
	const char *client_id;   /* built-in public client; NULL: the user brings one (--client-id) */
	const char *scope;       /* default scope of a login */
	const char *device_authorize_path; /* LOGIN_DEVICE_CODE */
	const char *authorize_path;        /* LOGIN_AUTH_CODE_PKCE */
	const char *token_path;
	bool verification_uri_needs_client_id; /* append &client_id= to the link shown */
	bool quota_is_scarce;    /* a daily quota small enough that prefetching is not affordable */
	int default_ttl;         /* seconds */
	/* How long a refresh token lives after it was issued, unused; 0: unknown. */
	gint64 refresh_token_lifetime_s;

	/* Sets *ref for @path: ref->path NULL for a static directory. Returns 0, or -ENOENT
	 * when no such path can exist. Allocates ref's strings (resource_ref_clear). */
	int (*source)(const struct provider_path *path, struct resource_ref *ref);
	/* For a @ref that source() gave a context: sets it from the context's body @context.
	 * Returns 0, -ENOENT, -EIO when the body has the wrong shape, or -EPROTONOSUPPORT
	 * when the cloud sent something this version does not know how to show, with a
	 * sentence for the user in *note (g_free). NULL when source() never sets a context. */
	int (*source_in)(const struct provider_path *path, json_t *context,
			 struct resource_ref *ref, char **note);
	/* Appends struct provider_entry * (provider_entry_free) to @entries: the children of
	 * directory @path, made from @body (NULL for a static directory). Returns 0, -ENOENT
	 * when the body does not hold this directory, -EIO when the body has the wrong shape. */
	int (*list)(const struct provider_path *path, json_t *body, GPtrArray *entries);
	/* Appends the bytes of file @path, made from @body, to @out. Returns 0, -ENOENT,
	 * or -EIO when the body has the wrong shape. */
	int (*render)(const struct provider_path *path, json_t *body, GString *out);
};

/* Every provider, NULL-terminated. */
const struct provider *const *provider_all(void);
/* The provider named @name, or NULL. */
const struct provider *provider_find(const char *name);

/* Frees what @ref holds, its context too, and zeroes it. */
void resource_ref_clear(struct resource_ref *ref);

/* A provider's path grammar, in one table: each route is a pattern of components split
 * by '/', where a component "*" stands for any non-empty id and "" is the root. source,
 * list and render match a path against it once. */
struct provider_route {
	const char *pattern;
	enum entry_type type;
};
#define PROVIDER_ROUTE_IDS 4
/* The index of the first of @n @routes that @path matches, with the ids its "*" stand
 * for in @ids (borrowed from @path, at most PROVIDER_ROUTE_IDS); -ENOENT when none. */
int provider_route_match(const struct provider_route *routes, size_t n,
			 const struct provider_path *path, const char **ids);
/* Appends the fixed children of directory route @dir, in table order: the routes one
 * component below it that end in a name, not an id. */
void provider_route_children(const struct provider_route *routes, size_t n, size_t dir,
			     GPtrArray *entries);
struct provider_entry *provider_entry_new(const char *name, enum entry_type type);
struct provider_entry *provider_entry_new_len(const char *name, size_t len, enum entry_type type);
void provider_entry_free(void *entry);
/* A GPtrArray that frees its provider_entry elements. */
GPtrArray *provider_entries_new(void);

/* Parses an API body (new reference, or NULL with @err filled). Clouds send ids that are
 * not valid JSON text: a byte that is not UTF-8 inside a string reads as the Latin-1
 * character of that byte, and \u0000 is allowed (the C id ends there), so one bad id
 * costs its own entry instead of the whole listing. Depth is bounded by jansson, the
 * tree's weight by the parse: at most 12 times the text plus 1 MiB (a body of empty
 * objects would weigh 75 times its text); past it, NULL with @err saying so. */
json_t *provider_json_parse(const char *data, size_t len, json_error_t *err);

/* Helpers shared by the providers' mappings. */
/* Appends @json pretty-printed (2-space indent, sorted as given) and a newline. */
int provider_render_json(json_t *json, GString *out);
/* Appends a scalar as text and a newline: numbers as JSON writes them, strings raw,
 * true/false, and null as an empty line. -EIO for an object or array. */
int provider_render_scalar(json_t *value, GString *out);
/* The id of @obj[@key] as text: a string as is, an integer in decimal. NULL otherwise.
 * Returns a new string (g_free). */
char *provider_json_id(json_t *obj, const char *key);
/* The first element of array @arr whose @key id equals @id, or NULL. */
json_t *provider_find_by_id(json_t *arr, const char *key, const char *id);
/* @id as one segment of an API path (g_free): percent-encoded so that "/", "?" or "#"
 * cannot leave the segment, "." and ".." encoded so that no dot segment forms. NULL
 * for a NULL or empty id (no such resource). */
char *provider_path_segment(const char *id);
/* @json["a"]["b"]... for @dotted "a.b", or NULL when a step is missing or no object. */
json_t *provider_json_lookup(json_t *json, const char *dotted);
/* @text made safe to quote in a log line or status.json: control bytes and invalid
 * UTF-8 escaped, cut after @max bytes with "...". g_free. */
char *provider_quote(const char *text, size_t max);
