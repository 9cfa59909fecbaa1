/* auth: one account's tokens. Refresh tokens rotate and are single use (tado revokes
 * the old one the moment it is used), so two refreshes racing each other — two FUSE
 * threads, or two mounts of the same account — would log the user out.
 * Hence one refresh at a time in the process (a flag under a mutex, waiters on a
 * condition), an flock across processes, a re-read of the store under that flock, and
 * the new set saved before anyone uses it. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>

#include "http.h"
#include "log.h"
#include "provider.h"
#include "token.h"
#include "trust.h"

/* Refresh at most this long before the expiry, so a token never dies in flight; see
 * refresh_margin_us(). */
#define EXPIRY_MARGIN_S 60
/* After a failed refresh, readers get the error at once for a while instead of each
 * one hitting the token endpoint again. */
#define HOLDOFF_TRANSIENT_US (5 * G_USEC_PER_SEC)
#define HOLDOFF_REFUSED_US   (30 * G_USEC_PER_SEC)
/* Another process refreshing holds the lock for one token request at most. */
#define LOCK_WAIT_US (60 * G_USEC_PER_SEC)
#define LOCK_POLL_US (50 * 1000)

struct auth {
	char *account;
	const struct provider *provider;
	struct http_client *http;
	char *auth_url;
	struct token_store store;
	char *lock_dir;

	GMutex mu;
	GCond refreshed;	 /* signalled when a refresh ends */
	struct token_set ts;	 /* (mu) */
	bool rejected;		 /* (mu) the API answered 401 to ts.access_token */
	bool refreshing;	 /* (mu) a thread is refreshing; others wait */
	bool save_pending;	 /* (mu) ts is newer than the store: the last save failed */
	bool refused;		 /* (mu) the token endpoint refused ts.refresh_token */
	guint64 generation;	 /* (mu) refreshes ended, successful or not */
	int last_result;	 /* (mu) how the last refresh ended */
	gint64 retry_not_before_us; /* (mu) monotonic; holdoff after a failed refresh */
	unsigned refresh_count;	 /* (mu) */
	bool forgotten;		 /* (mu) logged out (auth_forget): no token is handed out again */
};

/* ---- auth ---- */

struct auth *auth_new(const char *account, const struct provider *provider,
		      struct http_client *http, const char *auth_url,
		      const struct token_store *store, const char *lock_dir)
{
	struct auth *a = g_new0(struct auth, 1);
	a->account = g_strdup(account);
	a->provider = provider;
	a->http = http;
	a->auth_url = g_strdup(auth_url && *auth_url ? auth_url : provider->auth_url);
	a->store.kind = store->kind;
	a->store.state_dir = g_strdup(store->state_dir);
	a->lock_dir = lock_dir && *lock_dir
			  ? g_strdup(lock_dir)
			  : g_build_filename(g_get_user_runtime_dir(), "smarthomefs", NULL);
	g_mutex_init(&a->mu);
	g_cond_init(&a->refreshed);
	return a;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	token_set_clear(&a->ts);
	g_mutex_clear(&a->mu);
	g_cond_clear(&a->refreshed);
	g_free(a->account);
	g_free(a->auth_url);
	g_free(a->store.state_dir);
	g_free(a->lock_dir);
	g_free(a);
}

/* Replaces the published set with @fresh (taken over). Caller holds mu. */
static void auth_publish_locked(struct auth *a, struct token_set *fresh)
{
	token_set_hide(fresh);
	if (g_strcmp0(fresh->refresh_token, a->ts.refresh_token) != 0)
		a->refused = false;
	token_set_unhide_rotated(&a->ts, fresh);
	token_set_clear(&a->ts);
	a->ts = *fresh;
	*fresh = (struct token_set){0};
	a->rejected = false;
}

int auth_load(struct auth *a, GError **err)
{
	g_autoptr(GError) e = NULL;
	struct token_set ts = {0};
	int r = token_set_load(&a->store, a->account, &ts, &e);
	if (r == -ENOENT) {
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
			    "No login for %s is stored (token_store=%s); run `smarthomefs login "
			    "%s`.",
			    a->account, token_store_name(a->store.kind), a->account);
		return r;
	}
	if (r < 0 && r != -EBADMSG) {
		g_propagate_prefixed_error(err, g_steal_pointer(&e),
					   "Could not read the login of %s: ", a->account);
		return r;
	}
	if (r == 0 && g_strcmp0(ts.provider, a->provider->name) != 0)
		r = -EINVAL;
	if (r < 0) {
		token_set_clear(&ts);
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
			    "The stored login of %s is damaged or not for %s; run `smarthomefs "
			    "login %s`.",
			    a->account, a->provider->title, a->account);
		return -EINVAL;
	}
	g_mutex_lock(&a->mu);
	auth_publish_locked(a, &ts);
	a->last_result = 0;
	a->retry_not_before_us = 0;
	a->save_pending = false;
	g_mutex_unlock(&a->mu);
	return 0;
}

/* How long before its expiry @ts is refreshed, in microseconds. The margin only has
 * to cover a request in flight: the expiry is counted on our own clock from the token
 * answer, so clock skew does not enter it, and a token that dies in flight anyway
 * costs a 401, one refresh and one retry. 60 s is plenty for tado's 10 min and
 * Tibber's 1 h tokens, but for a token issued for a few seconds (a test cloud, some
 * clouds) it would mean a refresh before every request. So the margin is a tenth of
 * the lifetime as issued, at most 60 s: a token is used for 90 % of its life. Half
 * would double the refreshes, and every refresh spends a single-use refresh token,
 * whose lost answer logs the user out. A set saved without its issue time keeps the
 * full 60 s. */
static gint64 refresh_margin_us(const struct token_set *ts)
{
	if (ts->issued_at_s <= 0 || ts->expires_at_s <= ts->issued_at_s)
		return EXPIRY_MARGIN_S * G_USEC_PER_SEC;
	gint64 lifetime_us = (ts->expires_at_s - ts->issued_at_s) * G_USEC_PER_SEC;
	return MIN(EXPIRY_MARGIN_S * G_USEC_PER_SEC, lifetime_us / 10);
}

/* Whether @ts's access token is still good for @margin_us more microseconds. */
static bool token_fresh(const struct token_set *ts, gint64 margin_us)
{
	if (ts->expires_at_s == 0) /* unknown: trust it until the API says 401 */
		return true;
	return g_get_real_time() < ts->expires_at_s * G_USEC_PER_SEC - margin_us;
}

static bool token_usable_locked(const struct auth *a, gint64 margin_us)
{
	if (!a->ts.access_token || a->rejected)
		return false;
	return token_fresh(&a->ts, margin_us);
}

int auth_lock_account(const char *lock_dir, const char *account, gint64 wait_us, GError **err)
{
	/* Another user's directory or lock file would let them hold the lock for ever. */
	int r = trust_private_dir(lock_dir, err);
	if (r < 0)
		return r;
	g_autofree char *name = g_strconcat(account, ".lock", NULL);
	if (strchr(name, '/') || name[0] == '.')
		return -EINVAL;
	g_autofree char *path = g_build_filename(lock_dir, name, NULL);
	int fd = trust_open_private(path, O_RDWR | O_CREAT, 0600, err);
	if (fd < 0)
		return fd;
	gint64 give_up = g_get_monotonic_time() + wait_us;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			r = -errno;
			close(fd);
			return r;
		}
		if (g_get_monotonic_time() >= give_up) {
			close(fd);
			return -ETIMEDOUT;
		}
		g_usleep(LOCK_POLL_US);
	}
	return fd;
}

/* Takes the account's lock file. Bounded: a wedged process must not hang a FUSE worker
 * for ever. Returns the fd or -errno. */
static int auth_lock_file(struct auth *a, GError **err)
{
	return auth_lock_account(a->lock_dir, a->account,
				 MIN(LOCK_WAIT_US, http_client_timeout_us(a->http)), err);
}

static int auth_save(struct auth *a, const struct token_set *ts)
{
	g_autoptr(GError) e = NULL;
	int r = token_set_save(&a->store, a->account, ts, &e);
	if (r < 0)
		/* Loud: the old refresh token is spent, so if this process ends before a
		 * later save works, the user has to log in again. */
		log_error("Could not save the refreshed tokens of %s (%s); they are used from "
			  "memory and saving is tried again at the next refresh.",
			  a->account, e ? e->message : g_strerror(-r));
	return r;
}

/* Whether the store still holds the login whose refresh token is @refresh_token, read
 * under the account's lock just before a refreshed set replaces it: 0 it does (or the
 * store cannot say: then the save is tried as before), -ENOENT the login was removed
 * (`smarthomefs logout`: writing now would undo it), 1 it holds another login, put in
 * @other (the user logged in again, or a process refreshed without the lock). */
static int auth_store_holds(struct auth *a, const char *refresh_token, struct token_set *other)
{
	g_autoptr(GError) e = NULL;
	struct token_set stored = {0};
	int r = token_set_load(&a->store, a->account, &stored, &e);

	if (r == -ENOENT)
		return r;
	if (r < 0 || !stored.refresh_token || g_strcmp0(stored.refresh_token, refresh_token) == 0) {
		token_set_clear(&stored);
		return 0;
	}
	*other = stored;
	return 1;
}

static void log_removed_during_refresh(struct auth *a)
{
	log_error("The login of %s was removed from the %s store while a refresh of its tokens "
		  "was under way; the new tokens are dropped unused. Run `smarthomefs login %s` "
		  "to use it again.",
		  a->account, token_store_name(a->store.kind), a->account);
}

struct refresh_outcome {
	bool refreshed; /* the token endpoint issued a new set */
	bool saved;	/* the store holds what memory will */
	bool refused;	/* the token endpoint refused the refresh token */
};

/* The refresh itself, run by one thread with no mutex held. @snap is the published set
 * when the refresh started; @refused: its refresh token was refused before. Fills
 * @fresh with any set newer than @snap — refreshed here, or adopted from the store —
 * even when it then fails. */
static int auth_refresh_run(struct auth *a, const struct token_set *snap, bool save_pending,
			    bool force, bool refused, struct token_set *fresh,
			    struct refresh_outcome *out)
{
	*out = (struct refresh_outcome){.saved = !save_pending, .refused = refused};
	g_autoptr(GError) lock_err = NULL;
	int lock_fd = auth_lock_file(a, &lock_err);
	if (lock_fd == -ETIMEDOUT) {
		/* Another process is refreshing this account right now: refreshing beside it
		 * would spend the same single-use refresh token. */
		log_warn("Another process holds the refresh lock of %s; trying again later.",
			 a->account);
		return -EAGAIN;
	}
	if (lock_fd < 0) {
		log_warn("Could not take the refresh lock of %s in %s: %s; refreshing without it.",
			 a->account, a->lock_dir,
			 lock_err ? lock_err->message : g_strerror(-lock_fd));
	}

	struct token_set work = {0};
	bool adopted = false;
	g_autoptr(GError) e = NULL;
	struct token_set stored = {0};
	int lr = token_set_load(&a->store, a->account, &stored, &e);
	if (lr == -ENOENT) {
		if (save_pending) {
			/* Saving what memory holds would log the user back in. */
			log_removed_during_refresh(a);
			out->saved = true; /* nothing is owed to a store the user emptied */
		} else {
			log_error("The login of %s was removed from the %s store; run `smarthomefs "
				  "login %s` to use it again.",
				  a->account, token_store_name(a->store.kind), a->account);
		}
		if (lock_fd >= 0)
			close(lock_fd);
		return -EACCES;
	}
	if (save_pending) {
		/* The store is older than memory: what it holds was spent by us. */
		token_set_clear(&stored);
		out->saved = auth_save(a, snap) == 0;
	} else {
		if (lr < 0)
			log_warn("Could not re-read the login of %s (%s); refreshing with the "
				 "tokens in memory.",
				 a->account, e ? e->message : g_strerror(-lr));
		if (lr == 0 && stored.refresh_token &&
		    g_strcmp0(stored.refresh_token, snap->refresh_token) != 0) {
			/* Another process refreshed (or the user logged in again): our
			 * refresh token is spent or replaced. Take theirs. */
			adopted = true;
			out->refused = false;
			work = stored;
			stored = (struct token_set){0};
		}
		token_set_clear(&stored);
	}
	if (!adopted)
		token_set_copy(&work, snap);

	bool adopted_fresh = adopted && work.access_token &&
			     g_strcmp0(work.access_token, snap->access_token) != 0 &&
			     token_fresh(&work, refresh_margin_us(&work));
	int r = 0;
	if (refused && !adopted) {
		/* Said once already; sending a refused refresh token again cannot help, a new
		 * login in the store can. */
		r = -EACCES;
	} else if (!adopted_fresh || force) {
		g_autofree char *error = NULL;
		g_auto(secret_str) from = g_strdup(work.refresh_token);
		r = token_refresh(a->http, a->provider, a->auth_url, &work, &error);
		struct token_set other = {0};
		int held = r == 0 ? auth_store_holds(a, from, &other) : 0;
		if (r == 0) {
			out->refreshed = true;
			out->refused = false;
		}
		if (held == -ENOENT) {
			/* Logged out while the request was in flight: the new set is neither
			 * stored nor used. */
			log_removed_during_refresh(a);
			token_set_clear(&work);
			adopted = false;
			out->saved = true;
			r = -EACCES;
		} else if (held == 1) {
			/* Never overwrite a login made since; it is used instead. */
			log_info("The login of %s changed in the store while its tokens were "
				 "being refreshed; the stored one is used.",
				 a->account);
			token_set_clear(&work);
			work = other;
			adopted = true;
			out->saved = true;
		} else if (r == 0) {
			out->saved = auth_save(a, &work) == 0;
		} else if (r == -EACCES) {
			out->refused = true;
			log_error("The login of %s has expired: the login server refused its "
				  "refresh token (%s). Run `smarthomefs login %s` to log in again.",
				  a->account, error ? error : "no reason given", a->account);
		} else {
			log_warn("Could not refresh the tokens of %s: %s%s%s; they are kept and "
				 "tried again later.",
				 a->account,
				 r == -EAGAIN
				     ? "the login server is busy or failing (HTTP 429 or 5xx)"
				     : g_strerror(-r),
				 error ? ", " : "", error ? error : "");
		}
	}
	if (lock_fd >= 0)
		close(lock_fd); /* releases the flock */

	if (r == 0 || adopted)
		*fresh = work;
	else
		token_set_clear(&work);
	return r;
}

/* Hands out a usable access token, refreshing first when needed (or in any case when
 * @force). @token may be NULL. */
static int auth_get(struct auth *a, bool force, char **token)
{
	g_mutex_lock(&a->mu);
	int r;
	for (;;) {
		if (a->forgotten || (!a->ts.access_token && !a->ts.refresh_token)) {
			r = -EACCES;
			break;
		}
		if (!force && token_usable_locked(a, refresh_margin_us(&a->ts))) {
			r = 0;
			break;
		}
		if (a->refreshing) {
			guint64 gen = a->generation;
			/* A FUSE worker must never wait longer than a read may take: a
			 * refresh stuck on the keyring or the network would otherwise
			 * stall every worker of the mount. */
			gint64 give_up = g_get_monotonic_time() + http_client_timeout_us(a->http);
			bool timed_out = false;
			while (a->refreshing && !timed_out)
				timed_out = !g_cond_wait_until(&a->refreshed, &a->mu, give_up);
			if (a->refreshing) {
				r = -ETIMEDOUT;
				break;
			}
			if (a->generation == gen)
				continue;
			/* That refresh was made for us too: share its outcome rather
			 * than send another request right behind it. */
			r = a->last_result;
			break;
		}
		if (!force && g_get_monotonic_time() < a->retry_not_before_us) {
			r = a->last_result < 0 ? a->last_result : -EAGAIN;
			break;
		}

		a->refreshing = true;
		struct token_set snap = {0};
		token_set_copy(&snap, &a->ts);
		bool save_pending = a->save_pending;
		bool refused = a->refused;
		g_mutex_unlock(&a->mu);

		struct token_set fresh = {0};
		struct refresh_outcome out;
		r = auth_refresh_run(a, &snap, save_pending, force, refused, &fresh, &out);
		token_set_clear(&snap);

		g_mutex_lock(&a->mu);
		if (!a->forgotten && (fresh.access_token || fresh.refresh_token))
			auth_publish_locked(a, &fresh);
		token_set_clear(&fresh);
		if (out.refreshed)
			a->refresh_count++;
		a->save_pending = !out.saved;
		a->refused = out.refused;
		a->refreshing = false;
		a->generation++;
		a->last_result = r;
		a->retry_not_before_us =
		    r == 0 ? 0
			   : g_get_monotonic_time() +
				 (r == -EACCES ? HOLDOFF_REFUSED_US : HOLDOFF_TRANSIENT_US);
		g_cond_broadcast(&a->refreshed);
		break;
	}
	/* A refresh before the expiry margin failed, but the token itself still works:
	 * use it rather than turn a cloud hiccup into a failed read. */
	if (r < 0 && r != -EACCES && !force && token_usable_locked(a, 0))
		r = 0;
	if (r == 0 && (a->forgotten || !a->ts.access_token))
		r = -EACCES;
	if (r == 0 && token)
		*token = g_strdup(a->ts.access_token);
	g_mutex_unlock(&a->mu);
	return r;
}

int auth_bearer(struct auth *a, char **token)
{
	*token = NULL;
	return auth_get(a, false, token);
}

void auth_rejected(struct auth *a, const char *token)
{
	g_mutex_lock(&a->mu);
	/* Only the token that was refused: a thread that got an older one must not undo
	 * a refresh another thread has made since. */
	if (token && a->ts.access_token && strcmp(token, a->ts.access_token) == 0) {
		a->rejected = true;
		a->retry_not_before_us = 0;
	}
	g_mutex_unlock(&a->mu);
}

void auth_forget(struct auth *a)
{
	g_mutex_lock(&a->mu);
	/* A refresh in flight publishes nothing once this is set. */
	a->forgotten = true;
	token_set_clear(&a->ts);
	a->rejected = false;
	a->save_pending = false;
	g_mutex_unlock(&a->mu);
}

gint64 auth_expires_at_s(struct auth *a)
{
	g_mutex_lock(&a->mu);
	gint64 t = a->ts.expires_at_s;
	g_mutex_unlock(&a->mu);
	return t;
}

unsigned auth_refresh_count(struct auth *a)
{
	g_mutex_lock(&a->mu);
	unsigned n = a->refresh_count;
	g_mutex_unlock(&a->mu);
	return n;
}

gint64 auth_login_expires_at_s(struct auth *a)
{
	g_mutex_lock(&a->mu);
	gint64 t = token_set_login_expires_at_s(&a->ts, a->provider);
	g_mutex_unlock(&a->mu);
	return t;
}

int auth_refresh_now(struct auth *a, GError **err)
{
	int r = auth_get(a, true, NULL);
	if (r == -EACCES)
		g_set_error(err, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
			    "The login of %s is no longer valid; run `smarthomefs login %s`.",
			    a->account, a->account);
	else if (r < 0)
		g_set_error(err, G_IO_ERROR, g_io_error_from_errno(-r),
			    "Could not refresh the tokens of %s: %s; they were kept, try again "
			    "later.",
			    a->account, g_strerror(-r));
	return r;
}
