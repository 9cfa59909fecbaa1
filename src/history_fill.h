/* history_fill: where a cloud's quota is scarce (tado: 100 calls a day), its history is
 * brought into the cache in the background, and a history directory lists only what the
 * cache holds (fs_core), so that a walk of it reads every file it lists without a call
 * and a find never spends the day's quota in one go.
 *
 * One thread walks each account's tree as far as the cache holds its listings (homes,
 * zones: it starts once the mount has been looked at, whose answers also tell the
 * budget), lists each history directory (fetching what it is listed from and the
 * contexts that say which resource a path is: tado's zone list and home) as the provider
 * does from the clock and history_days=, and fetches the periods the cache does not
 * hold, the newest first, one call at a time, only while session_background_allows says
 * so (history_budget= percent of the quota, never the user's reads' share). A finished
 * period is fetched once and kept for good (pinned); the current one once, then read
 * again by the user's reads under the normal TTL, and once more when it has ended (its
 * final copy, session_get_latest): until then it stays listed and is read from the copy
 * it had (session_holds). A period the cloud refuses (a day
 * before the zone existed) is not asked again that day. Nothing here names a cloud.
 *
 * Thread-safe: the fill's own lock guards its stop flag and is held across no call; what
 * it knows of each account is its thread's own. */
#pragma once

#include "accounts.h"

struct history_fill;

/* Starts filling the history of @accounts' sessions (not owned) whose quota is scarce:
 * NULL when there is nothing to fill (a mount of one account whose quota is not scarce,
 * history_days=0, history_budget=0, offline). In a mount of all accounts, each account's
 * own options say whether it is filled, and a home two accounts share is filled by the
 * one that serves it. Call after the fork. */
struct history_fill *history_fill_start(struct accounts *accounts);
/* Stops the thread (a call in flight ends within the timeout) and frees. NULL is fine. */
void history_fill_stop(struct history_fill *fill);
