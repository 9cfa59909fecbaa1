/* What GLib's synchronisation means, told to ThreadSanitizer, and the one ignore that
 * libfuse's cancel of a worker leaves on (at the end); linked only into the
 * -Dsanitize=thread build (meson.build), which wraps the GLib functions below with
 * `ld --wrap`, so every call from our code goes through here first.
 *
 * Why: on Linux GMutex and GCond are an atomic word and the futex system call inside
 * libglib, which is not instrumented, so TSan sees no lock at all and every access they
 * guard would look like a race; GAsyncQueue and GThreadPool hand items from thread to
 * thread behind those same futexes. (GRecMutex, GRWLock, GThread and libcurl's share
 * locks are pthread calls, which TSan intercepts by itself.) Rather than make TSan
 * quiet, these wrappers tell it the truth:
 *   - a GMutex is a mutex (__tsan_mutex_* annotations: lock sets, lock-order
 *     inversions and double unlocks are reported as for a pthread mutex);
 *   - g_cond_wait releases and re-takes its mutex;
 *   - an item pushed on a GAsyncQueue or a GThreadPool happens before its pop, before
 *     the pool's function and free function run on it, and before a sort function
 *     compares it (__tsan_release / __tsan_acquire on the item's address);
 *   - a pool's jobs happen before g_thread_pool_free(…, wait_ = TRUE) returns.
 * Only our calls are wrapped. GLib's own hand-offs (GDBus's worker thread under
 * libsecret, GBytes' atomic reference count) stay inside uninstrumented libraries, so
 * TSan is told to check only the accesses our code makes (ignore_noninstrumented_modules
 * below): a library's malloc, memcpy or free counts as no access of ours, while its
 * pthread locks still order our threads. */
#include <dlfcn.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fuse_lowlevel.h>

/* The ld --wrap pairs: __real_X is GLib's X, __wrap_X is what our code calls. Declared
 * here because nothing else includes them (-Wmissing-prototypes). */
#define WRAP(ret, name, ...)                                                                       \
	ret __real_##name(__VA_ARGS__);                                                            \
	ret __wrap_##name(__VA_ARGS__)

WRAP(void, g_mutex_init, GMutex *m);
WRAP(void, g_mutex_clear, GMutex *m);
WRAP(void, g_mutex_lock, GMutex *m);
WRAP(void, g_mutex_unlock, GMutex *m);
WRAP(gboolean, g_mutex_trylock, GMutex *m);
WRAP(void, g_cond_wait, GCond *c, GMutex *m);
WRAP(gboolean, g_cond_wait_until, GCond *c, GMutex *m, gint64 end_time);
WRAP(void, g_async_queue_push, GAsyncQueue *q, gpointer item);
WRAP(void, g_async_queue_push_front, GAsyncQueue *q, gpointer item);
WRAP(void, g_async_queue_push_sorted, GAsyncQueue *q, gpointer item, GCompareDataFunc f,
     gpointer d);
WRAP(gpointer, g_async_queue_pop, GAsyncQueue *q);
WRAP(gpointer, g_async_queue_try_pop, GAsyncQueue *q);
WRAP(gpointer, g_async_queue_timeout_pop, GAsyncQueue *q, guint64 timeout);
WRAP(GThreadPool *, g_thread_pool_new, GFunc func, gpointer data, gint max, gboolean excl,
     GError **error);
WRAP(GThreadPool *, g_thread_pool_new_full, GFunc func, gpointer data, GDestroyNotify item_free,
     gint max, gboolean excl, GError **error);
WRAP(gboolean, g_thread_pool_push, GThreadPool *pool, gpointer item, GError **error);
WRAP(void, g_thread_pool_set_sort_function, GThreadPool *pool, GCompareDataFunc f, gpointer d);
WRAP(void, g_thread_pool_free, GThreadPool *pool, gboolean immediate, gboolean wait_);

/* GMutex: zeroed memory is an unlocked mutex, so it may be used without g_mutex_init
 * (static ones are); TSan then learns of it at the first lock. */
void __wrap_g_mutex_init(GMutex *m)
{
	__real_g_mutex_init(m);
	__tsan_mutex_create(m, 0);
}

void __wrap_g_mutex_clear(GMutex *m)
{
	__tsan_mutex_destroy(m, 0);
	__real_g_mutex_clear(m);
}

void __wrap_g_mutex_lock(GMutex *m)
{
	__tsan_mutex_pre_lock(m, 0);
	__real_g_mutex_lock(m);
	__tsan_mutex_post_lock(m, 0, 0);
}

gboolean __wrap_g_mutex_trylock(GMutex *m)
{
	__tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
	gboolean ok = __real_g_mutex_trylock(m);
	__tsan_mutex_post_lock(m, ok ? __tsan_mutex_try_lock : __tsan_mutex_try_lock_failed, 0);
	return ok;
}

void __wrap_g_mutex_unlock(GMutex *m)
{
	__tsan_mutex_pre_unlock(m, 0);
	__real_g_mutex_unlock(m);
	__tsan_mutex_post_unlock(m, 0);
}

/* A wait gives the mutex up and takes it again before it returns; the waker's changes
 * are seen through the mutex, which it held (or it raced, which TSan then reports). */
void __wrap_g_cond_wait(GCond *c, GMutex *m)
{
	__tsan_mutex_pre_unlock(m, 0);
	__tsan_mutex_post_unlock(m, 0);
	__real_g_cond_wait(c, m);
	__tsan_mutex_pre_lock(m, 0);
	__tsan_mutex_post_lock(m, 0, 0);
}

gboolean __wrap_g_cond_wait_until(GCond *c, GMutex *m, gint64 end_time)
{
	__tsan_mutex_pre_unlock(m, 0);
	__tsan_mutex_post_unlock(m, 0);
	gboolean woken = __real_g_cond_wait_until(c, m, end_time);
	__tsan_mutex_pre_lock(m, 0);
	__tsan_mutex_post_lock(m, 0, 0);
	return woken;
}

/* GAsyncQueue: the pusher's writes to an item happen before whoever pops it reads it. */
void __wrap_g_async_queue_push(GAsyncQueue *q, gpointer item)
{
	__tsan_release(item);
	__real_g_async_queue_push(q, item);
}

void __wrap_g_async_queue_push_front(GAsyncQueue *q, gpointer item)
{
	__tsan_release(item);
	__real_g_async_queue_push_front(q, item);
}

void __wrap_g_async_queue_push_sorted(GAsyncQueue *q, gpointer item, GCompareDataFunc f, gpointer d)
{
	__tsan_release(item);
	__real_g_async_queue_push_sorted(q, item, f, d);
}

static gpointer popped(gpointer item)
{
	if (item)
		__tsan_acquire(item);
	return item;
}

gpointer __wrap_g_async_queue_pop(GAsyncQueue *q)
{
	return popped(__real_g_async_queue_pop(q));
}

gpointer __wrap_g_async_queue_try_pop(GAsyncQueue *q)
{
	return popped(__real_g_async_queue_try_pop(q));
}

gpointer __wrap_g_async_queue_timeout_pop(GAsyncQueue *q, guint64 timeout)
{
	return popped(__real_g_async_queue_timeout_pop(q, timeout));
}

/* GThreadPool: the pool is made with trampolines that acquire the item first, and the
 * caller's functions and data kept beside them; g_thread_pool_free frees that. */
struct pool_calls {
	GFunc func;
	gpointer data;
	GDestroyNotify item_free;
	GCompareDataFunc cmp;
	gpointer cmp_data;
	int slot; /* in freeing[], or -1 */
};

static void pool_run(gpointer item, gpointer data)
{
	struct pool_calls *calls = data;

	__tsan_acquire(item);
	calls->func(item, calls->data);
	/* The job's work happens before g_thread_pool_free(…, TRUE) returns. */
	__tsan_release(calls);
}

/* GLib's item free function has no data of its own: a few trampolines, one a slot, each
 * finding its pool's calls in its slot (a mount makes two pools with one). */
#define POOL_SLOTS 4
static struct pool_calls *freeing[POOL_SLOTS];

#define POOL_ITEM_FREE(i)                                                                          \
	static void pool_item_free_##i(gpointer item)                                              \
	{                                                                                          \
		__tsan_acquire(item);                                                              \
		__atomic_load_n(&freeing[i], __ATOMIC_ACQUIRE)->item_free(item);                   \
	}
POOL_ITEM_FREE(0)
POOL_ITEM_FREE(1)
POOL_ITEM_FREE(2)
POOL_ITEM_FREE(3)
static const GDestroyNotify pool_item_frees[POOL_SLOTS] = {pool_item_free_0, pool_item_free_1,
							   pool_item_free_2, pool_item_free_3};

/* Takes a free slot for @calls; -1 when none is left (a build-time limit: g_error). */
static int slot_take(struct pool_calls *calls)
{
	for (int i = 0; i < POOL_SLOTS; i++) {
		struct pool_calls *none = NULL;
		if (__atomic_compare_exchange_n(&freeing[i], &none, calls, FALSE, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return i;
	}
	g_error("tsan_glib: more than %d thread pools with an item free function", POOL_SLOTS);
}

static void slot_give_back(struct pool_calls *calls)
{
	if (calls->slot >= 0)
		__atomic_store_n(&freeing[calls->slot], NULL, __ATOMIC_RELEASE);
}

static gint pool_cmp(gconstpointer a, gconstpointer b, gpointer data)
{
	struct pool_calls *calls = data;

	__tsan_acquire((gpointer)a);
	__tsan_acquire((gpointer)b);
	return calls->cmp(a, b, calls->cmp_data);
}

GThreadPool *__wrap_g_thread_pool_new_full(GFunc func, gpointer data, GDestroyNotify item_free,
					   gint max, gboolean excl, GError **error)
{
	struct pool_calls *calls = g_new0(struct pool_calls, 1);

	calls->func = func;
	calls->data = data;
	calls->item_free = item_free;
	calls->slot = item_free ? slot_take(calls) : -1;
	GThreadPool *pool = __real_g_thread_pool_new_full(
	    pool_run, calls, item_free ? pool_item_frees[calls->slot] : NULL, max, excl, error);
	if (!pool) {
		slot_give_back(calls);
		g_free(calls);
	}
	return pool;
}

GThreadPool *__wrap_g_thread_pool_new(GFunc func, gpointer data, gint max, gboolean excl,
				      GError **error)
{
	return __wrap_g_thread_pool_new_full(func, data, NULL, max, excl, error);
}

gboolean __wrap_g_thread_pool_push(GThreadPool *pool, gpointer item, GError **error)
{
	__tsan_release(item);
	return __real_g_thread_pool_push(pool, item, error);
}

void __wrap_g_thread_pool_set_sort_function(GThreadPool *pool, GCompareDataFunc f, gpointer d)
{
	struct pool_calls *calls = pool->user_data;

	calls->cmp = f;
	calls->cmp_data = d;
	__real_g_thread_pool_set_sort_function(pool, f ? pool_cmp : NULL, calls);
}

void __wrap_g_thread_pool_free(GThreadPool *pool, gboolean immediate, gboolean wait_)
{
	struct pool_calls *calls = pool->user_data;

	__real_g_thread_pool_free(pool, immediate, wait_);
	if (!wait_)
		return; /* jobs may still run: their calls stay (a small leak, TSan builds only) */
	__tsan_acquire(calls);
	slot_give_back(calls);
	g_free(calls);
}

/* libfuse's workers, cancelled. When the FUSE loop ends, fuse_session_loop_mt cancels
 * the workers still waiting for a request (pthread_cancel), and a worker accepts the
 * cancel only in read(2) on /dev/fuse (fuse_do_work enables it around
 * fuse_session_receive_buf_int alone). That read is called from libfuse, so TSan's read
 * interceptor began an ignore (ignore_noninstrumented_modules below) that its return
 * would have ended; the cancel unwinds past it, and TSan, seeing the thread finish with
 * the ignore still on, reports "finished with ignores enabled" and ends the process on
 * the spot: before fs_stop, so a remount lost its saved mtimes (test_remount) and the
 * daemon's last steps went unchecked. The threads libfuse starts therefore run under a
 * cancellation cleanup handler that ends that one ignore; a normal return ends nothing.
 * Defining pthread_create here puts it before libtsan's interceptor for every library
 * (the executable comes first in symbol lookup); the call goes on to that interceptor. */
struct thread_start {
	void *(*start)(void *);
	void *arg;
};

void __tsan_ignore_thread_end(void);

static void cancelled_in_read(void *unused)
{
	__tsan_ignore_thread_end();
}

static void *fuse_worker_start(void *p)
{
	struct thread_start ts = *(struct thread_start *)p;
	void *ret;

	free(p);
	pthread_cleanup_push(cancelled_in_read, NULL);
	ret = ts.start(ts.arg);
	pthread_cleanup_pop(0);
	return ret;
}

/* Whether @pc is in libfuse's code. */
static bool in_libfuse(void *pc)
{
	Dl_info fuse, caller;

	return dladdr((void *)fuse_session_exited, &fuse) && dladdr(pc, &caller) &&
	       fuse.dli_fbase == caller.dli_fbase;
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
		   void *arg)
{
	typedef int create_fn(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	static create_fn *next_create;
	create_fn *next = __atomic_load_n(&next_create, __ATOMIC_ACQUIRE);

	if (!next) {
		*(void **)&next = dlsym(RTLD_NEXT, "pthread_create");
		__atomic_store_n(&next_create, next, __ATOMIC_RELEASE);
	}
	if (!in_libfuse(__builtin_return_address(0)))
		return next(thread, attr, start, arg);
	struct thread_start *ts = malloc(sizeof(*ts));
	if (!ts)
		return EAGAIN;
	*ts = (struct thread_start){start, arg};
	int r = next(thread, attr, fuse_worker_start, ts);
	if (r != 0)
		free(ts);
	return r;
}

/* The options of every run of this build (TSAN_OPTIONS adds to them or overrides them):
 * the checks above, the third-party suppressions (TSAN_SUPPRESSIONS, set by meson.build:
 * each says why) and both stacks of a lock-order inversion. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "ignore_noninstrumented_modules=1:second_deadlock_stack=1:"
	       "suppressions=" TSAN_SUPPRESSIONS;
}

/* GLib 2.74 cuts small objects (GString, GHashTable, GPtrArray) out of pages of its own
 * (GSlice) and hands a freed one to the next thread that wants that size through
 * futex-guarded magazines, which TSan cannot see: a GString freed by one thread and
 * reused by another would look like a race. G_SLICE=always-malloc makes each of them a
 * malloc and a free, which TSan follows. GLib reads it in its own constructors, before
 * any of ours, and libc builds the environment anew from the stack after .preinit_array
 * functions run, so a setenv() there is lost: the process executes itself again with
 * the variable, from .preinit_array, before any library's constructor or thread. */
static void slice_is_malloc(int argc, char **argv, char **envp)
{
	static const char want[] = "G_SLICE=always-malloc";
	size_t n = 0;

	for (; envp[n]; n++)
		if (strcmp(envp[n], want) == 0)
			return;
	char *env[n + 2];
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], "G_SLICE=", 8) != 0)
			env[k++] = envp[i];
	env[k++] = (char *)want;
	env[k] = NULL;
	execve("/proc/self/exe", argv, env);
	/* No /proc: run on; TSan may then report GSlice's reuse as races. */
}
__attribute__((section(".preinit_array"),
	       used)) static void (*const preinit_slice)(int, char **, char **) = slice_is_malloc;
