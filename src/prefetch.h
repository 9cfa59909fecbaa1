/* prefetch: warms the cache ahead of the reader. When a listing is fetched anew, the
 * resources its entries are made of are fetched in parallel (a pool of at most
 * options.prefetch threads), because ls -l, find and tar stat every entry next. During
 * a walk, the next directory's listing and entries too, behind the current one's (the
 * walk look-ahead). Never for a provider whose quota is scarce. Errors are left for the
 * reader to see, later. The provider says which resources, through source() and list();
 * nothing here knows a cloud.
 *
 * Thread-safe. Lock order: the prefetch lock is a leaf (taken around its table and the
 * pool pointer only; fetches run with no lock held). */
#pragma once

#include "fs_core.h"

struct prefetch;

/* Prefetch for @core (not owned); no thread runs before prefetch_start. */
struct prefetch *prefetch_new(struct fs_core *core);
/* Ends the pool (prefetch_stop) and frees. */
void prefetch_free(struct prefetch *pf);
/* Starts the pool, unless options.prefetch is 0 or the quota is scarce. Call after
 * libfuse's fork. */
void prefetch_start(struct prefetch *pf);
/* Ends the pool: queued jobs are dropped, running ones end within the HTTP timeout and
 * queue nothing more. Harmless when not started or called again. */
void prefetch_stop(struct prefetch *pf);
/* Prefetches for directory @dir's listing (resource @res), once per generation of it: a
 * lookup syncs a directory too, but only a listing says that all entries are about to
 * be read. */
void prefetch_listing(struct prefetch *pf, struct node *dir, const struct resource *res);
